"""Helpers shared by the op definitions: attribute shorthands, axis and dtype checks, samplers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphopt.errors import ShapeError
from graphopt.ir.types import Dim, DType, TensorType
from graphopt.ir.value import Value
from graphopt.ops.registry import REQUIRED, Attr, AttrKind, OpDef, Sampler, register_op


def attr_int(default: Any = REQUIRED) -> Attr:
    return Attr(AttrKind.INT, default)


def attr_float(default: Any = REQUIRED) -> Attr:
    return Attr(AttrKind.FLOAT, default)


def attr_bool(default: Any = REQUIRED) -> Attr:
    return Attr(AttrKind.BOOL, default)


def attr_str(default: Any = REQUIRED, *choices: str) -> Attr:
    return Attr(AttrKind.STR, default, tuple(choices))


def attr_ints(default: Any = REQUIRED) -> Attr:
    return Attr(AttrKind.INTS, default)


def attr_dim(default: Any = REQUIRED) -> Attr:
    return Attr(AttrKind.DIM, default)


def attr_dims(default: Any = REQUIRED) -> Attr:
    return Attr(AttrKind.DIMS, default)


def attr_dtype(default: Any = REQUIRED) -> Attr:
    return Attr(AttrKind.DTYPE, default)


def define(name: str, infer: Any, reference: Callable[..., Any], **kwargs: Any) -> OpDef:
    """Register a built-in op."""
    return register_op(OpDef(name=name, infer=infer, reference=reference, **kwargs))


def axis(dim: int, rank: int) -> int:
    """`dim` made non-negative, or a ShapeError."""
    if not -rank <= dim < max(rank, 1):
        raise ShapeError(f"dim {dim} is out of range for rank {rank}")
    return dim % max(rank, 1)


def same_dtype(types: Sequence[TensorType]) -> DType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        listed = " and ".join(sorted(d.value for d in dtypes))
        raise ShapeError(f"operand dtypes {listed} differ; insert a `to` node to convert")
    return types[0].dtype


def need_float(t: TensorType) -> None:
    if not t.dtype.is_float:
        raise ShapeError(f"expects a floating-point operand, got {t.dtype}")


def static(d: Dim, what: str) -> int:
    if not isinstance(d, int):
        raise ShapeError(f"{what} must be static, got symbolic '{d}'; pin it (from_onnx(input_shapes=...), "
                         "--input-shape) or trace at a fixed size")
    return d


# --- samplers used by several ops -------------------------------------------------------------------
def is_float(v: Value) -> bool:
    return v.dtype.is_float


def is_feature_map(v: Value) -> bool:
    """A static NCHW float tensor: the operand of convs, pools and channel-axis ops."""
    return v.dtype is DType.float32 and v.type.rank == 4 and all(isinstance(d, int) for d in v.shape[1:])


def sample_on(predicate: Callable[[Value], bool]) -> Callable[[Sampler], Any]:
    """A sampler for an attribute-free unary op on any value satisfying `predicate`."""

    def sample(s: Sampler) -> Any:
        x = s.value(predicate)
        return None if x is None else ([x], {})

    return sample
