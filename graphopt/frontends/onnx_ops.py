"""ONNX -> IR converters, opset 11 and newer (attributes that later opsets moved to inputs are read
from either place)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
from onnx import NodeProto, numpy_helper

from graphopt.errors import GraphoptError, UnsupportedError
from graphopt.frontends.common import arange_to
from graphopt.frontends.onnx import INT64_MAX, OnnxImporter, _dtype, register_onnx
from graphopt.frontends.onnx_shapes import dims_array
from graphopt.ir import symbolic as sym
from graphopt.ir.types import Dim, DType
from graphopt.ir.value import Value
from graphopt.ops.layout import reshape_shape

Importer = OnnxImporter


def unary(op: str, *onnx_ops: str, **defaults: float) -> None:
    """An elementwise op; `defaults` are its ONNX attributes, named as in the IR."""

    @register_onnx(*onnx_ops)
    def convert(im: Importer, node: NodeProto) -> Value:
        a = im.attrs(node)
        return im.emit(op, [im.input(node, 0)], {k: float(a.get(k, v)) for k, v in defaults.items()})


for _op, _onnx in {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "erf": "Erf", "exp": "Exp", "log": "Log",
                   "sqrt": "Sqrt", "neg": "Neg", "abs": "Abs", "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos",
                   "logical_not": "Not", "hardswish": "HardSwish", "softplus": "Softplus", "identity": "Identity",
                   "softsign": "Softsign", "sign": "Sign", "floor": "Floor", "ceil": "Ceil"}.items():
    unary(_op, _onnx)
unary("selu", "Selu", alpha=1.6732632423543772, gamma=1.0507009873554805)
unary("celu", "Celu", alpha=1.0)
unary("shrink", "Shrink", bias=0.0, lambd=0.5)
unary("thresholded_relu", "ThresholdedRelu", alpha=1.0)


@register_onnx("LRN")
def lrn(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    return im.emit("local_response_norm", [im.input(node, 0)], {
        "size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)), "beta": float(a.get("beta", 0.75)),
        "k": float(a.get("bias", 1.0))})


@register_onnx("Dropout")
def dropout(im: Importer, node: NodeProto) -> list[Value]:
    if len(node.output) > 1 and node.output[1] in im.read:
        raise UnsupportedError("the Dropout mask output is read by the model; inference has no mask to give")
    return [im.emit("identity", [im.input(node, 0)])]


@register_onnx("LeakyRelu")
def leaky_relu(im: Importer, node: NodeProto) -> Value:
    return im.emit("leaky_relu", [im.input(node, 0)], {"negative_slope": im.attrs(node).get("alpha", 0.01)})


@register_onnx("Elu")
def elu(im: Importer, node: NodeProto) -> Value:
    return im.emit("elu", [im.input(node, 0)], {"alpha": im.attrs(node).get("alpha", 1.0)})


@register_onnx("Gelu")
def gelu(im: Importer, node: NodeProto) -> Value:
    return im.emit("gelu", [im.input(node, 0)], {"approximate": im.attrs(node).get("approximate", "none")})


@register_onnx("HardSigmoid")
def hardsigmoid(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
    x = im.input(node, 0)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return im.emit("hardsigmoid", [x])
    scaled = im.emit("add", [im.emit("mul", [x, im.scalar(alpha, x)]), im.scalar(beta, x)])
    return im.emit("clamp", [scaled], {"min": 0.0, "max": 1.0})


@register_onnx("Clip")
def clip(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    lo = im.number(node, 1, "min") if im.opset >= 11 else a.get("min")
    hi = im.number(node, 2, "max") if im.opset >= 11 else a.get("max")
    if (lo, hi) == (0.0, 6.0):
        return im.emit("relu6", [im.input(node, 0)])
    return im.emit("clamp", [im.input(node, 0)], {"min": lo, "max": hi})


def binary(op: str, *onnx_ops: str, **attrs: Any) -> None:
    @register_onnx(*onnx_ops)
    def convert(im: Importer, node: NodeProto) -> Value:
        return im.emit(op, [im.input(node, 0), im.input(node, 1)], dict(attrs))


for _op, _onnx in {"add": "Add", "sub": "Sub", "mul": "Mul", "pow": "Pow", "eq": "Equal", "lt": "Less",
                   "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "logical_and": "And",
                   "logical_or": "Or", "matmul": "MatMul"}.items():
    binary(_op, _onnx)


@register_onnx("Div")
def div(im: Importer, node: NodeProto) -> Value:
    a, b = im.input(node, 0), im.input(node, 1)
    return im.emit("div", [a, b], {"rounding_mode": "none" if a.dtype.is_float else "trunc"})


@register_onnx("Mod")
def mod(im: Importer, node: NodeProto) -> Value:
    op = "fmod" if im.attrs(node).get("fmod", 0) else "remainder"
    return im.emit(op, [im.input(node, 0), im.input(node, 1)])


@register_onnx("Sum", "Mean", "Max", "Min")
def variadic(im: Importer, node: NodeProto) -> Value:
    """One binary op per extra operand (and a scale for Mean)."""
    op = {"Sum": "add", "Mean": "add", "Max": "maximum", "Min": "minimum"}[node.op_type]
    parts = [im.value(n) for n in node.input if n]
    out = parts[0]
    for part in parts[1:]:
        out = im.emit(op, [out, part])
    return out if node.op_type != "Mean" or len(parts) == 1 else im.emit("mul", [out, im.scalar(1 / len(parts), out)])


@register_onnx("Where")
def where(im: Importer, node: NodeProto) -> Value:
    return im.emit("where", [im.input(node, i) for i in range(3)])


@register_onnx("Cast", "CastLike")
def cast(im: Importer, node: NodeProto) -> Value:
    to = im.attrs(node)["to"] if node.op_type == "Cast" else None
    dtype = _dtype(to, node.name) if to is not None else im.input(node, 1).dtype
    return im.emit("to", [im.input(node, 0)], {"dtype": dtype})


# --- reductions ----------------------------------------------------------------------------------------
def _reduce_axes(im: Importer, node: NodeProto) -> list[int] | None:
    attrs = im.attrs(node)
    axes = attrs.get("axes")
    if axes is None:
        axes = im.ints(node, 1, "axes")
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            raise UnsupportedError("noop_with_empty_axes is not supported")
        return None
    return list(axes)


def reduce(op: str, onnx_op: str, **extra: Any) -> None:
    @register_onnx(onnx_op)
    def convert(im: Importer, node: NodeProto) -> Value:
        keep = bool(im.attrs(node).get("keepdims", 1))
        return im.emit(op, [im.input(node, 0)], {"dims": _reduce_axes(im, node), "keepdim": keep, **extra})


reduce("mean", "ReduceMean")
reduce("sum", "ReduceSum")
reduce("prod", "ReduceProd")
reduce("amax", "ReduceMax")
reduce("amin", "ReduceMin")
reduce("norm", "ReduceL2", ord=2.0)
reduce("norm", "ReduceL1", ord=1.0)


@register_onnx("ArgMax")
def argmax(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    if a.get("select_last_index", 0):
        raise UnsupportedError("select_last_index is not supported")
    return im.emit("argmax", [im.input(node, 0)], {"dim": a.get("axis", 0), "keepdim": bool(a.get("keepdims", 1))})


@register_onnx("Softmax", "LogSoftmax")
def softmax(im: Importer, node: NodeProto) -> Value:
    op = "softmax" if node.op_type == "Softmax" else "log_softmax"
    x = im.input(node, 0)
    rank = x.type.rank
    axis = im.axis(im.attrs(node).get("axis", -1 if im.opset >= 13 else 1), rank)
    if im.opset >= 13 or axis == rank - 1:
        return im.emit(op, [x], {"dim": axis})
    # Before opset 13 the input is coerced to 2-D at `axis`: normalize over all trailing dims.
    flat = im.emit("reshape", [x], {"shape": [*x.shape[:axis], -1]})
    return im.emit("reshape", [im.emit(op, [flat], {"dim": -1})], {"shape": list(x.shape)})


@register_onnx("CumSum")
def cumsum(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    if a.get("exclusive", 0) or a.get("reverse", 0):
        raise UnsupportedError("exclusive or reverse CumSum is not supported")
    x = im.input(node, 0)
    axis = im.number(node, 1, "axis")
    if axis is None or axis != int(axis):
        raise GraphoptError("input 1 (axis) must be an integer scalar")
    return im.emit("cumsum", [x], {"dim": im.axis(int(axis), x.type.rank)})


# --- layout --------------------------------------------------------------------------------------------
@register_onnx("Reshape")
def reshape(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    target: list[Dim] = list(im.dims(node, 1, "shape") or [])
    if not im.has(node, 1):
        raise GraphoptError("input 1 (shape) is missing")
    if not im.attrs(node).get("allowzero", 0):
        if any(d == 0 for d in target[x.type.rank:]):
            raise GraphoptError(f"shape {target}: a 0 (copy this dim) beyond the input's rank {x.type.rank}")
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return im.emit("reshape", [x], {"shape": list(reshape_shape(x.shape, target))})


@register_onnx("Flatten")
def flatten(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    axis = im.axis(im.attrs(node).get("axis", 1), x.type.rank + 1)
    if axis == 0:
        return im.emit("reshape", [x], {"shape": [1, -1]})
    return im.emit("flatten", [im.emit("flatten", [x], {"start_dim": 0, "end_dim": axis - 1})] if axis > 1 else [x],
                   {"start_dim": 1})


@register_onnx("Transpose")
def transpose(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    perm = im.attrs(node).get("perm", list(range(x.type.rank))[::-1])
    return im.emit("permute", [x], {"dims": list(perm)})


def _axes_input(im: Importer, node: NodeProto) -> list[int] | None:
    axes = im.attrs(node).get("axes")
    return im.ints(node, 1, "axes") if axes is None else list(axes)


@register_onnx("Squeeze")
def squeeze(im: Importer, node: NodeProto) -> Value:
    return im.emit("squeeze", [im.input(node, 0)], {"dims": _axes_input(im, node)})


@register_onnx("Unsqueeze")
def unsqueeze(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    axes = _axes_input(im, node) or []
    rank = x.type.rank + len(axes)
    for a in sorted(im.axis(d, rank) for d in axes):
        x = im.emit("unsqueeze", [x], {"dim": a})
    return x


@register_onnx("Concat")
def concat(im: Importer, node: NodeProto) -> Value:
    parts = [im.value(n) for n in node.input if n]
    return im.emit("cat", parts, {"dim": im.attrs(node)["axis"]})


@register_onnx("Split")
def split(im: Importer, node: NodeProto) -> tuple[Value, ...]:
    x = im.input(node, 0)
    a = im.attrs(node)
    axis = im.axis(a.get("axis", 0), x.type.rank)
    sizes = a.get("split")
    if sizes is None:
        sizes = im.ints(node, 1, "split")
    if sizes is None:
        (total,) = im.static_dims(x, [axis], "Split into equal parts")
        parts = a.get("num_outputs", len(node.output))
        if parts < 1:
            raise GraphoptError(f"num_outputs {parts} must be at least 1")
        step = -(-total // parts)
        sizes = [min(step, total - i * step) for i in range(parts)]
    out = im.emit("split", [x], {"split_sizes": list(sizes), "dim": axis})
    return out if isinstance(out, tuple) else (out,)


@register_onnx("Slice")
def slice_(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    starts = im.ints(node, 1, "starts")
    if starts is None:
        raise GraphoptError("input 1 (starts) is missing")
    ends = im.dims(node, 2, "ends", len(starts))
    if ends is None:
        raise GraphoptError("input 2 (ends) is missing")
    axes = im.ints(node, 3, "axes", len(starts)) or list(range(len(starts)))
    ends = [_static_end(x.shape[im.axis(a, x.type.rank)], e) for a, e in zip(axes, ends)]
    steps = im.ints(node, 4, "steps", len(starts)) or [1] * len(starts)
    if 0 in steps:
        raise GraphoptError(f"steps {steps} must not hold 0")
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = im.axis(axis, x.type.rank)
        size = x.shape[axis]
        if step > 0:
            x = im.emit("slice", [x], {"dim": axis, "start": start, "end": min(end, INT64_MAX), "step": step})
            continue
        if not isinstance(size, int):
            raise UnsupportedError("a negative-step slice on a symbolic dim is not supported")
        indices = range(size)[slice(start, end if end > -size - 1 else None, step)]
        flipped = im.emit("flip", [x], {"dims": [axis]})
        first = size - 1 - indices[0] if len(indices) else 0
        x = im.emit("slice", [flipped], {"dim": axis, "start": first, "end": first + len(indices) * -step,
                                         "step": -step})
    return x


def _static_end(size: Dim, end: Dim) -> int:
    """A slice end written as a size expression (`Shape(x)[2] - 1`), as the int slice reads: the
    dim's own size is the end, its size minus k counts from the end."""
    if isinstance(end, int):
        return end
    from_end = sym.sub(end, size)
    if isinstance(from_end, int) and from_end <= 0:
        return INT64_MAX if from_end == 0 else from_end
    raise UnsupportedError(f"a slice ending at the symbolic position {end} of a dim of size {size} is known only "
                           "at run time; pin the dims it depends on (input_shapes=...)")


