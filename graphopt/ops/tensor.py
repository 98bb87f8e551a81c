"""Tensor creation and conversion: full, full_like, arange, and `to` (dtype cast). torch.export
leaves these behind as mask and position-table arithmetic; fold-constants evaluates them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.errors import ShapeError
from graphopt.ir.types import DType, TensorType, fmt_shape
from graphopt.ops.common import attr_dims, attr_dtype, attr_float, define
from graphopt.ops.registry import ChannelRule


def _full(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    if any(isinstance(d, int) and d < 0 for d in attrs["shape"]):
        raise ShapeError(f"shape {fmt_shape(attrs['shape'])} has a negative dim")
    return TensorType(attrs["dtype"], attrs["shape"])


define("full", _full, lambda shape, value, dtype: np.full(shape, value, dtype=dtype.numpy),
       attrs={"shape": attr_dims(), "value": attr_float(), "dtype": attr_dtype(DType.float32)},
       arity=(0, 0))


define("full_like", lambda ts, a: ts[0].with_dtype(a["dtype"] or ts[0].dtype),
       lambda x, value, dtype: np.full(x.shape, value, dtype=(dtype.numpy if dtype else x.dtype)),
       attrs={"value": attr_float(), "dtype": attr_dtype(None)})


def _arange(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    if attrs["step"] == 0:
        raise ShapeError("arange step must not be 0")
    n = max(0, math.ceil((attrs["end"] - attrs["start"]) / attrs["step"]))
    return TensorType(attrs["dtype"], (n,))


define("arange", _arange,
       lambda start, end, step, dtype: np.arange(start, end, step).astype(dtype.numpy),
       attrs={"start": attr_float(0.0), "end": attr_float(), "step": attr_float(1.0),
              "dtype": attr_dtype(DType.int64)},
       arity=(0, 0))


def cast(x: np.ndarray, dtype: DType) -> np.ndarray:
    """torch semantics: float to int truncates toward zero."""
    if x.dtype.kind == "f" and dtype.is_integer:
        x = np.trunc(x)
    return x.astype(dtype.numpy)


define("to", lambda ts, a: ts[0].with_dtype(a["dtype"]), cast, attrs={"dtype": attr_dtype()},
       doc="Convert to `dtype` (torch's Tensor.to / ONNX Cast).", channel=ChannelRule.ELEMENTWISE)
