"""Reductions (mean, sum, amax, ...), softmax-style normalizations and scans along an axis."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.errors import ShapeError
from graphopt.ir.types import DType, TensorType, fmt_shape
from graphopt.ops.common import (
    attr_bool,
    attr_float,
    attr_int,
    attr_ints,
    axis,
    define,
    is_feature_map,
    is_float,
    need_float,
)
from graphopt.ops.registry import ChannelRule, Sampler


def reduced_axes(t: TensorType, dims: tuple[int, ...] | None) -> tuple[int, ...]:
    axes = tuple(range(t.rank)) if dims is None else tuple(axis(d, t.rank) for d in dims)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"dims {fmt_shape(dims or ())} repeat an axis")
    return axes


def reduced_shape(t: TensorType, dims: tuple[int, ...] | None, keepdim: bool) -> tuple:
    axes = reduced_axes(t, dims)
    if keepdim:
        return tuple(1 if i in axes else d for i, d in enumerate(t.shape))
    return tuple(d for i, d in enumerate(t.shape) if i not in axes)


def _sample_mean(s: Sampler) -> Any:
    x = s.value(is_feature_map)
    return None if x is None else ([x], {"dims": (2, 3), "keepdim": s.boolean()})


def reduction(name: str, fn: Callable[..., np.ndarray], *, result: DType | None = None,
              operand: str = "float", extra: dict | None = None, sample: Any = None) -> None:
    """Register `name(x) {dims, keepdim}`; dims=None reduces every axis."""

    def infer(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
        t = types[0]
        if operand == "float":
            need_float(t)
        elif operand == "bool" and t.dtype is not DType.bool:
            raise ShapeError(f"expects a bool operand, got {t.dtype}")
        return TensorType(result or t.dtype, reduced_shape(t, attrs["dims"], attrs["keepdim"]))

    def reference(x: np.ndarray, dims: tuple[int, ...] | None, keepdim: bool, **kw: Any) -> np.ndarray:
        return fn(x, axis=None if dims is None else tuple(dims), keepdims=keepdim, **kw)

    attrs = {"dims": attr_ints(None), "keepdim": attr_bool(False), **(extra or {})}
    define(name, infer, reference, attrs=attrs, sample=sample, channel=ChannelRule.REDUCE)


def vector_norm(x: np.ndarray, axis: Any, keepdims: bool, ord: float) -> np.ndarray:
    a = np.abs(x)
    if ord == np.inf:
        return a.max(axis=axis, keepdims=keepdims)
    return np.power(np.power(a, ord).sum(axis=axis, keepdims=keepdims), 1.0 / ord)


def variance(x: np.ndarray, axis: Any, keepdims: bool, correction: int) -> np.ndarray:
    return np.var(x, axis=axis, keepdims=keepdims, ddof=correction)


reduction("mean", np.mean, sample=_sample_mean)
reduction("sum", np.sum, operand="any")
reduction("prod", np.prod, operand="any")
reduction("amax", np.amax, operand="any")
reduction("amin", np.amin, operand="any")
reduction("any", np.any, operand="bool")
reduction("all", np.all, operand="bool")
reduction("norm", vector_norm, extra={"ord": attr_float(2.0)})
reduction("var", variance, extra={"correction": attr_int(1)})


def _argmax_infer(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t = types[0]
    shape = reduced_shape(t, None if attrs["dim"] is None else (attrs["dim"],), attrs["keepdim"])
    return TensorType(DType.int64, shape)


def argmax(x: np.ndarray, dim: int | None, keepdim: bool) -> np.ndarray:
    return np.argmax(x, axis=dim, keepdims=keepdim)


define("argmax", _argmax_infer, argmax, attrs={"dim": attr_int(None), "keepdim": attr_bool(False)})


# --- along one axis -----------------------------------------------------------------------------------
def softmax(x: np.ndarray, dim: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def log_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def _along_axis(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    axis(attrs["dim"], types[0].rank)
    if types[0].dtype is DType.bool:
        raise ShapeError("expects a numeric operand, got bool")
    return types[0]


def _sample_last_axis(s: Sampler) -> Any:
    x = s.value(lambda v: is_float(v) and v.type.rank >= 1)
    return None if x is None else ([x], {"dim": -1})


define("softmax", _along_axis, softmax, attrs={"dim": attr_int()}, sample=_sample_last_axis, channel=ChannelRule.NORMALIZE)
define("log_softmax", _along_axis, log_softmax, attrs={"dim": attr_int()}, channel=ChannelRule.NORMALIZE)
define("cumsum", _along_axis, lambda x, dim: np.cumsum(x, axis=dim, dtype=x.dtype),
       attrs={"dim": attr_int()}, channel=ChannelRule.NORMALIZE)
