import numpy as np
import pytest

import graphopt as go
from tests.helpers import conv_relu_graph


def test_nodes_values_and_use_lists() -> None:
    g = conv_relu_graph()
    conv, act, gate, add = g.nodes
    assert [n.op for n in g] == ["conv2d", "relu", "sigmoid", "add"]
    assert conv.result.producer is conv and conv.result.index == 0
    assert g.inputs[0].producer is None and g.inputs[0].is_input
    assert g.parameters[0].is_parameter and g.parameters[0].data is not None
    assert [(u.node.op, u.index) for u in conv.result.uses] == [("relu", 0), ("sigmoid", 0), ("add", 1)]
    assert conv.result.users == [act, gate, add]
    assert add.result.is_graph_output and not gate.result.is_used


def test_set_operand_and_replace_all_uses_keep_use_lists_exact() -> None:
    g = conv_relu_graph()
    conv, act, gate, add = g.nodes
    add.set_operand(1, act.result)
    assert [u.node for u in act.result.uses] == [add, add]
    assert [u.node for u in conv.result.uses] == [act, gate]
    new = g.create("tanh", [conv.result], before=act).result
    act.result.replace_all_uses_with(new)
    assert not act.result.is_used and [u.index for u in new.uses] == [0, 1]
    add.result.replace_all_uses_with(new)
    assert g.outputs == [new] and new.is_graph_output and not add.result.is_graph_output
    go.verify(g)


def test_erase_refuses_a_used_node_and_unlinks_an_unused_one() -> None:
    g = conv_relu_graph()
    conv, _, gate, add = g.nodes
    with pytest.raises(go.IRError, match="used by relu at 'act'"):
        g.erase(conv)
    with pytest.raises(go.IRError, match="graph output"):
        g.erase(add)
    g.erase(gate)
    assert [n.op for n in g] == ["conv2d", "relu", "add"] and len(g) == 3
    assert gate.graph is None and len(conv.result.uses) == 2
    go.verify(g)


def test_erasing_the_current_node_while_iterating_is_safe() -> None:
    g = conv_relu_graph()
    for node in reversed(g):
        if not node.is_used:
            g.erase(node)
    assert [n.op for n in g] == ["conv2d", "relu", "add"]


def test_insert_before_keeps_order() -> None:
    g = conv_relu_graph()
    conv, act, _, _ = g.nodes
    n = g.create("neg", [conv.result], before=act)
    assert g.nodes[1] is n and n.prev is conv and n.next is act


def test_clone_is_independent_and_shares_readonly_data() -> None:
    g = conv_relu_graph()
    c = g.clone()
    assert str(c) == str(g)
    c.erase(c.nodes[2])
    c.nodes[0].attrs["groups"] = 2
    assert len(g) == 4 and len(c) == 3 and g.nodes[0].attrs["groups"] == 1
    assert c.parameters[0].data is not None and np.shares_memory(c.parameters[0].data, g.parameters[0].data)
    with pytest.raises(ValueError):
        c.parameters[0].data[0, 0, 0, 0] = 1.0  # read-only: passes replace data, never edit it


def test_parameter_data_must_fit_its_type() -> None:
    g = conv_relu_graph()
    with pytest.raises(go.IRError, match="does not fit parameter"):
        g.parameters[0].data = np.zeros((3, 3), np.float32)


def test_create_errors_name_the_op_and_location() -> None:
    g = conv_relu_graph()
    x = g.inputs[0]
    with pytest.raises(go.OpError, match=r"unknown op 'frobnicate' at 'layer1\.0'.*register_op"):
        g.create("frobnicate", [x], loc="layer1.0")
    with pytest.raises(go.OpError, match="softmax at 'head': attribute 'dim' \\(int\\): expected an int"):
        g.create("softmax", [x], {"dim": "1"}, loc="head")
    with pytest.raises(go.OpError, match="unknown attribute"):
        g.create("relu", [x], {"inplace": True})
    with pytest.raises(go.OpError, match="missing required attribute 'dim'"):
        g.create("softmax", [x])
    with pytest.raises(go.OpError, match="takes 2 operand"):
        g.create("add", [x])
    w = g.parameters[1]
    with pytest.raises(go.ShapeError, match=r"add at 'blk': shapes .* do not broadcast.*operands"):
        g.create("add", [x, g.create("reshape", [w], {"shape": [2, 2]}).result], loc="blk")
    with pytest.raises(go.ShapeError, match="dtypes float32 and int64 differ; insert a `to` node"):
        g.create("add", [x, g.add_parameter(np.int64(1))])
    assert len(g) == 5  # failed creates leave nothing behind but the reshape


def test_symbolic_dims_flow_through_shape_inference() -> None:
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", ["B", 4, 6]), "x")
    r = g.create("reshape", [x], {"shape": ["B", -1]}).result
    assert r.type == go.TensorType("float32", ["B", 24])
    f = g.create("flatten", [x], {"start_dim": 1}).result
    assert f.shape == ("B", 24)
    whole = g.create("reshape", [x], {"shape": [-1]}).result
    assert str(whole.type) == "float32[24*B]"
    with pytest.raises(go.ShapeError, match=r"the -1 would be 24\*B / 5"):
        g.create("reshape", [x], {"shape": [5, -1]})
    e = g.create("expand", [g.add_parameter(np.ones((1, 6), np.float32))], {"shape": ["B", -1]}).result
    assert e.shape == ("B", 6)


def test_registering_an_op_from_outside() -> None:
    name = "test_double_it"
    if name not in go.registered_ops():
        go.register_op(go.OpDef(name, lambda ts, a: ts[0], lambda x: x * 2))
    with pytest.raises(go.OpError, match="already registered"):
        go.register_op(go.OpDef(name, lambda ts, a: ts[0], lambda x: x * 2))
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", [3]), "x")
    g.outputs = [g.create(name, [x]).result]
    go.verify(g)
    np.testing.assert_array_equal(go.interpret(g, np.ones(3, np.float32))[0], [2, 2, 2])
