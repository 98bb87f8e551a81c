"""Tensor types: a dtype and a shape whose dims are ints, symbol names (`N`, `L`) or symbolic
expressions over them (`(W + 1) // 2`, see graphopt.ir.symbolic)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from graphopt.errors import ShapeError
from graphopt.ir.symbolic import Dim, Expr, dim, evaluate

Shape = tuple[Dim, ...]


class DType(StrEnum):
    float32 = "float32"
    float16 = "float16"
    float64 = "float64"
    int64 = "int64"
    int32 = "int32"
    int16 = "int16"
    int8 = "int8"
    uint8 = "uint8"
    bool = "bool"

    def __str__(self) -> str:
        return self.value

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def is_float(self) -> bool:
        return self in (DType.float32, DType.float16, DType.float64)

    @property
    def is_integer(self) -> bool:
        return self in (DType.int64, DType.int32, DType.int16, DType.int8, DType.uint8)

    @classmethod
    def of(cls, dtype: object) -> DType:
        """The DType of a numpy dtype, a DType, or a dtype name."""
        if isinstance(dtype, DType):
            return dtype
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name  # type: ignore[call-overload]
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(d.value for d in cls)
            raise ShapeError(f"unsupported dtype {name!r}; graphopt supports {known}") from None


@dataclass(frozen=True, slots=True)
class TensorType:
    dtype: DType
    shape: Shape

    def __init__(self, dtype: DType | str, shape: Iterable[Dim]) -> None:
        object.__setattr__(self, "dtype", DType.of(dtype))
        dims = tuple(dim(d) if isinstance(d, Expr) else d if isinstance(d, str) else int(d) for d in shape)
        for d in dims:
            if isinstance(d, int) and d < 0:
                raise ShapeError(f"negative dimension {d} in shape {fmt_shape(dims)}")
            if isinstance(d, str) and not d.isidentifier():
                raise ShapeError(f"symbolic dimension {d!r} must be an identifier")
        object.__setattr__(self, "shape", dims)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Element count, or None when a dim is symbolic."""
        return math.prod(self.shape) if self.is_static else None  # type: ignore[arg-type]

    def with_shape(self, shape: Iterable[Dim]) -> TensorType:
        return TensorType(self.dtype, shape)

    def with_dtype(self, dtype: DType | str) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    @classmethod
    def of_array(cls, array: np.ndarray) -> TensorType:
        return cls(DType.of(array.dtype), array.shape)


def fmt_shape(shape: Sequence[Dim]) -> str:
    """A shape for messages: [N, 3, 224, 224]."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def broadcast_shapes(*shapes: Sequence[Dim]) -> Shape:
    """Numpy broadcasting over shapes that may hold symbolic dims (a symbol only matches itself or 1)."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            listed = " and ".join(fmt_shape(s) for s in shapes)
            raise ShapeError(f"shapes {listed} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def bind_dims(shape: Sequence[Dim], bindings: dict[str, int]) -> tuple[int, ...]:
    """The sizes `shape` has when its symbols take `bindings`."""
    return tuple(evaluate(d, bindings) for d in shape)