@register_onnx("Gather")
def gather(im: Importer, node: NodeProto) -> Value:
    data = im.input(node, 0)
    index_name = node.input[1] if im.has(node, 1) else ""
    if data.type.rank == 0:
        raise GraphoptError("Gather needs data of rank 1 or more, got a 0-d tensor")
    axis = im.axis(im.attrs(node).get("axis", 0), data.type.rank)
    if index_name in im.consts and im.consts[index_name].ndim == 0:
        return im.emit("select", [data], {"dim": axis, "index": int(im.consts[index_name])})
    idx = im.input(node, 1)
    if data.is_parameter and axis == 0 and data.type.rank == 2:
        return im.emit("embedding", [idx, data])
    return im.emit("index", [data, idx], {"dims": [axis]})


@register_onnx("GatherElements")
def gather_elements(im: Importer, node: NodeProto) -> Value:
    return im.emit("gather", [im.input(node, 0), im.input(node, 1)], {"dim": im.attrs(node).get("axis", 0)})


@register_onnx("GatherND")
def gather_nd(im: Importer, node: NodeProto) -> Value:
    if im.attrs(node).get("batch_dims", 0):
        raise UnsupportedError("GatherND with batch_dims is not supported")
    data, idx = im.input(node, 0), im.input(node, 1)
    (depth,) = im.static_dims(idx, [idx.type.rank - 1], "GatherND indices") if idx.type.rank else (0,)
    if not 1 <= depth <= data.type.rank:
        raise GraphoptError(f"GatherND indices {idx.type} must end in a size from 1 to the data's rank {data.type.rank}")
    parts = [im.emit("select", [idx], {"dim": -1, "index": i}) for i in range(depth)]
    return im.emit("index", [data, *parts], {"dims": list(range(depth))})


