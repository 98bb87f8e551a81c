"""Symbolic dims: integer expressions over named sizes (`N`, `H`, `W`, `L`) in one canonical form, so
two dims are equal exactly when their expressions are the same.

An expression is a polynomial with integer coefficients whose atoms are symbols or the operations
a polynomial cannot hold (floor and ceiling division, mod, max, min), kept with canonical operands.
What can be simplified is: `(2*H + 3) // 2` is `H + 1`, `(N*L*384) // (N*L)` is `384`, `x % 1` is 0.
A Dim is an int, a str (one symbol) or an Expr (anything else); `dim()` gives that normal form, and
every operation here takes and returns Dims, so type inference written for ints reads the same."""

from __future__ import annotations

import ast
import functools
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from graphopt.errors import ShapeError

Atom = str | tuple  # a symbol, or (op, Expr, Expr) for an op of INT_OPS other than + and *
Monomial = tuple[Atom, ...]  # sorted atoms, repeated for powers; () is the constant term
T = TypeVar("T")



def ceildiv_int(a: int, b: int) -> int:
    return -(-a // b)


INT_OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add, "*": operator.mul, "//": operator.floordiv, "ceildiv": ceildiv_int, "%": operator.mod,
    "max": max, "min": min}  # what each operation of an expression does to sizes (a torch module calls them)


def _key(atom: Atom) -> tuple[int, str]:
    return (0, atom) if isinstance(atom, str) else (1, _atom_text(atom))


class Expr:
    """A canonical integer expression: a sum of (monomial, coefficient) terms, sorted."""

    __slots__ = ("_hash", "terms")

    def __init__(self, terms: Mapping[Monomial, int]) -> None:
        items = [(m, c) for m, c in terms.items() if c]
        self.terms: tuple[tuple[Monomial, int], ...] = tuple(sorted(items, key=lambda t: [_key(a) for a in t[0]]
                                                                     if t[0] else [(2, "")]))
        self._hash = hash(self.terms)

    # --- construction --------------------------------------------------------------------------
    @staticmethod
    def of(d: Dim) -> Expr:
        if isinstance(d, Expr):
            return d
        if isinstance(d, str):
            return Expr({(d,): 1})
        return Expr({(): int(d)})

    @property
    def constant_term(self) -> int:
        return next((c for m, c in self.terms if not m), 0)

    @property
    def constant(self) -> int | None:
        """The value, when the expression has no symbols."""
        if not self.terms:
            return 0
        return self.terms[0][1] if len(self.terms) == 1 and not self.terms[0][0] else None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int | str):
            other = Expr.of(other)
        return isinstance(other, Expr) and self.terms == other.terms

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Expr({self})"

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        text = ""
        for monomial, coefficient in self.terms:
            factors = [_atom_text(a, nested=len(monomial) > 1 or coefficient != 1) for a in monomial]
            magnitude = abs(coefficient)
            body = "*".join(([str(magnitude)] if magnitude != 1 or not factors else []) + factors)
            if not text:
                text = ("-" if coefficient < 0 else "") + body
            else:
                text += (" - " if coefficient < 0 else " + ") + body
        return text


def _atom_text(atom: Atom, nested: bool = False) -> str:
    if isinstance(atom, str):
        return atom
    op, a, b = atom
    if op in ("//", "%"):
        left = f"({a})" if len(a.terms) > 1 or (a.terms and a.terms[0][1] < 0) else str(a)
        right = str(b) if isinstance(dim(b), str) or (b.constant or 0) > 0 else f"({b})"
        text = f"{left} {op} {right}"
        return f"({text})" if nested else text
    return f"{op}({a}, {b})"


Dim = int | str | Expr


def dim(e: Dim) -> Dim:
    """The normal form: an int, a lone symbol as its name, or the Expr."""
    if not isinstance(e, Expr):
        return e
    constant = e.constant
    if constant is not None:
        return constant
    if len(e.terms) == 1 and e.terms[0][1] == 1 and len(e.terms[0][0]) == 1 and isinstance(e.terms[0][0][0], str):
        return e.terms[0][0][0]
    return e


# --- arithmetic on Dims --------------------------------------------------------------------------
def add(*dims: Dim) -> Dim:
    terms: dict[Monomial, int] = {}
    for d in dims:
        for m, c in Expr.of(d).terms:
            terms[m] = terms.get(m, 0) + c
    return dim(Expr(terms))


