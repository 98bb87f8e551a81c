import numpy as np
import pytest
import torch

import graphopt as go
from graphopt.interp import Interpreter
from tests.helpers import conv_relu_graph, sample_input


def test_matches_torch_on_a_small_network_with_symbolic_batch() -> None:
    g = conv_relu_graph()
    for batch in (1, 3):
        (x,) = sample_input(g, batch=batch)
        w, b = (torch.from_numpy(np.array(p.data)) for p in g.parameters)
        conv = torch.nn.functional.conv2d(torch.from_numpy(x), w, b, padding=1)
        expected = (torch.relu(conv) + conv).numpy()
        np.testing.assert_allclose(go.interpret(g, x)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "takes 1 input\\(s\\), got 0"),
        ([np.zeros((2, 3, 8, 8), np.float64)], "input %x expects float32, got float64"),
        ([np.zeros((2, 3, 8), np.float32)], "expects rank 4"),
        ([np.zeros((2, 3, 8, 9), np.float32)], "input %x expects float32\\[N, 3, 8, 8\\], got \\[2, 3, 8, 9\\]"),
    ],
)
def test_bad_inputs_are_named(inputs: list[np.ndarray], message: str) -> None:
    with pytest.raises(go.InterpretError, match=message):
        go.interpret(conv_relu_graph(), *inputs)


def test_a_symbol_must_bind_consistently() -> None:
    g = go.Graph()
    a = g.add_input(go.TensorType("float32", ["N", 2]), "a")
    b = g.add_input(go.TensorType("float32", ["N", 2]), "b")
    g.outputs = [g.create("add", [a, b]).result]
    with pytest.raises(go.InterpretError, match="inputs disagree on N: %a has N = 3, %b has N = 4"):
        go.interpret(g, np.zeros((3, 2), np.float32), np.zeros((4, 2), np.float32))


def test_symbolic_attributes_are_bound_at_run_time() -> None:
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", ["B", 6]), "x")
    r = g.create("reshape", [x], {"shape": ["B", 2, 3]}).result
    f = g.create("full", [], {"shape": ["B", 1], "value": 2.0}).result
    g.outputs = [r, f]
    out = go.interpret(g, np.arange(24, dtype=np.float32).reshape(4, 6))
    assert out[0].shape == (4, 2, 3) and out[1].shape == (4, 1)


def test_run_node_is_the_extension_point() -> None:
    seen: list[str] = []

    class Recording(Interpreter):
        def run_node(self, node: go.Node, args: list[np.ndarray]) -> list[np.ndarray]:
            seen.append(node.op)
            return super().run_node(node, args)

    g = conv_relu_graph()
    Recording(g).run(*sample_input(g))
    assert seen == ["conv2d", "relu", "sigmoid", "add"]


def test_a_failing_reference_names_the_node() -> None:
    g = go.Graph()
    x = g.add_input(go.TensorType("int64", [3]), "x")
    w = g.add_parameter(np.zeros((4, 2), np.float32), "table")
    g.outputs = [g.create("embedding", [x, w], loc="embed").result]
    with pytest.raises(go.InterpretError, match="embedding at 'embed': reference failed: IndexError"):
        go.interpret(g, np.array([0, 1, 9]))