@register_onnx("Expand")
def expand(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    shape = im.dims(node, 1, "shape")
    if shape is None:
        raise GraphoptError("input 1 (shape) is missing")
    rank = max(len(shape), x.type.rank)
    src = [1] * (rank - x.type.rank) + list(x.shape)
    tgt = [1] * (rank - len(shape)) + shape
    out = [s if t == 1 else t for s, t in zip(src, tgt)]
    return im.emit("expand", [x], {"shape": out})


@register_onnx("Tile")
def tile(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    return im.emit("repeat", [x], {"repeats": im.ints(node, 1, "repeats", x.type.rank) or [1] * x.type.rank})


@register_onnx("Pad")
def pad(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    a = im.attrs(node)
    rank = x.type.rank
    axes = [im.axis(ax, rank) for ax in im.ints(node, 3, "axes") or range(rank)]
    n = len(axes)
    pads = a.get("pads")
    if pads is None:
        pads = im.ints(node, 1, "pads", 2 * n) or [0] * (2 * n)
    if len(pads) != 2 * n:
        raise GraphoptError(f"pads {list(pads)} must have {2 * n} values (two per padded axis)")
    fill = im.number(node, 2, "constant_value")
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
    if a.get("mode", "constant") not in modes:
        raise GraphoptError(f"mode {a['mode']!r} is not a Pad mode (constant, reflect, edge, wrap)")
    begin, end = dict(zip(axes, pads[:n])), dict(zip(axes, pads[n:]))
    if any(p < 0 for p in pads):
        raise UnsupportedError("negative pads (cropping) are not supported")
    first = min((d for d in axes if begin[d] or end[d]), default=rank - 1)
    torch_pad: list[int] = []
    for d in range(rank - 1, first - 1, -1):
        torch_pad += [begin.get(d, 0), end.get(d, 0)]
    fill = float(a.get("value", 0.0)) if fill is None else fill
    return im.emit("pad", [x], {"pad": torch_pad, "mode": modes[a.get("mode", "constant")], "value": fill})


@register_onnx("Einsum")
def einsum(im: Importer, node: NodeProto) -> Value:
    return im.emit("einsum", [im.value(n) for n in node.input], {"equation": im.attrs(node)["equation"]})


@register_onnx("Shape")
def shape(im: Importer, node: NodeProto) -> np.ndarray:
    x = im.input(node, 0)
    a = im.attrs(node)
    dims = x.shape[a.get("start", 0) : a.get("end", None)]
    if not all(isinstance(d, int) for d in dims):
        return dims_array(dims)  # symbolic: the shape arithmetic after it is evaluated on dims
    return np.asarray(dims, dtype=np.int64)


@register_onnx("Size")
def size(im: Importer, node: NodeProto) -> np.ndarray:
    x = im.input(node, 0)
    if not x.type.is_static:
        return dims_array([sym.prod(x.shape)]).reshape(())
    return np.asarray(x.type.numel, dtype=np.int64)


@register_onnx("ConstantOfShape")
def constant_of_shape(im: Importer, node: NodeProto) -> Value:
    """Reached only for a symbolic shape (a constant one is evaluated at import)."""
    fill = im.attrs(node).get("value")
    array = numpy_helper.to_array(fill).reshape(-1) if fill is not None else np.zeros(1, np.float32)
    return im.emit("full", [], {"shape": im.dims(node, 0, "shape"), "value": float(array[0]),
                                "dtype": DType.of(array.dtype)})


@register_onnx("Range")
def range_(im: Importer, node: NodeProto) -> Value:
    """Reached only for a symbolic limit (a constant range is evaluated at import)."""
    (first,), (last,), (delta,) = (im.const(node.input[i]).reshape(1) for i in range(3))
    if not all(isinstance(v, int | np.integer) for v in (first, delta)):
        raise UnsupportedError(f"Range from {first} by {delta}: only the limit may be a symbolic size")
    dtype = DType.of(im.const(node.input[0]).dtype)
    return arange_to(im.graph, float(first), last, float(delta), dtype, im.loc)


# --- layers -------------------------------------------------------------------------------------------
def _onnx_pads(im: Importer, node: NodeProto, x: Value, kernel: list[int], strides: list[int],
               dilations: list[int]) -> list[int]:
    """ONNX's pads (all begins, then all ends), auto_pad resolved: SAME pads depend on the size
    only for a stride above 1."""
    a = im.attrs(node)
    nsp = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise GraphoptError(f"auto_pad {auto!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return [0] * (2 * nsp) if auto == "VALID" else im.ints_attr(a, "pads", 2 * nsp, 0)
    pads = [0] * (2 * nsp)
    for i in range(nsp):
        if strides[i] == 1:
            total = dilations[i] * (kernel[i] - 1)
        else:
            (size,) = im.static_dims(x, [2 + i], f"auto_pad={auto} with stride {strides[i]}")
            total = max(0, (-(-size // strides[i]) - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - size)
        small, big = total // 2, total - total // 2
        pads[i], pads[nsp + i] = (small, big) if auto == "SAME_UPPER" else (big, small)
    return pads


def _padded(im: Importer, x: Value, pads: list[int], fill: float = 0.0) -> tuple[Value, list[int]]:
    """Symmetric pads for the IR op; asymmetric ones become an explicit pad node (of `fill`) first."""
    nsp = len(pads) // 2
    begin, end = pads[:nsp], pads[nsp:]
    if begin == end:
        return x, begin
    torch_pad: list[int] = []
    for i in range(nsp - 1, -1, -1):
        torch_pad += [begin[i], end[i]]
    return im.emit("pad", [x], {"pad": torch_pad, "value": fill}), [0] * nsp


def _spatial_pads(im: Importer, node: NodeProto, x: Value, kernel: list[int], strides: list[int],
                  dilations: list[int]) -> tuple[Value, list[int]]:
    return _padded(im, x, _onnx_pads(im, node, x, kernel, strides, dilations))


@register_onnx("Conv")
def conv(im: Importer, node: NodeProto) -> Value:
    x, w = im.input(node, 0), im.input(node, 1)
    a = im.attrs(node)
    nsp = w.type.rank - 2
    if nsp < 1:
        raise GraphoptError(f"a Conv weight has rank 3 or more, got {w.type}")
    if nsp > 3:
        raise UnsupportedError(f"{nsp}-d convolution is not supported (weight {w.type})")
    if x.type.rank != w.type.rank:
        raise GraphoptError(f"input {x.type} and weight {w.type} of a convolution must have the same rank")
    kernel = im.static_dims(w, range(2, 2 + nsp), "Conv weight")
    strides, dilations = im.ints_attr(a, "strides", nsp, 1), im.ints_attr(a, "dilations", nsp, 1)
    x, pads = _spatial_pads(im, node, x, kernel, strides, dilations)
    operands = [x, w] + ([im.input(node, 2)] if im.has(node, 2) else [])
    return im.emit(f"conv{nsp}d", operands, {"stride": strides, "padding": pads, "dilation": dilations,
                                              "groups": a.get("group", 1)})


@register_onnx("ConvTranspose")
def conv_transpose(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    if "output_shape" in a or a.get("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedError("ConvTranspose with output_shape or auto_pad is not supported; give explicit pads")
    operands = [im.input(node, 0), im.input(node, 1)] + ([im.input(node, 2)] if im.has(node, 2) else [])
    if operands[1].type.rank != 4:
        raise UnsupportedError(f"ConvTranspose with weight {operands[1].type} is not supported (2-d only)")
    pads = im.ints_attr(a, "pads", 4, 0)
    if pads[:2] != pads[2:]:
        raise UnsupportedError(f"asymmetric ConvTranspose pads {pads} are not supported")
    return im.emit("conv_transpose2d", operands, {
        "stride": im.ints_attr(a, "strides", 2, 1), "padding": pads[:2], "dilation": im.ints_attr(a, "dilations", 2, 1),
        "output_padding": im.ints_attr(a, "output_padding", 2, 0), "groups": a.get("group", 1)})


@register_onnx("Gemm")
def gemm(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    x = im.input(node, 0)
    if x.type.rank != 2 or im.input(node, 1).type.rank != 2:
        raise GraphoptError(f"Gemm takes 2-d A and B, got {x.type} and {im.input(node, 1).type}")
    if a.get("transA", 0):
        x = im.emit("permute", [x], {"dims": [1, 0]})
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    b_name = node.input[1]
    bias = None
    if im.has(node, 2):
        constant = im.consts.get(node.input[2])
        if constant is not None and constant.ndim == 2 and constant.shape[0] == 1:  # a [1, n] bias is [n]
            c = im.value(im.store(constant.reshape(-1)))
        else:
            c = im.input(node, 2)
        bias = c if beta == 1.0 else im.emit("mul", [c, im.scalar(beta, c)])
    if a.get("transB", 0) and alpha == 1.0 and (bias is None or bias.type.rank <= 1):
        w = im.value(b_name)
        if bias is not None and bias.shape != (w.shape[0],):
            bias = im.emit("expand", [bias], {"shape": [w.shape[0]]})
        return im.emit("linear", [x, w] + ([bias] if bias is not None else []))
    w = im.value(b_name)
    if a.get("transB", 0):
        w = im.emit("permute", [w], {"dims": [1, 0]})
    y = im.emit("matmul", [x, w])
    if alpha != 1.0:
        y = im.emit("mul", [y, im.scalar(alpha, y)])
    return y if bias is None else im.emit("add", [y, bias])


@register_onnx("BatchNormalization")
def batch_norm(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    if a.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
        raise UnsupportedError("BatchNormalization in training mode is not supported")
    x, scale, bias, mean, var = (im.input(node, i) for i in range(5))
    return im.emit("batch_norm", [x, mean, var, scale, bias], {"eps": a.get("epsilon", 1e-5)})


@register_onnx("LayerNormalization")
def layer_norm(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    x = im.input(node, 0)
    axis = im.axis(a.get("axis", -1), x.type.rank)
    if len([o for o in node.output if o]) > 1:
        raise UnsupportedError("LayerNormalization mean / inv_std_dev outputs are not supported")
    operands = [x, im.input(node, 1)] + ([im.input(node, 2)] if im.has(node, 2) else [])
    return im.emit("layer_norm", operands, {"normalized_shape": list(x.shape[axis:]), "eps": a.get("epsilon", 1e-5)})


@register_onnx("InstanceNormalization")
def instance_norm(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    (channels,) = im.static_dims(x, [1], "InstanceNormalization")
    return im.emit("group_norm", [x, im.input(node, 1), im.input(node, 2)],
                   {"num_groups": channels, "eps": im.attrs(node).get("epsilon", 1e-5)})


def _pool(im: Importer, node: NodeProto, op: str, **extra: Any) -> Value:
    """2-d pooling; 1-d pooling is the same over [N, C, 1, L]; 3-d pooling, which is separable (a
    max or mean over a box is one over its depth of one over its planes, the counts of real pixels
    multiplying), is a 2-d pool over H, W and then one over D."""
    a = im.attrs(node)
    x = im.input(node, 0)
    kernel = list(a["kernel_shape"])
    if len(kernel) not in (1, 2, 3):
        raise UnsupportedError(f"{len(kernel)}-d pooling is not supported (1-d, 2-d and 3-d are)")
    nsp, ceil = len(kernel), bool(a.get("ceil_mode", 0))
    strides, dilations = im.ints_attr(a, "strides", nsp, 1), im.ints_attr(a, "dilations", nsp, 1)
    pads = _onnx_pads(im, node, x, kernel, strides, dilations)
    if nsp == 1:
        flat = im.emit("unsqueeze", [x], {"dim": 2})
        pooled = _pool2d(im, flat, op, [1, *kernel], [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]],
                         ceil, extra)
        return im.emit("squeeze", [pooled], {"dims": [2]})
    if nsp == 3:
        n, c, d, _, _ = x.shape
        planes = im.emit("reshape", [x], {"shape": [n, sym.mul(c, d), *x.shape[3:]]})
        planes = _pool2d(im, planes, op, kernel[1:], strides[1:], dilations[1:], [*pads[1:3], *pads[4:6]], ceil, extra)
        h, w = planes.shape[2:]
        depth = im.emit("reshape", [planes], {"shape": [n, c, d, sym.mul(h, w)]})
        depth = _pool2d(im, depth, op, [kernel[0], 1], [strides[0], 1], [dilations[0], 1], [pads[0], 0, pads[3], 0],
                        ceil, extra)
        return im.emit("reshape", [depth], {"shape": [n, c, depth.shape[2], h, w]})
    return _pool2d(im, x, op, kernel, strides, dilations, pads, ceil, extra)


def _pool2d(im: Importer, x: Value, op: str, kernel: list[int], strides: list[int], dilations: list[int],
            pads: list[int], ceil_mode: bool, extra: dict[str, Any]) -> Value:
    attrs = {"kernel_size": kernel, "stride": strides, "ceil_mode": ceil_mode, **extra}
    if op == "max_pool2d":
        x, attrs["padding"] = _padded(im, x, pads, float("-inf"))
        return im.emit(op, [x], {**attrs, "dilation": dilations})
    padded, attrs["padding"] = _padded(im, x, pads)
    if padded is x or extra["count_include_pad"]:
        return im.emit(op, [padded], attrs)
    # asymmetric pads left out of the count: the window sum over the count of real pixels in it
    ones = im.emit("full_like", [x], {"value": 1.0})
    counted = im.emit(op, [_padded(im, ones, pads)[0]], {**attrs, "count_include_pad": True})
    summed = im.emit(op, [padded], {**attrs, "count_include_pad": True})
    return im.emit("div", [summed, counted])


@register_onnx("MaxPool")
def max_pool(im: Importer, node: NodeProto) -> list[Value]:
    if len(node.output) > 1 and node.output[1]:
        raise UnsupportedError("the MaxPool Indices output is not supported")
    return [_pool(im, node, "max_pool2d")]


@register_onnx("AveragePool")
def avg_pool(im: Importer, node: NodeProto) -> Value:
    return _pool(im, node, "avg_pool2d", count_include_pad=bool(im.attrs(node).get("count_include_pad", 0)))


def _spatial(im: Importer, node: NodeProto) -> Value:
    x = im.input(node, 0)
    if x.type.rank < 3:
        raise GraphoptError(f"{node.op_type} needs an N x C x spatial tensor, got {x.type}")
    return x


@register_onnx("GlobalAveragePool")
def global_avg_pool(im: Importer, node: NodeProto) -> Value:
    x = _spatial(im, node)
    if x.type.rank == 4:
        return im.emit("adaptive_avg_pool2d", [x], {"output_size": [1, 1]})
    return im.emit("mean", [x], {"dims": list(range(2, x.type.rank)), "keepdim": True})


@register_onnx("GlobalMaxPool")
def global_max_pool(im: Importer, node: NodeProto) -> Value:
    x = _spatial(im, node)
    return im.emit("amax", [x], {"dims": list(range(2, x.type.rank)), "keepdim": True})


@register_onnx("PRelu")
def prelu(im: Importer, node: NodeProto) -> Value:
    x, slope = im.input(node, 0), im.input(node, 1)
    negative = im.emit("minimum", [x, im.scalar(0.0, x)])
    return im.emit("add", [im.emit("relu", [x]), im.emit("mul", [negative, slope])])


def _scaled(size: Dim, scale: float) -> Dim:
    """floor(size * scale); for a symbolic size, with the scale as the exact fraction it is."""
    if isinstance(size, int):
        return int(np.floor(size * scale))
    ratio = Fraction(scale)
    return sym.floordiv(sym.mul(size, ratio.numerator), ratio.denominator)


@register_onnx("Resize", "Upsample")
def resize(im: Importer, node: NodeProto) -> Value:
    a = im.attrs(node)
    x = im.input(node, 0)
    mode = a.get("mode", "nearest")
    transform = a.get("coordinate_transformation_mode", "half_pixel")
    scales = im.opt_const(node, 1 if node.op_type == "Upsample" else 2)
    sizes = None if node.op_type == "Upsample" else im.ints(node, 3, "sizes")
    scales = None if scales is not None and scales.size == 0 else scales
    if scales is None and not sizes:
        raise GraphoptError("Resize needs scales or sizes")
    if scales is not None and (scales.shape != (x.type.rank,) or scales.dtype.kind != "f"
                               or not (np.isfinite(scales) & (scales > 0)).all()):
        raise GraphoptError(f"scales must be {x.type.rank} positive floats, got {scales.tolist()}")
    if sizes is not None and (len(sizes) != x.type.rank or min(sizes) < 1):
        raise GraphoptError(f"sizes {sizes} must be {x.type.rank} positive sizes")
    if x.type.rank != 4 or (scales is not None and tuple(scales[:2]) != (1.0, 1.0)):
        raise UnsupportedError("Resize is supported on the spatial dims of NCHW tensors only")
    size = sizes[2:] if sizes else [_scaled(d, float(s)) for d, s in zip(x.shape[2:], scales[2:])]
    if mode == "nearest" and transform == "asymmetric" and a.get("nearest_mode", "round_prefer_floor") == "floor":
        return im.emit("interpolate", [x], {"size": size, "mode": "nearest",
                                            "scales": None if scales is None else [float(s) for s in scales[2:]]})
    if mode == "linear" and transform in ("align_corners", "pytorch_half_pixel", "half_pixel"):
        if transform == "half_pixel" and 1 in size:
            raise UnsupportedError("half_pixel Resize to size 1 differs from torch's bilinear")
        return im.emit("interpolate", [x], {"size": size, "mode": "bilinear", "align_corners": transform == "align_corners",
                                            "scales": None if scales is None else [float(s) for s in scales[2:]]})
    raise UnsupportedError(f"Resize mode {mode!r} with coordinate_transformation_mode {transform!r} is not supported")


# --- quantization -------------------------------------------------------------------------------------------
def _qparams(im: Importer, node: NodeProto) -> tuple[np.ndarray, np.ndarray | None]:
    return im.const(node.input[1]), im.opt_const(node, 2)


@register_onnx("QuantizeLinear")
def quantize(im: Importer, node: NodeProto) -> Value:
    scale, zp = _qparams(im, node)
    dtype = DType.of(zp.dtype) if zp is not None else DType.uint8
    x = im.input(node, 0)
    if scale.size == 1:
        return im.emit("quantize_per_tensor", [x], {"scale": float(scale.reshape(-1)[0]),
                       "zero_point": int(zp.reshape(-1)[0]) if zp is not None else 0, "dtype": dtype})
    zps = zp if zp is not None else np.zeros(scale.shape, dtype.numpy)
    return im.emit("quantize_per_channel", [x, im.input(node, 1), im.value(im.store(zps))],
                   {"axis": im.attrs(node).get("axis", 1), "dtype": dtype})


@register_onnx("DequantizeLinear")
def dequantize(im: Importer, node: NodeProto) -> Value:
    scale, zp = _qparams(im, node)
    x = im.input(node, 0)
    if scale.size == 1:
        return im.emit("dequantize_per_tensor", [x], {"scale": float(scale.reshape(-1)[0]),
                       "zero_point": int(zp.reshape(-1)[0]) if zp is not None else 0})
    zps = zp if zp is not None else np.zeros(scale.shape, x.dtype.numpy)
    return im.emit("dequantize_per_channel", [x, im.input(node, 1), im.value(im.store(zps))],
                   {"axis": im.attrs(node).get("axis", 1)})
