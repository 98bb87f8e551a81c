from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

import graphopt as go
from graphopt.ir.printer import external_parameters
from graphopt.testing.strategies import graphs
from tests.helpers import conv_relu_graph, sample_input

EXPECTED = """\
graph main(%x: float32[N, 3, 8, 8]) {
  param %conv.weight: float32[4, 3, 3, 3] = npz("conv.weight")
  param %conv.bias: float32[4] = [0.12573022, -0.13210486, 0.64042264, 0.104900114]
  %conv: float32[N, 4, 8, 8] = conv2d(%x, %conv.weight, %conv.bias) {padding=[1, 1]} loc("conv")
  %act: float32[N, 4, 8, 8] = relu(%conv) loc("act")
  %gate: float32[N, 4, 8, 8] = sigmoid(%conv) loc("gate")
  %out: float32[N, 4, 8, 8] = add(%act, %conv) loc("residual")
  return %out
}
"""


def weights_of(g: go.Graph) -> dict[str, np.ndarray]:
    return {k: p.data for k, p in external_parameters(g) if p.data is not None}


def test_print_is_readable_and_stable() -> None:
    g = conv_relu_graph()
    g.parameters[1].data = np.random.default_rng(0).standard_normal(4).astype(np.float32)
    assert str(g) == EXPECTED


@given(graphs())
def test_print_parse_print_is_identity(g: go.Graph) -> None:
    text = str(g)
    parsed = go.parse(text, weights=weights_of(g))
    assert str(parsed) == text
    go.verify(parsed)
    for a, b in zip(g.parameters, parsed.parameters):
        np.testing.assert_array_equal(a.data, b.data)


def test_attribute_kinds_round_trip() -> None:
    text = """\
graph "odd name"(%"in put": float32[B, 5], %i: int64[B, 5]) {
  param %neg: float32[2] = [-inf, nan]
  %a: float32[B, 5] = clamp(%"in put") {min=-0.5} loc("a \\"quoted\\" loc")
  %b: float32[B, 10] = cat(%a, %a) {dim=-1}
  %c: int64[B, 5] = to(%a) {dtype=int64}
  %d: float32[B, 5] = gelu(%a) {approximate="tanh"}
  %e: float32[B, 1, 5] = reshape(%d) {shape=[B, 1, -1]}
  %s0: float32[B, 2], %s1: float32[B, 3] = split(%d) {split_sizes=[2, 3], dim=1}
  %m: bool[B, 5] = eq(%c, %i)
  return %b, %e, %s1, %m, %neg
}
"""
    g = go.parse(text)
    assert str(g) == text
    assert g.nodes[0].attrs == {"min": -0.5, "max": None} and g.nodes[0].loc == 'a "quoted" loc'
    assert g.nodes[2].attrs["dtype"] is go.DType.int64


def test_save_and_load_use_a_side_npz(tmp_path: Path) -> None:
    g = conv_relu_graph()
    path = go.save(g, tmp_path / "model.gir")
    assert go.ir.serialize.weights_path(path).exists() and 'npz("conv.weight")' in path.read_text()
    loaded = go.load(path)
    x = sample_input(g)
    np.testing.assert_array_equal(go.interpret(loaded, *x)[0], go.interpret(g, *x)[0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("graph g(%x: float32[2]) {\n  %y: float32[2] = relu(%z)\n  return %y\n}", "line 2, col 25: %z is used before"),
        ("graph g(%x: float32[2]) {\n  %y: float32[2] = frob(%x)\n  return %y\n}", "line 2, col 20: unknown op 'frob'"),
        ("graph g(%x: float32[2]) {\n  %y: float32[3] = relu(%x)\n  return %y\n}",
         "line 2, col 3: relu result types float32\\[3\\] differ from inferred float32\\[2\\]"),
        ("graph g(%x: float32[2]) {\n  %y: float32[2] = softmax(%x) {dim=1.5}\n  return %y\n}",
         "attribute 'dim' \\(int\\): expected an int"),
        ("graph g(%x: float32[2]) {\n  %x: float32[2] = relu(%x)\n  return %x\n}", "%x is defined twice"),
        ("graph g(%x: float32[2]) {\n  %y: float32[2] = relu(%x)\n", "expected 'return', found end of text"),
        ("graph g(%x: floaty[2]) {\n}", "unknown dtype 'floaty'"),
        ("graph g(%x: float32[2]) {\n  param %p: float32[3] = [1.0, 2.0]\n  return %x\n}", "data of %p does not fit"),
        ("graph g(%x: float32[2]) { return %x } trailing", "expected eof"),
        ("graph g(%x: float32[2]) { return %x ; }", "unexpected character ';'"),
    ],
)
def test_malformed_text_gives_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(go.ParseError, match=message):
        go.parse(text)


def test_missing_weight_is_named() -> None:
    text = 'graph g(%x: float32[20]) {\n  param %w: float32[20] = npz("w")\n  return %x\n}'
    with pytest.raises(go.ParseError, match="no array 'w' for parameter %w"):
        go.parse(text, weights={})
    g = go.parse(text)  # without weights the parameter is declared, and the interpreter says so
    with pytest.raises(go.InterpretError, match="parameter %w has no data"):
        go.interpret(g, np.zeros(20, np.float32))
