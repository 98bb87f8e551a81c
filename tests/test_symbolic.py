"""Symbolic dims: the canonical form agrees with plain integer arithmetic at every binding, prints
and parses back to itself, and makes algebraically equal dims equal."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphopt as go
from graphopt.errors import ShapeError
from graphopt.ir import symbolic as sym

NAMES = ("H", "W", "L", "N")
OPERATIONS: list[tuple[Callable[..., Any], Callable[[int, int], int], bool]] = [
    (sym.add, operator.add, False), (sym.sub, operator.sub, False), (sym.mul, operator.mul, False),
    (sym.floordiv, operator.floordiv, True), (sym.ceildiv, lambda a, b: -(-a // b), True),
    (sym.mod, operator.mod, True), (sym.maximum, max, False), (sym.minimum, min, False)]


@st.composite
def trees(draw: st.DrawFn, depth: int = 3) -> tuple[sym.Dim, Callable[[dict[str, int]], int]]:
    """A dim built by the operations, with the integer function it stands for."""
    if depth == 0 or draw(st.booleans()):
        if draw(st.booleans()):
            name = draw(st.sampled_from(NAMES))
            return name, lambda b: b[name]
        value = draw(st.integers(-6, 40))
        return value, lambda b: value
    op, reference, divides = draw(st.sampled_from(OPERATIONS))
    (a, fa), (b, fb) = draw(trees(depth - 1)), draw(trees(depth - 1))
    if divides:  # divisors stay positive constants or positive symbols
        b = draw(st.one_of(st.integers(1, 9), st.sampled_from(NAMES)))
        fb = (lambda v: lambda _: v)(b) if isinstance(b, int) else (lambda n: lambda bd: bd[n])(b)
    return op(a, b), lambda bd: reference(fa(bd), fb(bd))


bindings = st.fixed_dictionaries({n: st.integers(1, 50) for n in NAMES})


@settings(max_examples=300)
@given(trees(), bindings)
def test_canonical_form_evaluates_like_integer_arithmetic(tree: Any, binding: dict[str, int]) -> None:
    d, reference = tree
    assert sym.evaluate(d, binding) == reference(binding)


@settings(max_examples=300)
@given(trees())
def test_printed_dims_parse_back_to_the_same_dim(tree: Any) -> None:
    d, _ = tree
    assert sym.parse_dim(str(d)) == d
    assert hash(sym.parse_dim(str(d))) == hash(d)


@given(trees(2), trees(2), trees(2))
def test_equal_polynomials_are_equal_dims(a: Any, b: Any, c: Any) -> None:
    (x, _), (y, _), (z, _) = a, b, c
    assert sym.add(x, y) == sym.add(y, x)
    assert sym.mul(x, sym.add(y, z)) == sym.add(sym.mul(x, y), sym.mul(x, z))
    assert sym.sub(sym.add(x, y), y) == x


@pytest.mark.parametrize("text,printed", [
    ("(2*H + 3) // 2", "H + 1"), ("(N*L*384) // (N*L)", "384"), ("W % 1", "0"), ("(4*W + 2) % 4", "2"),
    ("(W + 1) // 2", "(W + 1) // 2"), ("ceildiv(2*H + 1, 2)", "H + 1"), ("(W - 3) // 2", "(W + 1) // 2 - 2"),
    ("max(H + 2, H)", "H + 2"),
    ("H - H", "0"), ("2*(W // 2)", "2*(W // 2)"), ("H*W - W*H + L", "L"), ("(H*W) // W", "H"),
    ("min(L, 8)", "min(L, 8)"), ("(H - 1) // 2 // 2", "(H + 3) // 4 - 1"), ("ceildiv(ceildiv(W, 2), 3)", "(W + 5) // 6"),
    ("((W - 1) // 2 - 1) // 2 + 1", "(W + 1) // 4"), ("ceildiv((W - 1) // 2 - 2, 2) + 1", "(W + 1) // 4"),
    ("(H // 4 - 2) // 2 + 1", "H // 8"),
])
def test_simplification_and_printing(text: str, printed: str) -> None:
    d = sym.parse_dim(text)
    assert str(d) == printed
    assert sym.dim(d) == d  # already in normal form: an int, a name, or an Expr


def test_lone_symbols_are_names_and_constants_are_ints() -> None:
    assert sym.add("H", 0) == "H" and isinstance(sym.add("H", 0), str)
    assert sym.mul(3, 4) == 12 and isinstance(sym.floordiv(sym.mul(2, "H"), "H"), int)
    assert sym.symbols(sym.parse_dim("max(H, W // 2) + L")) == {"H", "W", "L"}


@pytest.mark.parametrize("text,message", [("H / 2", "not a dimension"), ("H +", "not a dimension"),
                                          ("H ** 2", "not a dimension"), ("W // 0", "by zero"),
                                          ("f(H)", "not a dimension")])
def test_malformed_dims_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ShapeError, match=message):
        sym.parse_dim(text)


def test_an_unbound_symbol_is_named() -> None:
    with pytest.raises(ShapeError, match="'L' is not bound"):
        sym.evaluate(sym.parse_dim("L + 1"), {"H": 3})


def symbolic_cnn() -> go.Graph:
    """conv (stride 2), ceil-mode pool, reshape merging H and W, slice, cat: the dims a fully
    convolutional model computes from a symbolic N, H and W."""
    rng = np.random.default_rng(0)
    g = go.Graph("sym")
    x = g.add_input(go.TensorType("float32", ["N", 3, "H", "W"]), "x")
    w = g.add_parameter(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    y = g.create("conv2d", [x, w], {"stride": [2, 2], "padding": [1, 1]}).result
    y = g.create("max_pool2d", [y], {"kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1],
                                     "ceil_mode": True}).result
    flat = g.create("reshape", [y], {"shape": ["N", 4, -1]}).result
    head = g.create("slice", [flat], {"dim": 2, "start": 1, "end": 6}).result
    g.outputs = [g.create("cat", [flat, head], {"dim": 2}).result]
    return g


def test_a_symbolic_graph_prints_parses_and_runs_at_every_size() -> None:
    g = symbolic_cnn()
    go.verify(g)
    conv, pool, *_ = g
    assert str(conv.result.type) == "float32[N, 4, (H + 1) // 2, (W + 1) // 2]"
    assert str(pool.result.type) == "float32[N, 4, (H + 1) // 4 + 1, (W + 1) // 4 + 1]"
    out = g.outputs[0].type
    back = go.parse(go.print_graph(g, inline_limit=0), weights={p.name: p.data for p in g.parameters})
    assert [v.type for v in back.outputs] == [out]
    for n, h, w in ((1, 7, 9), (2, 16, 16), (1, 3, 40)):
        x = np.random.default_rng(h).standard_normal((n, 3, h, w)).astype(np.float32)
        (got,) = go.interpret(back, x)  # checks every node's result against its bound type
        assert got.shape == sym_shape(out, {"N": n, "H": h, "W": w})


def sym_shape(t: go.TensorType, binding: dict[str, int]) -> tuple[int, ...]:
    return tuple(sym.evaluate(d, binding) for d in t.shape)


def test_inputs_that_disagree_on_a_symbol_are_named() -> None:
    g = go.Graph()
    a = g.add_input(go.TensorType("float32", ["N", "L"]), "tokens")
    b = g.add_input(go.TensorType("float32", ["N", "L"]), "mask")
    g.outputs = [g.create("add", [a, b]).result]
    with pytest.raises(go.InterpretError, match="inputs disagree on L: %tokens has L = 5, %mask has L = 7"):
        go.interpret(g, np.ones((1, 5), np.float32), np.ones((1, 7), np.float32))
