"""The op registry. One OpDef holds everything about an op (attributes, type inference, numpy
reference, channel rule, cost, verify hook, sampler for generated graphs), so the verifier, the
interpreter, the strategies and the pruning analysis all read one place, and registering an op
from outside the package is a single call."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from graphopt.errors import OpError, ShapeError
from graphopt.ir.symbolic import Dim, Expr, parse_dim
from graphopt.ir.types import DType, TensorType

if TYPE_CHECKING:
    from graphopt.ir.value import Value


class AttrKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    INTS = "ints"
    FLOATS = "floats"
    DIMS = "dims"  # ints that may hold symbolic dims (reshape/expand/full target shapes)
    DIM = "dim"  # an int that may be a symbolic dim (a slice bound)
    DTYPE = "dtype"


REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()


@dataclass(frozen=True)
class Attr:
    """An attribute's schema: kind, default (REQUIRED, or None for an optional value), choices."""

    kind: AttrKind
    default: Any = REQUIRED
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        """The canonical form of `value` (tuples for lists, DType for dtypes); raises TypeError."""
        if value is None:
            if self.default is None:
                return None
            raise TypeError("must not be none")
        kind = self.kind
        if kind is AttrKind.INT:
            return _int(value)
        if kind is AttrKind.FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
                raise TypeError(f"expected a float, got {value!r}")
            return float(value)
        if kind is AttrKind.BOOL:
            if not isinstance(value, bool | np.bool_):
                raise TypeError(f"expected a bool, got {value!r}")
            return bool(value)
        if kind is AttrKind.STR:
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise TypeError(f"expected one of {', '.join(self.choices)}, got {value!r}")
            return value
        if kind is AttrKind.DIM:
            return _dim(value)
        if kind is AttrKind.DTYPE:
            try:
                return DType.of(value)
            except ShapeError as e:
                raise TypeError(str(e)) from None
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {value!r}")
        if kind is AttrKind.INTS:
            return tuple(_int(v) for v in value)
        if kind is AttrKind.FLOATS:
            return tuple(Attr(AttrKind.FLOAT).coerce(v) for v in value)
        return tuple(_dim(v) for v in value)


def _dim(value: Any) -> Dim:
    """An int, a symbol, a symbolic Expr, or an Expr's printed text."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, str):
        try:
            return parse_dim(value)
        except ShapeError as e:
            raise TypeError(str(e)) from None
    return _int(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"expected an int, got {value!r}")
    return int(value)


class ChannelRule(StrEnum):
    """How an op's output channels relate to its input channels; structural pruning reads it."""

    ELEMENTWISE = "elementwise"  # channel c of each tensor operand maps to channel c of the result
    CONV = "conv"  # consumes weight dim 1 (per group), produces weight dim 0 channels
    LINEAR = "linear"  # consumes the last axis through weight dim 1, produces weight dim 0
    NORM = "norm"  # per-channel parameters (operands 1..) follow the data's channel axis
    CONCAT = "concat"  # result channels are the operands' channels laid end to end
    SPLIT = "split"  # each result takes a contiguous range of the operand's channels
    RESHAPE = "reshape"  # same elements, new shape: merged or split axes map by their outermost axis
    PERMUTE = "permute"  # result axis i is operand axis dims[i]
    REDUCE = "reduce"  # the `dims` (or `dim`) axes are reduced or indexed away (size 1 with keepdim); others map
    NORMALIZE = "normalize"  # along `dim`, `dims` or the normalized_shape axes values mix or move: barriers there
    MATMUL = "matmul"  # batch axes map through, rows and columns to the result, the contracted axis pairs up
    ATTENTION = "attention"  # q, k, v and the result share batch and head axes; q/k and v/result pair up
    EMBEDDING = "embedding"  # the table's columns are the result's last axis
    OPAQUE = "opaque"  # unknown: pruning treats the op as a barrier


