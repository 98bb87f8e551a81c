"""Elementwise ops: activations and math (unary), arithmetic and comparisons (binary, numpy
broadcasting, equal dtypes), and `where`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.errors import ShapeError
from graphopt.ir.types import DType, TensorType, broadcast_shapes
from graphopt.ops.common import (
    attr_float,
    attr_str,
    define,
    is_float,
    need_float,
    same_dtype,
    sample_on,
)
from graphopt.ops.registry import Attr, ChannelRule, Sampler


def erf(x: np.ndarray) -> np.ndarray:
    """erf without scipy: Numerical Recipes' erfc (fractional error below 1.2e-7), in float64."""
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype)


def softplus(x: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    return np.where(x * beta > threshold, x, np.logaddexp(0, x * beta) / beta).astype(x.dtype)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _same_type(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    need_float(types[0])
    return types[0]


def unary(
    name: str,
    fn: Callable[..., np.ndarray],
    attrs: dict[str, Attr] | None = None,
    *,
    sample: bool = True,
    infer: Callable[..., TensorType] = _same_type,
) -> None:
    """Register a shape-preserving op. `sample=False` keeps numerically unsafe ops (log, sqrt, ...)
    out of generated graphs, where they would turn random data into NaN."""
    define(
        name,
        infer,
        fn,
        attrs=attrs or {},
        channel=ChannelRule.ELEMENTWISE,
        sample=sample_on(is_float) if sample else None,
    )


def _numeric(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    if types[0].dtype is DType.bool:
        raise ShapeError("expects a numeric operand, got bool")
    return types[0]


unary("relu", lambda x: np.maximum(x, 0))
unary("relu6", lambda x: np.clip(x, 0, 6))
unary("leaky_relu", lambda x, negative_slope: np.where(x >= 0, x, x * negative_slope),
      {"negative_slope": attr_float(0.01)})
unary("elu", lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
      {"alpha": attr_float(1.0)})
unary("hardtanh", lambda x, min_val, max_val: np.clip(x, min_val, max_val),
      {"min_val": attr_float(-1.0), "max_val": attr_float(1.0)})
unary("clamp", lambda x, min, max: np.clip(x, min, max),
      {"min": attr_float(None), "max": attr_float(None)})
unary("gelu", gelu, {"approximate": attr_str("none", "none", "tanh")})
unary("sigmoid", sigmoid)
unary("silu", lambda x: x * sigmoid(x))
unary("hardsigmoid", lambda x: np.clip(x / 6 + 0.5, 0, 1))
unary("hardswish", lambda x: x * np.clip(x + 3, 0, 6) / 6)
unary("softplus", softplus, {"beta": attr_float(1.0), "threshold": attr_float(20.0)})
unary("mish", lambda x: x * np.tanh(softplus(x)))
unary("tanh", np.tanh)
unary("selu", lambda x, alpha, gamma: gamma * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
      {"alpha": attr_float(1.6732632423543772), "gamma": attr_float(1.0507009873554805)})
unary("celu", lambda x, alpha: np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(np.minimum(x, 0) / alpha)),
      {"alpha": attr_float(1.0)})
unary("shrink", lambda x, bias, lambd: np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0)),
      {"bias": attr_float(0.0), "lambd": attr_float(0.5)})
unary("thresholded_relu", lambda x, alpha: np.where(x > alpha, x, 0), {"alpha": attr_float(1.0)})
unary("softsign", lambda x: x / (1 + np.abs(x)))
unary("sign", np.sign, infer=_numeric)
unary("floor", np.floor, sample=False)
unary("ceil", np.ceil, sample=False)
unary("erf", erf)
unary("neg", np.negative, infer=_numeric)
unary("abs", np.abs, infer=_numeric)
unary("sin", np.sin)
unary("cos", np.cos)
unary("exp", np.exp, sample=False)
unary("log", np.log, sample=False)
unary("sqrt", np.sqrt, sample=False)
unary("rsqrt", lambda x: 1 / np.sqrt(x), sample=False)
unary("reciprocal", np.reciprocal, sample=False)
unary("pow_scalar", lambda x, exponent: np.power(x, exponent), {"exponent": attr_float()},
      sample=False)


