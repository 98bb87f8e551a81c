"""Quantization ops with exact integer semantics (round half to even, saturate), matching ONNX
QuantizeLinear / DequantizeLinear so the interpreter predicts what ONNX Runtime computes:
q = clamp(rint(x / scale) + zero_point, qmin, qmax);  x' = (q - zero_point) * scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.errors import ShapeError
from graphopt.ir.types import DType, TensorType
from graphopt.ops.common import attr_dtype, attr_float, attr_int, axis, define, need_float

QUANT_DTYPES = (DType.int8, DType.uint8, DType.int32)
DEQUANTIZE_OPS = frozenset({"dequantize_per_tensor", "dequantize_per_channel"})


def quant_range(dtype: DType, quant_min: int | None, quant_max: int | None) -> tuple[int, int]:
    """The integer range, narrowed by quant_min/quant_max (e.g. -8..7 for int4 stored in int8)."""
    info = np.iinfo(dtype.numpy)
    return (info.min if quant_min is None else quant_min, info.max if quant_max is None else quant_max)


def _verify_range(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[str]:
    if attrs["dtype"] not in QUANT_DTYPES:
        return [f"quantized dtype must be one of {', '.join(map(str, QUANT_DTYPES))}"]
    info = np.iinfo(attrs["dtype"].numpy)
    lo, hi = quant_range(attrs["dtype"], attrs["quant_min"], attrs["quant_max"])
    if not info.min <= lo <= hi <= info.max:
        return [f"quant range [{lo}, {hi}] does not fit {attrs['dtype']}"]
    return []


def _quantize(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    need_float(types[0])
    if attrs.get("scale", 1.0) <= 0:
        raise ShapeError(f"scale must be positive, got {attrs['scale']}")
    if "axis" in attrs:
        _per_channel_params(types, attrs)
    return types[0].with_dtype(attrs["dtype"])


def _dequantize(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    if types[0].dtype not in QUANT_DTYPES:
        raise ShapeError(f"expects a quantized operand (int8, uint8, int32), got {types[0].dtype}")
    if "axis" in attrs:
        _per_channel_params(types, attrs)
    return types[0].with_dtype(DType.float32)


def _per_channel_params(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> None:
    x, scales, zero_points = types
    channels = x.shape[axis(attrs["axis"], x.rank)]
    if scales.shape != (channels,) or zero_points.shape != (channels,):
        raise ShapeError(f"scales and zero_points must have shape [{channels}]")
    if scales.dtype is not DType.float32 or zero_points.dtype not in QUANT_DTYPES:
        raise ShapeError("scales must be float32 and zero_points a quantized integer type")


def quantize(x: np.ndarray, scale: Any, zero_point: Any, dtype: DType, quant_min: int | None,
             quant_max: int | None) -> np.ndarray:
    lo, hi = quant_range(dtype, quant_min, quant_max)
    q = np.rint(x.astype(np.float32) / np.asarray(scale, dtype=np.float32))
    return np.clip(q + np.asarray(zero_point, dtype=np.float32), lo, hi).astype(dtype.numpy)


def dequantize(q: np.ndarray, scale: Any, zero_point: Any) -> np.ndarray:
    centered = q.astype(np.int32) - np.asarray(zero_point, dtype=np.int32)
    return centered.astype(np.float32) * np.asarray(scale, dtype=np.float32)


def _channel_view(p: np.ndarray, x: np.ndarray, axis_: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis_ % x.ndim] = -1
    return p.reshape(shape)


_RANGE = {"dtype": attr_dtype(DType.int8), "quant_min": attr_int(None), "quant_max": attr_int(None)}

define("quantize_per_tensor", _quantize, quantize, verify=_verify_range,
       attrs={"scale": attr_float(), "zero_point": attr_int(0), **_RANGE})
define("dequantize_per_tensor", _dequantize, dequantize,
       attrs={"scale": attr_float(), "zero_point": attr_int(0)})
define("quantize_per_channel", _quantize,
       lambda x, s, z, axis, **kw: quantize(x, _channel_view(s, x, axis), _channel_view(z, x, axis), **kw),
       attrs={"axis": attr_int(0), **_RANGE}, arity=(3, 3), verify=_verify_range)
define("dequantize_per_channel", _dequantize,
       lambda q, s, z, axis: dequantize(q, _channel_view(s, q, axis), _channel_view(z, q, axis)),
       attrs={"axis": attr_int(0)}, arity=(3, 3))


def _fake_quantize(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x, scale = types
    need_float(x)
    if scale.dtype is not DType.float32:
        raise ShapeError(f"log2 scale must be float32, got {scale.dtype}")
    expected = () if attrs["axis"] is None else (x.shape[axis(attrs["axis"], x.rank)],)
    if scale.shape != expected:
        raise ShapeError(f"log2 scale must have shape {list(expected)} (one per "
                         f"{'channel' if expected else 'tensor'}), got {list(scale.shape)}")
    if not attrs["quant_min"] < attrs["quant_max"] or not attrs["quant_min"] <= attrs["zero_point"] <= attrs["quant_max"]:
        raise ShapeError(f"quant range [{attrs['quant_min']}, {attrs['quant_max']}] must hold zero_point "
                         f"{attrs['zero_point']} and more than one level")
    return x


def fake_quantize(x: np.ndarray, log2_scale: np.ndarray, zero_point: int, quant_min: int, quant_max: int,
                  axis: int | None) -> np.ndarray:
    """Quantize then dequantize at scale 2^log2_scale: what a quantize / dequantize pair computes,
    on the float tensor."""
    scale = np.exp2(np.asarray(log2_scale, np.float32))
    s = scale if axis is None else _channel_view(scale, x, axis)
    q = np.clip(np.rint(x.astype(np.float32) / s) + zero_point, quant_min, quant_max)
    return ((q - zero_point) * s).astype(np.float32)


# Training-time quantization (qat): the scale is a tensor, so training can learn it, and held as its
# log2 (as in TQT, Jain et al. 2019) so it stays positive and an optimizer's step moves it by a ratio.
define("fake_quantize", _fake_quantize, fake_quantize, arity=(2, 2),
       attrs={"zero_point": attr_int(0), "quant_min": attr_int(), "quant_max": attr_int(), "axis": attr_int(None)})


def _fake_binarize(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    return _fake_quantize(types, {**attrs, "zero_point": 0, "quant_min": -1, "quant_max": 1})


def fake_binarize(x: np.ndarray, log2_scale: np.ndarray, axis: int | None) -> np.ndarray:
    """Binary weights: +scale where x >= 0, -scale below (no zero level; scale 2^log2_scale)."""
    scale = np.exp2(np.asarray(log2_scale, np.float32))
    s = scale if axis is None else _channel_view(scale, x, axis)
    return np.where(x >= 0, s, -s).astype(np.float32)


define("fake_binarize", _fake_binarize, fake_binarize, arity=(2, 2), attrs={"axis": attr_int(None)})