class Sampler(Protocol):
    """What an op's `sample` hook may ask of the graph generator (graphopt.testing.strategies)."""

    def integer(self, lo: int, hi: int) -> int: ...
    def choice(self, options: Sequence[Any]) -> Any: ...
    def boolean(self) -> bool: ...
    def value(self, predicate: Callable[[Value], bool] = ..., dtype: str = ...) -> Value | None: ...
    def weight(self, shape: Sequence[int], *, positive: bool = False) -> Value: ...


InferFn = Callable[[Sequence[TensorType], Mapping[str, Any]], "TensorType | Sequence[TensorType]"]
MacsFn = Callable[[Sequence[TensorType], Sequence[TensorType], Mapping[str, Any]], int]
VerifyFn = Callable[[Sequence[TensorType], Mapping[str, Any]], Iterable[str]]
SampleFn = Callable[[Sampler], "tuple[list[Value], dict[str, Any]] | None"]


@dataclass(frozen=True)
class OpDef:
    """Everything about one op. `reference(*arrays, **attrs)` returns an array or a tuple of them;
    `infer(types, attrs)` raises ShapeError for operands it cannot accept."""

    name: str
    infer: InferFn
    reference: Callable[..., Any]
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    arity: tuple[int, int | None] = (1, 1)
    channel: ChannelRule = ChannelRule.OPAQUE
    macs: MacsFn | None = None
    verify: VerifyFn | None = None
    sample: SampleFn | None = None
    canonicalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # e.g. stride [1] -> [1, 1]
    doc: str = ""

    def normalize_attrs(self, attrs: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Attributes coerced to canonical form with defaults filled in; errors name the node."""
        where = where or self.name
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            known = ", ".join(self.attrs) or "none"
            raise OpError(f"{where}: unknown attribute(s) {', '.join(sorted(unknown))} (known: {known})")
        out: dict[str, Any] = {}
        for key, spec in self.attrs.items():
            if key not in attrs:
                if spec.default is REQUIRED:
                    raise OpError(f"{where}: missing required attribute {key!r} ({spec.kind.value})")
                out[key] = spec.default
                continue
            try:
                out[key] = spec.coerce(attrs[key])
            except TypeError as e:
                raise OpError(f"{where}: attribute {key!r} ({spec.kind.value}): {e}") from None
        if self.canonicalize is not None:
            try:
                out = self.canonicalize(out)
            except ValueError as e:
                raise OpError(f"{where}: {e}") from None
        return out

    def check_arity(self, count: int, where: str = "") -> None:
        lo, hi = self.arity
        if count < lo or (hi is not None and count > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number'}"
            raise OpError(f"{where or self.name}: takes {want} operand(s), got {count}")

    def infer_types(
        self, types: Sequence[TensorType], attrs: Mapping[str, Any], where: str = ""
    ) -> list[TensorType]:
        """Result types, or a ShapeError naming the node and the operand types."""
        try:
            out = self.infer(types, attrs)
        except ShapeError as e:
            raise ShapeError(f"{where or self.name}: {e} (operands: {_types(types)})") from None
        except (IndexError, ValueError, TypeError, ZeroDivisionError) as e:
            raise ShapeError(f"{where or self.name}: cannot infer types ({e}) (operands: {_types(types)})") from None
        return [out] if isinstance(out, TensorType) else list(out)


def _types(types: Sequence[TensorType]) -> str:
    return ", ".join(str(t) for t in types) or "none"


_REGISTRY: dict[str, OpDef] = {}


def register_op(opdef: OpDef, *, replace: bool = False) -> OpDef:
    """Add an op to the registry (from inside or outside graphopt)."""
    if opdef.name in _REGISTRY and not replace:
        raise OpError(f"op {opdef.name!r} is already registered; pass replace=True to override it")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str, where: str = "") -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        at = f" at {where!r}" if where else ""
        raise OpError(
            f"unknown op {name!r}{at}; register it with graphopt.register_op(OpDef(name={name!r}, ...))"
        ) from None


def find_op(name: str) -> OpDef | None:
    """The OpDef of `name`, or None when it is not registered."""
    return _REGISTRY.get(name)


def registered_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)