def _bool_to_bool(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    if types[0].dtype is not DType.bool:
        raise ShapeError(f"expects a bool operand, got {types[0].dtype}")
    return types[0]


unary("logical_not", np.logical_not, infer=_bool_to_bool, sample=False)


# --- binary -----------------------------------------------------------------------------------------
def _broadcast(types: Sequence[TensorType]) -> tuple[DType, tuple]:
    return same_dtype(types), broadcast_shapes(*(t.shape for t in types))


def _arith(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    dtype, shape = _broadcast(types)
    if dtype is DType.bool:
        raise ShapeError("arithmetic on bool tensors is not defined; convert with `to`")
    return TensorType(dtype, shape)


def _compare(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    return TensorType(DType.bool, _broadcast(types)[1])


def _logical(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    dtype, shape = _broadcast(types)
    if dtype is not DType.bool:
        raise ShapeError(f"expects bool operands, got {dtype}")
    return TensorType(dtype, shape)


def sample_binary(s: Sampler) -> Any:
    """x op y where y is x itself (fan-out), a same-shape value, or a broadcast parameter."""
    x = s.value(is_float)
    if x is None:
        return None
    kind = s.choice(["self", "peer", "scalar", "channel"])
    if kind == "self":
        return [x, x], {}
    if kind == "peer":
        y = s.value(lambda v: v is not x and v.type == x.type)
        if y is not None:
            return [x, y], {}
    if kind == "channel" and x.type.rank == 4 and isinstance(x.shape[1], int):
        return [x, s.weight([x.shape[1], 1, 1], positive=True)], {}
    return [x, s.weight([], positive=True)], {}


def binary(name: str, fn: Callable[..., np.ndarray], infer: Any = _arith, *,
           attrs: dict[str, Attr] | None = None, sample: bool = False) -> None:
    define(name, infer, fn, attrs=attrs or {}, arity=(2, 2), channel=ChannelRule.ELEMENTWISE,
           sample=sample_binary if sample else None)


def divide(a: np.ndarray, b: np.ndarray, rounding_mode: str = "none") -> np.ndarray:
    if rounding_mode == "floor":
        return np.floor_divide(a, b)
    if rounding_mode == "trunc":
        q = np.trunc(a / b) if a.dtype.kind == "f" else np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))
        return q.astype(a.dtype)
    return np.true_divide(a, b)


def _verify_divide(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[str]:
    if types[0].dtype.is_integer and attrs["rounding_mode"] == "none":
        return ["integer div needs rounding_mode 'floor' or 'trunc' (true division gives a float)"]
    return []


binary("add", np.add, sample=True)
binary("sub", np.subtract, sample=True)
binary("mul", np.multiply, sample=True)
define("div", _arith, divide, arity=(2, 2), channel=ChannelRule.ELEMENTWISE, sample=sample_binary,
       attrs={"rounding_mode": attr_str("none", "none", "floor", "trunc")}, verify=_verify_divide)
binary("pow", np.power)
binary("maximum", np.maximum, sample=True)
binary("minimum", np.minimum, sample=True)
binary("fmod", np.fmod)
binary("remainder", np.remainder)
binary("eq", np.equal, _compare)
binary("ne", np.not_equal, _compare)
binary("lt", np.less, _compare)
binary("le", np.less_equal, _compare)
binary("gt", np.greater, _compare)
binary("ge", np.greater_equal, _compare)
binary("logical_and", np.logical_and, _logical)
binary("logical_or", np.logical_or, _logical)


def _where(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    if types[0].dtype is not DType.bool:
        raise ShapeError(f"condition must be bool, got {types[0].dtype}")
    dtype = same_dtype(types[1:])
    return TensorType(dtype, broadcast_shapes(*(t.shape for t in types)))


define("where", _where, np.where, arity=(3, 3), channel=ChannelRule.ELEMENTWISE)
