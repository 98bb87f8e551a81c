"""Neural-network layers: convolutions, linear/matmul, normalizations, pooling, attention, embedding.
Layouts follow torch: NC[spatial] activations, [out, in/groups, k...] conv weights, [out, in] linear."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from graphopt.errors import ShapeError
from graphopt.ir import symbolic as sym
from graphopt.ir.symbolic import cost_size
from graphopt.ir.types import Dim, DType, TensorType, broadcast_shapes, fmt_shape
from graphopt.ops.common import (
    attr_bool,
    attr_dims,
    attr_float,
    attr_int,
    attr_ints,
    define,
    is_feature_map,
    is_float,
    need_float,
    same_dtype,
    static,
)
from graphopt.ops.elementwise import gelu, sigmoid
from graphopt.ops.reduce import softmax
from graphopt.ops.registry import Attr, AttrKind, ChannelRule, Sampler


def numel(shape: Sequence[Dim]) -> int:
    """Element count for costs: symbols at the sizes of graphopt.ir.symbolic.cost_sizes, else 1."""
    return math.prod(cost_size(d) for d in shape)


def _pairs(value: tuple[int, ...], n: int, name: str) -> tuple[int, ...]:
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ShapeError(f"{name} needs {n} values, got {fmt_shape(value)}")
    return value


def per_dim(n: int, *keys: str) -> Any:
    """Canonical form of spatial attributes: one value per spatial dim ([1] becomes [1, 1])."""

    def canonicalize(attrs: dict[str, Any]) -> dict[str, Any]:
        for key in keys:
            value = attrs.get(key)
            if value is not None:
                if len(value) not in (1, n):
                    raise ValueError(f"attribute {key!r} needs 1 or {n} values, got {list(value)}")
                attrs[key] = value * n if len(value) == 1 else value
        return attrs

    return canonicalize


def conv_out(size: Dim, k: int, stride: int, pad: int, dilation: int, ceil: bool = False) -> Dim:
    """The output size of a window over `size` (torch's and ONNX's rule, ceil_mode included)."""
    if not isinstance(size, int):
        return _symbolic_conv_out(size, k, stride, pad, dilation, ceil)
    span = size + 2 * pad - dilation * (k - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    if out < 1:
        raise ShapeError(f"window {k} (dilation {dilation}, padding {pad}) does not fit size {size}")
    return out


def _symbolic_conv_out(size: Dim, k: int, stride: int, pad: int, dilation: int, ceil: bool) -> Dim:
    span = sym.sub(size, dilation * (k - 1) + 1 - 2 * pad)
    if not ceil:
        return sym.add(sym.floordiv(span, stride), 1)
    if pad + stride >= dilation * (k - 1) + 2:  # the last window may start past the padded input
        raise ShapeError(f"ceil_mode window {k} with stride {stride} and padding {pad} over the symbolic size "
                         f"'{size}': its last window may start in the padding, which depends on the size; pin it")
    return sym.add(sym.ceildiv(span, stride), 1)


# --- fused activations (set by the fuse-activation pass, read by int8 backends) ---------------------
ACTIVATIONS: dict[str, Any] = {
    "relu": lambda y, bounds: np.maximum(y, 0),
    "relu6": lambda y, bounds: np.clip(y, 0, 6),
    "hardswish": lambda y, bounds: y * np.clip(y + 3, 0, 6) / 6,
    "silu": lambda y, bounds: y * sigmoid(y),
    "gelu": lambda y, bounds: gelu(y),
    "clamp": lambda y, bounds: np.clip(y, bounds[0], bounds[1]),
}
FUSED_ATTRS = {"activation": Attr(AttrKind.STR, "none", ("none", *ACTIVATIONS)),
               "activation_bounds": Attr(AttrKind.FLOATS, None)}


def with_activation(fn: Any) -> Any:
    """A layer reference that applies the fused activation recorded in its attributes."""

    def reference(*args: Any, activation: str = "none", activation_bounds: Any = None, **attrs: Any) -> np.ndarray:
        y = fn(*args, **attrs)
        return y if activation == "none" else ACTIVATIONS[activation](y, activation_bounds)

    return reference


def verify_activation(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[str]:
    clamp, bounds = attrs["activation"] == "clamp", attrs["activation_bounds"]
    if clamp != (bounds is not None) or (clamp and len(bounds) != 2):
        return ["activation_bounds must be [min, max] exactly when activation is clamp"]
    return []


# --- convolution -----------------------------------------------------------------------------------
def _conv_attrs(nsp: int) -> dict[str, Any]:
    return {"stride": attr_ints((1,) * nsp), "padding": attr_ints((0,) * nsp), "dilation": attr_ints((1,) * nsp),
            "groups": attr_int(1), **FUSED_ATTRS}


def _conv_infer(nsp: int) -> Any:
    def infer(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
        x, w = types[0], types[1]
        need_float(x)
        same_dtype(types)
        if x.rank != nsp + 2 or w.rank != nsp + 2:
            raise ShapeError(f"expects rank-{nsp + 2} input and weight, got {x.rank} and {w.rank}")
        g = attrs["groups"]
        cin, cout = static(x.shape[1], "input channels"), static(w.shape[0], "weight dim 0")
        if g < 1 or cin % g or cout % g or w.shape[1] * g != cin:
            raise ShapeError(f"weight {fmt_shape(w.shape)} does not fit {cin} input channels in {g} groups")
        if len(types) == 3 and types[2].shape != (cout,):
            raise ShapeError(f"bias shape {fmt_shape(types[2].shape)} is not [{cout}]")
        stride, pad, dil = (_pairs(attrs[k], nsp, k) for k in ("stride", "padding", "dilation"))
        spatial = [conv_out(x.shape[2 + i], static(w.shape[2 + i], "kernel"),
                            stride[i], pad[i], dil[i]) for i in range(nsp)]
        return x.with_shape((x.shape[0], cout, *spatial))

    return infer


def conv_macs(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    w = ins[1]
    return numel(outs[0].shape) * math.prod(w.shape[1:])  # type: ignore[arg-type]


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, stride: tuple[int, ...],
         padding: tuple[int, ...], dilation: tuple[int, ...], groups: int) -> np.ndarray:
    """N-d convolution by windowed einsum: windows [N, G, C/G, out..., k...] against [G, O/G, C/G, k...]."""
    nsp = x.ndim - 2
    stride, padding, dilation = (_pairs(v, nsp, "") for v in (stride, padding, dilation))
    kernel = w.shape[2:]
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    span = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    win = sliding_window_view(x, span, axis=tuple(range(2, 2 + nsp)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in stride),
               *(slice(None, None, d) for d in dilation))]
    n, c = x.shape[:2]
    out_sp = win.shape[2 : 2 + nsp]
    win = win.reshape(n, groups, c // groups, *out_sp, *kernel)
    wg = w.reshape(groups, w.shape[0] // groups, c // groups, *kernel)
    sp, ks = "hwd"[:nsp], "klm"[:nsp]
    out = np.einsum(f"ngc{sp}{ks},goc{ks}->ngo{sp}", win, wg, optimize=True)
    out = out.reshape(n, w.shape[0], *out_sp)
    if b is not None:
        out = out + b.reshape(-1, *([1] * nsp))
    return out


def _sample_conv2d(s: Sampler) -> Any:
    """Dense, grouped and depthwise convs; weights are sometimes shared with an earlier conv."""
    x = s.value(is_feature_map)
    if x is None:
        return None
    _, c, h, w = x.shape
    groups = s.choice(sorted({1, c, *(g for g in (2, 4) if c % g == 0)}))
    cout = groups * s.integer(1, max(1, 8 // groups))
    k = s.choice([1, 3]) if min(h, w) >= 3 else 1
    stride = s.choice([1, 2])
    pad = k // 2 if s.boolean() else 0
    weight = s.weight([cout, c // groups, k, k])
    operands = [x, weight] + ([s.weight([cout])] if s.boolean() else [])
    return operands, {"stride": (stride, stride), "padding": (pad, pad), "groups": groups}


for _nsp in (1, 2, 3):
    define(f"conv{_nsp}d", _conv_infer(_nsp), with_activation(conv), attrs=_conv_attrs(_nsp), arity=(2, 3),
           verify=verify_activation,
           canonicalize=per_dim(_nsp, "stride", "padding", "dilation"),
           channel=ChannelRule.CONV, macs=conv_macs, sample=_sample_conv2d if _nsp == 2 else None)


def _conv_transpose_infer(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x, w = types[0], types[1]
    need_float(x)
    same_dtype(types)
    if x.rank != 4 or w.rank != 4:
        raise ShapeError("expects rank-4 input and weight")
    g = attrs["groups"]
    if static(x.shape[1], "input channels") != w.shape[0] or w.shape[0] % g:
        raise ShapeError(f"weight {fmt_shape(w.shape)} does not fit {x.shape[1]} input channels in {g} groups")
    cout = w.shape[1] * g
    if len(types) == 3 and types[2].shape != (cout,):
        raise ShapeError(f"bias shape {fmt_shape(types[2].shape)} is not [{cout}]")
    stride, pad, opad, dil = (_pairs(attrs[k], 2, k)
                              for k in ("stride", "padding", "output_padding", "dilation"))
    spatial = [sym.add(sym.mul(sym.sub(x.shape[2 + i], 1), stride[i]),
                       dil[i] * (w.shape[2 + i] - 1) + opad[i] + 1 - 2 * pad[i]) for i in range(2)]
    if any(isinstance(d, int) and d < 1 for d in spatial):
        raise ShapeError(f"output size {spatial} is empty")
    return x.with_shape((x.shape[0], cout, *spatial))


def conv_transpose2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
                     stride: tuple[int, ...], padding: tuple[int, ...], output_padding: tuple[int, ...],
                     groups: int, dilation: tuple[int, ...]) -> np.ndarray:
    """Transposed conv as a stride-1 conv over the zero-dilated input with the flipped kernel."""
    stride, padding, output_padding, dilation = (
        _pairs(v, 2, "") for v in (stride, padding, output_padding, dilation))
    n, c, h, wd = x.shape
    up = np.zeros((n, c, (h - 1) * stride[0] + 1, (wd - 1) * stride[1] + 1), dtype=x.dtype)
    up[:, :, :: stride[0], :: stride[1]] = x
    k = w.shape[2:]
    edges = [dilation[i] * (k[i] - 1) - padding[i] for i in range(2)]
    up = np.pad(up, [(0, 0), (0, 0)] + [(max(e, 0), max(e, 0) + output_padding[i]) for i, e in enumerate(edges)])
    up = up[:, :, max(-edges[0], 0) : up.shape[2] - max(-edges[0], 0) or None,
            max(-edges[1], 0) : up.shape[3] - max(-edges[1], 0) or None]
    cin_g, cout_g = c // groups, w.shape[1]
    wc = w[:, :, ::-1, ::-1].reshape(groups, cin_g, cout_g, *k).transpose(0, 2, 1, 3, 4)
    wc = wc.reshape(groups * cout_g, cin_g, *k)
    return conv(up, np.ascontiguousarray(wc), b, stride=(1, 1), padding=(0, 0), dilation=dilation,
                groups=groups)


define("conv_transpose2d", _conv_transpose_infer, with_activation(conv_transpose2d), arity=(2, 3),
       verify=verify_activation,
       attrs={**_conv_attrs(2), "output_padding": attr_ints((0, 0))}, channel=ChannelRule.CONV,
       canonicalize=per_dim(2, "stride", "padding", "dilation", "output_padding"),
       macs=lambda ins, outs, a: numel(ins[0].shape) * math.prod(ins[1].shape[1:]))


# --- linear and matmul -------------------------------------------------------------------------------
def _linear(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x, w = types[0], types[1]
    need_float(x)
    same_dtype(types)
    if x.rank < 1 or w.rank != 2 or x.shape[-1] != w.shape[1]:
        raise ShapeError(f"weight {fmt_shape(w.shape)} does not fit input features {fmt_shape(x.shape[-1:])}")
    if len(types) == 3 and types[2].shape != (w.shape[0],):
        raise ShapeError(f"bias shape {fmt_shape(types[2].shape)} is not [{w.shape[0]}]")
    return x.with_shape((*x.shape[:-1], w.shape[0]))


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    y = x @ w.T
    return y if b is None else y + b


def _sample_linear(s: Sampler) -> Any:
    x = s.value(lambda v: is_float(v) and v.dtype is DType.float32 and v.type.rank >= 2
                and isinstance(v.shape[-1], int) and v.shape[-1] <= 64)
    if x is None:
        return None
    out = s.integer(1, 16)
    operands = [x, s.weight([out, x.shape[-1]])] + ([s.weight([out])] if s.boolean() else [])
    return operands, {}


define("linear", _linear, with_activation(linear), arity=(2, 3), channel=ChannelRule.LINEAR, sample=_sample_linear,
       attrs=FUSED_ATTRS, verify=verify_activation,
       macs=lambda ins, outs, a: numel(outs[0].shape) * static(ins[1].shape[1], "in features"))


def _matmul(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    a, b = types
    dtype = same_dtype(types)
    if a.rank == 0 or b.rank == 0:
        raise ShapeError("matmul operands must have rank 1 or more")
    ash = (1, *a.shape) if a.rank == 1 else a.shape
    bsh = (*b.shape, 1) if b.rank == 1 else b.shape
    if ash[-1] != bsh[-2]:
        raise ShapeError(f"inner dims {ash[-1]} and {bsh[-2]} differ")
    out = (*broadcast_shapes(ash[:-2], bsh[:-2]), ash[-2], bsh[-1])
    if a.rank == 1:
        out = out[:-2] + out[-1:]
    if b.rank == 1:
        out = out[:-1]
    return TensorType(dtype, out)


def matmul_macs(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Mapping[str, Any]) -> int:
    return numel(outs[0].shape) * numel(ins[0].shape[-1:])


define("matmul", _matmul, np.matmul, arity=(2, 2), macs=matmul_macs, channel=ChannelRule.MATMUL)


# --- normalization -------------------------------------------------------------------------------------
def _batch_norm(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x = types[0]
    need_float(x)
    same_dtype(types)
    if x.rank < 2:
        raise ShapeError(f"batch_norm needs rank 2 or more, got {x.rank}")
    for name, t in zip(("running_mean", "running_var", "weight", "bias"), types[1:]):
        if t.shape != (x.shape[1],):
            raise ShapeError(f"{name} shape {fmt_shape(t.shape)} is not [{x.shape[1]}]")
    return x


def batch_norm(x: np.ndarray, mean: np.ndarray, var: np.ndarray, weight: np.ndarray, bias: np.ndarray,
               eps: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = (weight / np.sqrt(var + eps)).reshape(shape)
    return (x - mean.reshape(shape)) * scale + bias.reshape(shape)


def _sample_batch_norm(s: Sampler) -> Any:
    x = s.value(is_feature_map)
    if x is None:
        return None
    c = x.shape[1]
    return [x, s.weight([c]), s.weight([c], positive=True), s.weight([c]), s.weight([c])], {"eps": 1e-5}


define("batch_norm", _batch_norm, batch_norm, attrs={"eps": attr_float(1e-5)}, arity=(5, 5),
       channel=ChannelRule.NORM, sample=_sample_batch_norm,
       doc="Inference batch norm; operands (x, running_mean, running_var, weight, bias).")


def _layer_norm(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x = types[0]
    need_float(x)
    same_dtype(types)
    norm = tuple(attrs["normalized_shape"])
    if x.shape[x.rank - len(norm) :] != norm or len(norm) > x.rank:
        raise ShapeError(f"normalized_shape {fmt_shape(norm)} does not end shape {fmt_shape(x.shape)}")
    for t in types[1:]:
        if t.shape != norm:
            raise ShapeError(f"affine parameter shape {fmt_shape(t.shape)} is not {fmt_shape(norm)}")
    return x


def layer_norm(x: np.ndarray, w: np.ndarray | None = None, b: np.ndarray | None = None, *,
               normalized_shape: tuple[int, ...], eps: float) -> np.ndarray:
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if w is not None:
        y = y * w
    return y if b is None else y + b


def _sample_layer_norm(s: Sampler) -> Any:
    x = s.value(lambda v: is_float(v) and v.type.rank >= 2 and isinstance(v.shape[-1], int))
    if x is None:
        return None
    c = x.shape[-1]
    return [x, s.weight([c]), s.weight([c])][: s.integer(1, 3)], {"normalized_shape": (c,)}


define("layer_norm", _layer_norm, layer_norm, arity=(1, 3), sample=_sample_layer_norm,
       attrs={"normalized_shape": attr_ints(), "eps": attr_float(1e-5)}, channel=ChannelRule.NORMALIZE)


def _group_norm(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x = types[0]
    need_float(x)
    c = static(x.shape[1], "channels")
    if c % attrs["num_groups"]:
        raise ShapeError(f"{c} channels do not split into {attrs['num_groups']} groups")
    for t in types[1:]:
        if t.shape != (c,):
            raise ShapeError(f"affine parameter shape {fmt_shape(t.shape)} is not [{c}]")
    return x


def group_norm(x: np.ndarray, w: np.ndarray | None = None, b: np.ndarray | None = None, *,
               num_groups: int, eps: float) -> np.ndarray:
    g = x.reshape(x.shape[0], num_groups, -1)
    mean, var = g.mean(axis=2, keepdims=True), g.var(axis=2, keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if w is not None:
        y = y * w.reshape(shape)
    return y if b is None else y + b.reshape(shape)


define("group_norm", _group_norm, group_norm, arity=(1, 3), channel=ChannelRule.NORM,
       attrs={"num_groups": attr_int(), "eps": attr_float(1e-5)})


def _lrn(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    need_float(types[0])
    if types[0].rank < 3 or attrs["size"] < 1:
        raise ShapeError(f"local_response_norm needs an N, C, ... input and size >= 1, got {types[0]}, "
                         f"size {attrs['size']}")
    return types[0]


def local_response_norm(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """ONNX LRN: x / (k + alpha / size * sum of x^2 over the channels c - (size-1)//2 ... c + size//2)^beta."""
    before = (size - 1) // 2
    widths = [(0, 0), (before, size - 1 - before)] + [(0, 0)] * (x.ndim - 2)
    squares = np.pad(x.astype(np.float64) ** 2, widths)
    total = sum(squares[:, i : i + x.shape[1]] for i in range(size))
    return (x / (k + alpha / size * total) ** beta).astype(x.dtype)


define("local_response_norm", _lrn, local_response_norm, channel=ChannelRule.OPAQUE,
       attrs={"size": attr_int(), "alpha": attr_float(1e-4), "beta": attr_float(0.75), "k": attr_float(1.0)},
       doc="Local response normalization across channels (AlexNet-era CNNs; ONNX LRN's window).")


# --- pooling -------------------------------------------------------------------------------------------
def _pool_attrs(**extra: Any) -> dict[str, Any]:
    return {"kernel_size": attr_ints(), "stride": attr_ints(None), "padding": attr_ints((0, 0)),
            "ceil_mode": attr_bool(False), **extra}


def _canonical_pool(attrs: dict[str, Any]) -> dict[str, Any]:
    """Per-dim values, and torch's default stride (the kernel size) made explicit."""
    attrs = per_dim(2, "kernel_size", "stride", "padding", "dilation")(attrs)
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel_size"]
    return attrs


def _pool_geometry(attrs: Mapping[str, Any]) -> tuple[tuple[int, ...], ...]:
    k = _pairs(attrs["kernel_size"], 2, "kernel_size")
    s = _pairs(attrs["stride"] or k, 2, "stride")
    p = _pairs(attrs["padding"], 2, "padding")
    d = _pairs(attrs.get("dilation", (1,)), 2, "dilation")
    return k, s, p, d


def _pool(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x = types[0]
    need_float(x)
    if x.rank != 4:
        raise ShapeError(f"expects a rank-4 NCHW input, got rank {x.rank}")
    k, s, p, d = _pool_geometry(attrs)
    if any(2 * pi > ki for pi, ki in zip(p, k)):
        raise ShapeError(f"padding {fmt_shape(p)} exceeds half the kernel {fmt_shape(k)}")
    spatial = [conv_out(x.shape[2 + i], k[i], s[i], p[i], d[i], attrs["ceil_mode"])
               for i in range(2)]
    return x.with_shape((*x.shape[:2], *spatial))


def _windows(x: np.ndarray, attrs: Mapping[str, Any], fill: float, overhang: float) -> np.ndarray:
    """[N, C, OH, OW, KH, KW] windows over `x` padded with `fill`, and with `overhang` past the
    padding where ceil_mode lets the last window stick out."""
    k, s, p, d = _pool_geometry(attrs)
    out = [conv_out(x.shape[2 + i], k[i], s[i], p[i], d[i], attrs["ceil_mode"]) for i in range(2)]
    extra = [max(0, (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - (x.shape[2 + i] + 2 * p[i]))
             for i in range(2)]
    x = np.pad(x, [(0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])], constant_values=fill)
    x = np.pad(x, [(0, 0), (0, 0), (0, extra[0]), (0, extra[1])], constant_values=overhang)
    win = sliding_window_view(x, [d[i] * (k[i] - 1) + 1 for i in range(2)], axis=(2, 3))
    return win[:, :, :: s[0], :: s[1], :: d[0], :: d[1]][:, :, : out[0], : out[1]]


def max_pool2d(x: np.ndarray, **attrs: Any) -> np.ndarray:
    return _windows(x, attrs, -np.inf, -np.inf).max(axis=(4, 5))


def avg_pool2d(x: np.ndarray, **attrs: Any) -> np.ndarray:
    """torch divides by the window's overlap with the input, plus the explicit padding when
    count_include_pad; the ceil_mode overhang never counts."""
    total = _windows(x, attrs, 0.0, 0.0).sum(axis=(4, 5))
    if attrs["divisor_override"]:
        return total / attrs["divisor_override"]
    ones = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    count = _windows(ones, attrs, float(attrs["count_include_pad"]), 0.0).sum(axis=(4, 5))
    return total / count


def _sample_pool(s: Sampler) -> Any:
    x = s.value(lambda v: is_feature_map(v) and min(v.shape[2:]) >= 2)
    if x is None:
        return None
    k = s.choice([2, 3]) if min(x.shape[2:]) >= 3 else 2
    return [x], {"kernel_size": (k, k), "stride": (s.choice([1, 2]),) * 2, "padding": (k // 2,) * 2
                 if s.boolean() else (0, 0)}


define("max_pool2d", _pool, max_pool2d, attrs=_pool_attrs(dilation=attr_ints((1, 1))),
       canonicalize=_canonical_pool,
       channel=ChannelRule.ELEMENTWISE, sample=_sample_pool)
define("avg_pool2d", _pool, avg_pool2d, channel=ChannelRule.ELEMENTWISE, sample=_sample_pool,
       canonicalize=_canonical_pool,
       attrs=_pool_attrs(count_include_pad=attr_bool(True), divisor_override=attr_int(None)))


def _adaptive(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x = types[0]
    need_float(x)
    if x.rank != 4:
        raise ShapeError(f"expects a rank-4 NCHW input, got rank {x.rank}")
    out = _pairs(attrs["output_size"], 2, "output_size")
    return x.with_shape((*x.shape[:2], *out))


def adaptive_avg_pool2d(x: np.ndarray, output_size: tuple[int, ...]) -> np.ndarray:
    """torch's bins: [floor(i*H/out), ceil((i+1)*H/out))."""
    (oh, ow), (h, w) = _pairs(output_size, 2, ""), x.shape[2:]
    if (h % oh, w % ow) == (0, 0):
        return x.reshape(*x.shape[:2], oh, h // oh, ow, w // ow).mean(axis=(3, 5))
    out = np.empty((*x.shape[:2], oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * h // oh, -(-(i + 1) * h // oh))
            cols = slice(j * w // ow, -(-(j + 1) * w // ow))
            out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


def _sample_adaptive(s: Sampler) -> Any:
    x = s.value(is_feature_map)
    return None if x is None else ([x], {"output_size": (s.choice([1, 2]),) * 2})


define("adaptive_avg_pool2d", _adaptive, adaptive_avg_pool2d, attrs={"output_size": attr_ints()},
       canonicalize=per_dim(2, "output_size"),
       channel=ChannelRule.ELEMENTWISE, sample=_sample_adaptive)


# --- attention and embedding ---------------------------------------------------------------------------
def _sdpa(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    q, k, v = types[:3]
    need_float(q)
    same_dtype(types[:3])
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        raise ShapeError("q, k, v must have one rank of 2 or more")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"q {fmt_shape(q.shape)}, k {fmt_shape(k.shape)}, v {fmt_shape(v.shape)} do not fit")
    batch = broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if len(types) == 4:
        mask = types[3]
        if mask.dtype is not DType.bool and mask.dtype is not q.dtype:
            raise ShapeError(f"attn_mask must be bool or {q.dtype}, got {mask.dtype}")
        broadcast_shapes(mask.shape, (*batch, q.shape[-2], k.shape[-2]))
    return q.with_shape((*batch, q.shape[-2], v.shape[-1]))


def scaled_dot_product_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray,
                                 mask: np.ndarray | None = None, *, is_causal: bool,
                                 scale: float | None) -> np.ndarray:
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if is_causal:
        keep = np.tril(np.ones((q.shape[-2], k.shape[-2]), dtype=bool))
        scores = np.where(keep, scores, -np.inf)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    return softmax(scores, -1) @ v


define("scaled_dot_product_attention", _sdpa, scaled_dot_product_attention, arity=(3, 4),
       attrs={"is_causal": attr_bool(False), "scale": attr_float(None)},
       macs=lambda ins, outs, a: 2 * numel(outs[0].shape[:-1]) * numel(ins[1].shape[-2:-1])
       * numel(ins[0].shape[-1:]), channel=ChannelRule.ATTENTION)


def _embedding(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    idx, w = types
    if idx.dtype not in (DType.int64, DType.int32):
        raise ShapeError(f"indices must be int64 or int32, got {idx.dtype}")
    if w.rank != 2:
        raise ShapeError(f"weight must be rank 2, got {fmt_shape(w.shape)}")
    return w.with_shape((*idx.shape, w.shape[1]))


define("embedding", _embedding, lambda idx, w: w[idx], arity=(2, 2), channel=ChannelRule.EMBEDDING,
       doc="embedding(indices, weight): rows of weight picked by indices (torch.nn.functional order).")


# --- gating used by attention blocks --------------------------------------------------------------------
def _glu(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x = types[0]
    need_float(x)
    d = attrs["dim"] % x.rank
    half = static(x.shape[d], "gated dim")
    if half % 2:
        raise ShapeError(f"glu needs an even size on dim {d}, got {half}")
    return x.with_shape((*x.shape[:d], half // 2, *x.shape[d + 1 :]))


def glu(x: np.ndarray, dim: int) -> np.ndarray:
    a, b = np.split(x, 2, axis=dim)
    return a * sigmoid(b)


define("glu", _glu, glu, attrs={"dim": attr_int(-1)})


# --- resampling -----------------------------------------------------------------------------------------
def _interpolate(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x = types[0]
    need_float(x)
    if x.rank != 4 or len(attrs["size"]) != 2:
        raise ShapeError("interpolate takes an NCHW input and a 2-value size")
    return x.with_shape((*x.shape[:2], *attrs["size"]))


def _source_coords(out: int, size: int, align_corners: bool, scale: float | None) -> np.ndarray:
    """torch's source coordinate of each output pixel (area_pixel_compute_source_index)."""
    dst = np.arange(out, dtype=np.float64)
    if align_corners:
        return dst * ((size - 1) / (out - 1) if out > 1 else 0.0)
    ratio = 1.0 / scale if scale else size / out
    return np.maximum((dst + 0.5) * ratio - 0.5, 0.0)


def interpolate(x: np.ndarray, size: tuple[int, ...], mode: str, align_corners: bool,
                scales: tuple[float, ...] | None) -> np.ndarray:
    out = x
    for axis, (n_out, n_in) in enumerate(zip(size, x.shape[2:]), start=2):
        scale = scales[axis - 2] if scales else None
        if mode == "nearest":
            ratio = 1.0 / scale if scale else n_in / n_out
            idx = np.minimum(np.floor(np.arange(n_out) * ratio).astype(np.int64), n_in - 1)
            out = np.take(out, idx, axis=axis)
            continue
        src = _source_coords(n_out, n_in, align_corners, scale)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        shape = [1] * out.ndim
        shape[axis] = -1
        frac = (src - lo).reshape(shape)
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


define("interpolate", _interpolate, interpolate, channel=ChannelRule.ELEMENTWISE,
       attrs={"size": attr_dims(), "mode": Attr(AttrKind.STR, "nearest", ("nearest", "bilinear")),
              "align_corners": attr_bool(False), "scales": Attr(AttrKind.FLOATS, None)},
       doc="Resize an NCHW tensor to `size` (torch.nn.functional.interpolate, nearest or bilinear).")