def neg(d: Dim) -> Dim:
    return mul(-1, d)


def sub(a: Dim, b: Dim) -> Dim:
    return add(a, neg(b))


def mul(*dims: Dim) -> Dim:
    product: dict[Monomial, int] = {(): 1}
    for d in dims:
        step: dict[Monomial, int] = {}
        for m1, c1 in product.items():
            for m2, c2 in Expr.of(d).terms:
                m = tuple(sorted(m1 + m2, key=_key))
                step[m] = step.get(m, 0) + c1 * c2
        product = step
    return dim(Expr(product))


def prod(dims: Iterable[Dim]) -> Dim:
    return mul(1, *dims)


def _exact_quotient(a: Expr, b: Expr) -> Expr | None:
    """a / b when b is one term dividing every term of a exactly, else None."""
    if len(b.terms) != 1:
        return Expr.of(1) if a == b else None  # a sum divides exactly only itself
    (bm, bc), = b.terms
    out: dict[Monomial, int] = {}
    for m, c in a.terms:
        rest = list(m)
        for atom in bm:
            if atom not in rest:
                return None
            rest.remove(atom)
        if c % bc:
            return None
        out[tuple(rest)] = c // bc
    return Expr(out)


def _divide(op: str, a: Dim, b: Dim) -> Dim:
    ea, eb = Expr.of(a), Expr.of(b)
    if eb.constant == 0:
        raise ShapeError(f"division of the dim {a} by zero")
    if ea.constant is not None and eb.constant is not None:
        return INT_OPS[op](ea.constant, eb.constant)
    exact = _exact_quotient(ea, eb)
    if exact is not None:
        return 0 if op == "%" else dim(exact)
    if eb.constant is not None and eb.constant > 0:
        return _by_constant(op, ea, eb.constant)
    return dim(Expr({((op, ea, eb),): 1}))


