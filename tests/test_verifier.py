from collections.abc import Callable

import numpy as np
import pytest

import graphopt as go
from graphopt.ir.node import Node
from tests.helpers import conv_relu_graph


def unknown_op(g: go.Graph) -> None:
    x = g.inputs[0]
    g.insert(Node("frobnicate", [x], {}, [x.type], loc="blk.frob"))


def wrong_arity(g: go.Graph) -> None:
    x = g.inputs[0]
    g.insert(Node("add", [x], {}, [x.type]))


def wrong_attribute_type(g: go.Graph) -> None:
    g.nodes[1].attrs["extra"] = 3


def wrong_result_type(g: go.Graph) -> None:
    g.nodes[1].results[0].type = go.TensorType("float32", ["N", 4, 9, 9])


def missing_use(g: go.Graph) -> None:
    conv = g.nodes[0].result
    conv._uses = [u for u in conv._uses if u.node.op != "relu"]


def stale_use(g: go.Graph) -> None:
    g.nodes[0].result._add_use(g.nodes[3], 7)


def wrong_order(g: go.Graph) -> None:
    g.move_before(g.nodes[1], g.nodes[0])


def operand_from_another_graph(g: go.Graph) -> None:
    other = conv_relu_graph()
    g.nodes[3].set_operand(0, other.nodes[1].result)


def op_verify_hook(g: go.Graph) -> None:
    i = g.add_parameter(np.arange(4, dtype=np.int64), "i")
    g.create("div", [i, i], loc="int_div")


def output_from_nowhere(g: go.Graph) -> None:
    stray = go.Graph()
    g.outputs = [*g.outputs, stray.add_input(go.TensorType("float32", [1]), "stray")]


def data_of_wrong_type(g: go.Graph) -> None:
    p = g.parameters[1]
    p._data = np.zeros(5, np.float32)


CASES: list[tuple[Callable[[go.Graph], None], str]] = [
    (unknown_op, "unknown op 'frobnicate'"),
    (wrong_arity, "takes 2 operand\\(s\\), got 1"),
    (wrong_attribute_type, "relu at 'act': unknown attribute\\(s\\) extra"),
    (wrong_result_type, "result types float32\\[N, 4, 9, 9\\] differ from inferred float32\\[N, 4, 8, 8\\]"),
    (missing_use, "operand 0 %conv is missing this node from its use list"),
    (stale_use, "%conv lists a stale use as operand 7"),
    (wrong_order, "operand 0 %conv is not defined before its use \\(it comes from later in the graph\\)"),
    (operand_from_another_graph, "operand 0 %act is not defined before its use \\(it comes from another graph\\)"),
    (op_verify_hook, "div at 'int_div': integer div needs rounding_mode"),
    (output_from_nowhere, "graph output %stray is not defined"),
    (data_of_wrong_type, "parameter %conv.bias holds data of type float32\\[5\\], not float32\\[4\\]"),
]


@pytest.mark.parametrize(("breaker", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_verifier_names_each_kind_of_problem(breaker: Callable[[go.Graph], None], message: str) -> None:
    g = conv_relu_graph()
    go.verify(g)
    breaker(g)
    with pytest.raises(go.VerifyError, match=message) as info:
        go.verify(g)
    assert info.value.problems


def test_every_problem_is_listed_with_its_node_printed() -> None:
    g = conv_relu_graph()
    wrong_result_type(g)
    wrong_attribute_type(g)
    op_verify_hook(g)
    with pytest.raises(go.VerifyError) as info:
        go.verify(g)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert "in: %act: float32[N, 4, 9, 9] = relu(%conv)" in problems[0]
    assert "add at 'residual': shapes [N, 4, 9, 9] and [N, 4, 8, 8] do not broadcast" in problems[1]
    assert "div at 'int_div'" in problems[2]
    assert "3 problem(s)" in str(info.value)