def _by_constant(op: str, a: Expr, c: int) -> Dim:
    """a // c, a % c (and ceildiv, as (a + c - 1) // c) in one canonical form: the terms c divides
    and the constant's multiple of c come out, (x // b + r) // c is (x + r*b) // (b*c); so equal
    sizes written either way (torch's floor forms, the IR's) compare equal."""
    if op == "ceildiv":
        return _by_constant("//", Expr.of(add(a, c - 1)), c)
    whole = {m: k // c for m, k in a.terms if m and k % c == 0}
    offset = a.constant_term
    whole[()] = offset // c
    rest = Expr({**{m: k for m, k in a.terms if m and k % c}, (): offset % c})
    if rest.constant is not None:
        return rest.constant % c if op == "%" else dim(Expr(whole))
    if op == "%":
        return dim(Expr({(("%", rest, Expr.of(c)),): 1}))
    inner = _lone_atom(Expr({m: k for m, k in rest.terms if m}))
    if inner is not None and inner[0] == "//" and (inner[2].constant or 0) > 0:  # floor((floor(x / b) + r) / c)
        b = inner[2].constant
        return add(Expr(whole), _divide("//", add(inner[1], rest.constant_term * b), b * c))
    return add(Expr(whole), Expr({(("//", rest, Expr.of(c)),): 1}))


def _lone_atom(e: Expr) -> tuple | None:
    """The operation `e` is, when it is one with coefficient 1."""
    if len(e.terms) == 1 and e.terms[0][1] == 1 and len(e.terms[0][0]) == 1 and isinstance(e.terms[0][0][0], tuple):
        return e.terms[0][0][0]
    return None


def floordiv(a: Dim, b: Dim) -> Dim:
    return _divide("//", a, b)


def ceildiv(a: Dim, b: Dim) -> Dim:
    return _divide("ceildiv", a, b)


def mod(a: Dim, b: Dim) -> Dim:
    return _divide("%", a, b)


def _extreme(op: str, a: Dim, b: Dim) -> Dim:
    ea, eb = Expr.of(a), Expr.of(b)
    if ea == eb:
        return dim(ea)
    difference = Expr.of(sub(a, b)).constant
    if difference is not None:  # a and b differ by a constant: the larger is known
        return dim(ea if (difference > 0) == (op == "max") else eb)
    first, second = sorted((ea, eb), key=lambda e: (e.constant is not None, str(e)))  # max(L, 8)
    return dim(Expr({((op, first, second),): 1}))


def maximum(a: Dim, b: Dim) -> Dim:
    return _extreme("max", a, b)


def minimum(a: Dim, b: Dim) -> Dim:
    return _extreme("min", a, b)


# --- symbols and evaluation ----------------------------------------------------------------------
def symbols(d: Dim) -> set[str]:
    """The symbol names `d` reads."""
    if isinstance(d, int):
        return set()
    if isinstance(d, str):
        return {d}
    out: set[str] = set()
    for monomial, _ in d.terms:
        for atom in monomial:
            out |= {atom} if isinstance(atom, str) else symbols(atom[1]) | symbols(atom[2])
    return out


def lower(e: Expr, sub: Callable[[Dim], T], constant: Callable[[int], T], apply: Callable[[str, T, T], T]) -> T:
    """`e` built from the caller's values (evaluation, or the nodes of a backend that computes
    sizes at run time): `sub` gives the value of a symbol or of an operation's operand (so the
    caller can memoize), `constant` that of an int, `apply(op, a, b)` applies an op of INT_OPS."""
    total = None
    for monomial, coefficient in e.terms:
        factors = [sub(a) if isinstance(a, str) else apply(a[0], sub(dim(a[1])), sub(dim(a[2]))) for a in monomial]
        if coefficient != 1 or not factors:
            factors.insert(0, constant(coefficient))
        term = functools.reduce(lambda x, y: apply("*", x, y), factors)
        total = term if total is None else apply("+", total, term)
    return total if total is not None else constant(0)


def evaluate(d: Dim, bindings: Mapping[str, int]) -> int:
    """The size `d` has when its symbols take `bindings`."""
    if isinstance(d, int):
        return d
    if isinstance(d, str):
        try:
            return bindings[d]
        except KeyError:
            raise ShapeError(f"symbolic dimension {d!r} is not bound by any graph input") from None

    def apply(op: str, x: int, y: int) -> int:
        if y == 0 and op in ("//", "ceildiv", "%"):
            raise ShapeError(f"the dim {d} divides by zero at {dict(bindings)}")
        return INT_OPS[op](x, y)

    return lower(d, lambda x: evaluate(x, bindings), int, apply)


# --- costs -----------------------------------------------------------------------------------------
_COST_SIZES: ContextVar[Mapping[str, int] | None] = ContextVar("cost_sizes", default=None)


@contextmanager
def cost_sizes(sizes: Mapping[str, int]) -> Iterator[None]:
    """Within it, costs (MACs, element counts) take each symbol at this size, any other at 1; the
    pass manager sets the sizes of the first input sample, so MACs of a symbolic graph are those
    at a representative size."""
    token = _COST_SIZES.set(dict(sizes))
    try:
        yield
    finally:
        _COST_SIZES.reset(token)


def cost_size(d: Dim) -> int:
    """`d` at the sizes costs are counted at."""
    if isinstance(d, int):
        return d
    return evaluate(d, defaultdict(lambda: 1, _COST_SIZES.get() or {}))


# --- the text form -------------------------------------------------------------------------------
_BINARY = {ast.Add: add, ast.Sub: sub, ast.Mult: mul, ast.FloorDiv: floordiv, ast.Mod: mod}
_CALLS = {"max": maximum, "min": minimum, "ceildiv": ceildiv}


def parse_dim(text: str) -> Dim:
    """A dim from its printed form: `N`, `3`, `(W + 1) // 2`, `ceildiv(H, 32)`, `max(L, 8)`."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ShapeError(f"{text!r} is not a dimension (an int, a name, or +, -, *, //, %, max, min, ceildiv "
                         "of those)") from None
    return _from_ast(tree, text)


def _from_ast(node: ast.AST, text: str) -> Dim:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return neg(_from_ast(node.operand, text))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_from_ast(node.left, text), _from_ast(node.right, text))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS \
            and len(node.args) == 2 and not node.keywords:
        return _CALLS[node.func.id](*(_from_ast(a, text) for a in node.args))
    raise ShapeError(f"{text!r} is not a dimension: {ast.unparse(node)!r} is none of an int, a name, "
                     "+, -, *, //, %, max(a, b), min(a, b), ceildiv(a, b)")
