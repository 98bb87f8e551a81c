"""ATen -> IR converters. Each takes the importer and an fx node and returns a Value (or a tuple for
multi-output ops). Shapes that torch computed symbolically (view, expand, full, ...) are read from
the node's metadata, so converters never re-derive them."""

from __future__ import annotations

from typing import Any

import torch.fx

from graphopt.errors import GraphoptError
from graphopt.frontends.common import arange_to
from graphopt.frontends.torch import SymDim, TorchImporter, register_aten
from graphopt.ir.types import DType
from graphopt.ir.value import Value

Node = torch.fx.Node


def arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def ints(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if any(isinstance(v, Node) for v in value):
        raise GraphoptError("a size argument is computed at run time (dynamic); export with static shapes")
    return [int(v) for v in value]


def out_dtype(cv: TorchImporter, node: Node) -> DType:
    return cv.meta_type(node).dtype


# --- elementwise --------------------------------------------------------------------------------------
def unary(op: str, *names: str, **fixed: Any) -> None:
    @register_aten(*names)
    def convert(cv: TorchImporter, node: Node) -> Value:
        return cv.emit(op, [cv.value(node.args[0])], dict(fixed))


for _op in ("relu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "erf", "neg", "abs", "sin", "cos",
            "reciprocal", "silu", "hardswish", "hardsigmoid", "mish", "logical_not"):
    unary(_op, f"{_op}.default", f"{_op}_.default")


@register_aten("gelu.default", "gelu_.default")
def gelu(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("gelu", [cv.value(node.args[0])], {"approximate": node.kwargs.get("approximate", "none")})


@register_aten("hardtanh.default", "hardtanh_.default")
def hardtanh(cv: TorchImporter, node: Node) -> Value:
    lo, hi = float(arg(node, 1, "min_val", -1.0)), float(arg(node, 2, "max_val", 1.0))
    if (lo, hi) == (0.0, 6.0):
        return cv.emit("relu6", [cv.value(node.args[0])])
    return cv.emit("hardtanh", [cv.value(node.args[0])], {"min_val": lo, "max_val": hi})


@register_aten("leaky_relu.default", "leaky_relu_.default")
def leaky_relu(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("leaky_relu", [cv.value(node.args[0])], {"negative_slope": float(arg(node, 1, "negative_slope", 0.01))})


@register_aten("elu.default", "elu_.default")
def elu(cv: TorchImporter, node: Node) -> Value:
    if arg(node, 2, "scale", 1) != 1 or arg(node, 3, "input_scale", 1) != 1:
        raise GraphoptError("elu with scale or input_scale is not supported")
    return cv.emit("elu", [cv.value(node.args[0])], {"alpha": float(arg(node, 1, "alpha", 1.0))})


@register_aten("softplus.default")
def softplus(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("softplus", [cv.value(node.args[0])],
                   {"beta": float(arg(node, 1, "beta", 1.0)), "threshold": float(arg(node, 2, "threshold", 20.0))})


@register_aten("clamp.default", "clamp_.default", "clamp_min.default", "clamp_max.default")
def clamp(cv: TorchImporter, node: Node) -> Value:
    name = str(node.target)
    lo = arg(node, 1, "min") if "clamp_max" not in name else None
    hi = arg(node, 2, "max") if "clamp." in name or "clamp_." in name else (
        arg(node, 1, "max") if "clamp_max" in name else None)
    x = cv.value(node.args[0])
    if not x.dtype.is_float:
        raise GraphoptError("clamp on integer tensors is not supported")
    return cv.emit("clamp", [x], {"min": None if lo is None else float(lo), "max": None if hi is None else float(hi)})


def binary(op: str, *names: str, compare: bool = False, swap: bool = False) -> None:
    @register_aten(*names)
    def convert(cv: TorchImporter, node: Node) -> Value:
        a, b = node.args[0], node.args[1]
        if swap:
            a, b = b, a
        dtype = cv.common_dtype(a, b) if compare else out_dtype(cv, node)
        x, y = cv.value(a, dtype), cv.value(b, dtype)
        alpha = node.kwargs.get("alpha", 1)
        if alpha != 1:
            y = cv.emit("mul", [y, cv.const(alpha, dtype)], name="")
        return cv.emit(op, [x, y])


def _variants(name: str, *overloads: str) -> list[str]:
    return [f"{n}.{o}" for n in (name, name + "_") for o in overloads]


binary("add", *_variants("add", "Tensor", "Scalar"))
binary("sub", *_variants("sub", "Tensor", "Scalar"))
binary("sub", "rsub.Scalar", "rsub.Tensor", swap=True)
binary("mul", *_variants("mul", "Tensor", "Scalar"))
binary("maximum", "maximum.default", "max.other")
binary("minimum", "minimum.default", "min.other")
binary("fmod", *_variants("fmod", "Tensor", "Scalar"))
binary("remainder", *_variants("remainder", "Tensor", "Scalar"))
binary("pow", "pow.Tensor_Tensor", "pow.Scalar")
for _op in ("eq", "ne", "lt", "le", "gt", "ge"):
    binary(_op, f"{_op}.Tensor", f"{_op}.Scalar", compare=True)
binary("logical_and", "logical_and.default", "__and__.Tensor", "bitwise_and.Tensor", compare=True)
binary("logical_or", "logical_or.default", "__or__.Tensor", "bitwise_or.Tensor", compare=True)


@register_aten("div.Tensor", "div.Scalar", "div_.Tensor", "div.Tensor_mode", "div.Scalar_mode", "floor_divide.default")
def div(cv: TorchImporter, node: Node) -> Value:
    mode = node.kwargs.get("rounding_mode") or ("floor" if "floor_divide" in str(node.target) else None)
    dtype = out_dtype(cv, node)
    x, y = cv.value(node.args[0], dtype), cv.value(node.args[1], dtype)
    return cv.emit("div", [x, y], {"rounding_mode": mode or "none"})


@register_aten("pow.Tensor_Scalar", "pow_.Scalar")
def pow_scalar(cv: TorchImporter, node: Node) -> Value:
    dtype = out_dtype(cv, node)
    x, exponent = cv.value(node.args[0], dtype), node.args[1]
    if dtype.is_float and isinstance(exponent, int | float):
        return cv.emit("pow_scalar", [x], {"exponent": float(exponent)})
    return cv.emit("pow", [x, cv.value(exponent, dtype)])


@register_aten("where.self", "where.ScalarOther", "where.ScalarSelf", "where.Scalar")
def where(cv: TorchImporter, node: Node) -> Value:
    dtype = out_dtype(cv, node)
    return cv.emit("where", [cv.value(node.args[0]), cv.value(node.args[1], dtype), cv.value(node.args[2], dtype)])


@register_aten("masked_fill.Scalar", "masked_fill.Tensor", "masked_fill_.Scalar")
def masked_fill(cv: TorchImporter, node: Node) -> Value:
    x = cv.value(node.args[0])
    return cv.emit("where", [cv.value(node.args[1]), cv.value(node.args[2], x.dtype), x])


# --- reductions ---------------------------------------------------------------------------------------
def reduction(op: str, *names: str, dim_index: int = 1) -> None:
    @register_aten(*names)
    def convert(cv: TorchImporter, node: Node) -> Value:
        dims = arg(node, dim_index, "dim")
        dims = None if dims is None or dims == [] else ints(dims)
        dtype = out_dtype(cv, node)
        x = cv.value(node.args[0], dtype if op in ("mean", "sum", "prod") else None)
        return cv.emit(op, [x], {"dims": dims, "keepdim": bool(arg(node, dim_index + 1, "keepdim", False))})


reduction("mean", "mean.dim", "mean.default")
reduction("sum", "sum.dim_IntList", "sum.default")
reduction("prod", "prod.dim_int", "prod.default")
reduction("amax", "amax.default")
reduction("amin", "amin.default")
reduction("any", "any.dim", "any.dims", "any.default")
reduction("all", "all.dim", "all.dims", "all.default")


@register_aten("linalg_vector_norm.default")
def vector_norm(cv: TorchImporter, node: Node) -> Value:
    dims = arg(node, 2, "dim")
    return cv.emit("norm", [cv.value(node.args[0])], {"ord": float(arg(node, 1, "ord", 2)),
                   "dims": None if dims is None else ints(dims), "keepdim": bool(arg(node, 3, "keepdim", False))})


@register_aten("var.correction", "var.dim")
def var(cv: TorchImporter, node: Node) -> Value:
    dims = arg(node, 1, "dim")
    correction = node.kwargs.get("correction", 1 if arg(node, 2, "unbiased", True) else 0)
    return cv.emit("var", [cv.value(node.args[0])], {"dims": None if dims is None else ints(dims),
                   "correction": int(correction), "keepdim": bool(node.kwargs.get("keepdim", False))})


@register_aten("argmax.default")
def argmax(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("argmax", [cv.value(node.args[0])], {"dim": arg(node, 1, "dim"),
                   "keepdim": bool(arg(node, 2, "keepdim", False))})


def along_axis(op: str, *names: str) -> None:
    @register_aten(*names)
    def convert(cv: TorchImporter, node: Node) -> Value:
        return cv.emit(op, [cv.value(node.args[0], out_dtype(cv, node))], {"dim": int(node.args[1])})


along_axis("softmax", "softmax.int", "_softmax.default", "_safe_softmax.default")
along_axis("log_softmax", "log_softmax.int", "_log_softmax.default")
along_axis("cumsum", "cumsum.default")


# --- layout ---------------------------------------------------------------------------------------------
@register_aten("view.default", "_unsafe_view.default", "reshape.default", "view_copy.default", "unflatten.int")
def reshape(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("reshape", [cv.value(node.args[0])], {"shape": list(cv.shape())})


@register_aten("flatten.using_ints")
def flatten(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("flatten", [cv.value(node.args[0])], {"start_dim": arg(node, 1, "start_dim", 0),
                   "end_dim": arg(node, 2, "end_dim", -1)})


@register_aten("permute.default")
def permute(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("permute", [cv.value(node.args[0])], {"dims": ints(node.args[1])})


@register_aten("transpose.int", "swapaxes.default", "t.default", "numpy_T.default")
def transpose(cv: TorchImporter, node: Node) -> Value:
    x = cv.value(node.args[0])
    rank = x.type.rank
    a, b = (node.args[1], node.args[2]) if len(node.args) > 2 else (0, 1)
    dims = list(range(rank))
    if rank >= 2:
        dims[a % rank], dims[b % rank] = dims[b % rank], dims[a % rank]
    return cv.emit("permute", [x], {"dims": dims})


@register_aten("unsqueeze.default")
def unsqueeze(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("unsqueeze", [cv.value(node.args[0])], {"dim": int(node.args[1])})


@register_aten("squeeze.dim", "squeeze.dims", "squeeze.default")
def squeeze(cv: TorchImporter, node: Node) -> Value:
    dims = arg(node, 1, "dim")
    return cv.emit("squeeze", [cv.value(node.args[0])], {"dims": None if dims is None else ints(dims)})


@register_aten("expand.default", "expand_as.default", "expand_copy.default")
def expand(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("expand", [cv.value(node.args[0])], {"shape": list(cv.shape())})


@register_aten("repeat.default")
def repeat(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("repeat", [cv.value(node.args[0])], {"repeats": ints(node.args[1])})


@register_aten("cat.default", "concat.default")
def cat(cv: TorchImporter, node: Node) -> Value:
    dtype = out_dtype(cv, node)
    parts = [cv.value(t, dtype) for t in node.args[0] if 0 not in cv.shape(t)]
    return cv.emit("cat", parts, {"dim": int(arg(node, 1, "dim", 0))})


@register_aten("stack.default")
def stack(cv: TorchImporter, node: Node) -> Value:
    dim = int(arg(node, 1, "dim", 0))
    rank = len(cv.shape())
    parts = [cv.emit("unsqueeze", [cv.value(t)], {"dim": dim % rank}, name="") for t in node.args[0]]
    return cv.emit("cat", parts, {"dim": dim % rank})


@register_aten("split.Tensor", "split_with_sizes.default", "chunk.default", "split.sizes", "unsafe_split.Tensor")
def split(cv: TorchImporter, node: Node) -> tuple[Value, ...]:
    dim = int(arg(node, 2, "dim", 0))
    sizes = [int(v.shape[dim]) for v in node.meta["val"]]
    out = cv.emit("split", [cv.value(node.args[0])], {"split_sizes": sizes, "dim": dim})
    return out if isinstance(out, tuple) else (out,)


@register_aten("unbind.int")
def unbind(cv: TorchImporter, node: Node) -> tuple[Value, ...]:
    x = cv.value(node.args[0])
    dim = int(arg(node, 1, "dim", 0)) % x.type.rank
    return tuple(cv.emit("select", [x], {"dim": dim, "index": i}, name=f"{node.name}_{i}")
                 for i in range(int(x.shape[dim])))


def _size_arg(cv: TorchImporter, value: Any) -> Any:
    """A size argument: a constant, or a symbolic size (a sym_size node or arithmetic on one)."""
    if not isinstance(value, Node):
        return value
    found = cv.env[value.name]
    if not isinstance(found, SymDim):
        raise GraphoptError(f"{value.name} is a tensor's value used as a size: data-dependent; export with static "
                            "sizes")
    return found.size


@register_aten("slice.Tensor", "slice_copy.Tensor")
def slice_(cv: TorchImporter, node: Node) -> Value:
    start, end = (_size_arg(cv, arg(node, i, name)) for i, name in ((2, "start"), (3, "end")))
    return cv.emit("slice", [cv.value(node.args[0])], {"dim": int(arg(node, 1, "dim", 0)), "start": start,
                   "end": end, "step": int(arg(node, 4, "step", 1))})


@register_aten("slice_scatter.default")
def slice_scatter(cv: TorchImporter, node: Node) -> Value:
    x = cv.value(node.args[0])
    return cv.emit("slice_scatter", [x, cv.value(node.args[1], x.dtype)], {
        "dim": int(arg(node, 2, "dim", 0)), "start": arg(node, 3, "start"), "end": arg(node, 4, "end"),
        "step": int(arg(node, 5, "step", 1))})


@register_aten("select.int", "select_copy.int")
def select(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("select", [cv.value(node.args[0])], {"dim": int(node.args[1]), "index": int(node.args[2])})


@register_aten("index.Tensor", "_unsafe_index.Tensor")
def index(cv: TorchImporter, node: Node) -> Value:
    pairs = [(d, i) for d, i in enumerate(node.args[1]) if i is not None]
    values = [cv.value(i) for _, i in pairs]
    if any(v.dtype is DType.bool for v in values):
        raise GraphoptError("boolean-mask indexing has a data-dependent shape; use torch.where instead")
    return cv.emit("index", [cv.value(node.args[0]), *values], {"dims": [d for d, _ in pairs]})


@register_aten("index_select.default")
def index_select(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("index_select", [cv.value(node.args[0]), cv.value(node.args[2])], {"dim": int(node.args[1])})


@register_aten("gather.default")
def gather(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("gather", [cv.value(node.args[0]), cv.value(node.args[2])], {"dim": int(node.args[1])})


@register_aten("pad.default", "constant_pad_nd.default")
def pad(cv: TorchImporter, node: Node) -> Value:
    widths = [_size_arg(cv, w) for w in node.args[1]]  # swin pads to a multiple of its window: symbolic
    constant = "constant_pad_nd" in str(node.target)
    mode = "constant" if constant else arg(node, 2, "mode", "constant")
    value = arg(node, 2 if constant else 3, "value", 0.0)
    if any(isinstance(w, int) and w < 0 for w in widths):
        raise GraphoptError("negative padding (cropping) is not supported")
    return cv.emit("pad", [cv.value(node.args[0])], {"pad": widths, "mode": mode, "value": float(value or 0.0)})


@register_aten("roll.default")
def roll(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("roll", [cv.value(node.args[0])], {"shifts": ints(node.args[1]), "dims": ints(arg(node, 2, "dims", []))})


@register_aten("flip.default")
def flip(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("flip", [cv.value(node.args[0])], {"dims": ints(node.args[1])})


@register_aten("einsum.default")
def einsum(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("einsum", [cv.value(t) for t in node.args[1]], {"equation": node.args[0]})


def passthrough(op: str, *names: str, **attrs: Any) -> None:
    @register_aten(*names)
    def convert(cv: TorchImporter, node: Node) -> Value:
        return cv.emit(op, [cv.value(node.args[0])], dict(attrs))


passthrough("clone", "clone.default", "lift_fresh_copy.default")
passthrough("contiguous", "contiguous.default")
passthrough("identity", "alias.default", "detach.default", "detach_.default")


@register_aten("dropout.default", "dropout_.default", "feature_dropout.default", "alpha_dropout.default")
def dropout(cv: TorchImporter, node: Node) -> Value:
    if arg(node, 2, "train", False):
        raise GraphoptError("dropout in training mode; call model.eval() before tracing")
    return cv.emit("dropout", [cv.value(node.args[0])], {"p": float(arg(node, 1, "p", 0.5))})


@register_aten("_to_copy.default", "to.dtype", "to.dtype_layout", "to.device", "type_as.default",
               "_to_dim_order_copy.default")
def to(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("to", [cv.value(node.args[0])], {"dtype": out_dtype(cv, node)})


# --- layers -------------------------------------------------------------------------------------------
def _conv_args(node: Node, first: int) -> dict[str, Any]:
    return {"stride": ints(arg(node, first, "stride", 1)), "padding": arg(node, first + 1, "padding", 0),
            "dilation": ints(arg(node, first + 2, "dilation", 1)), "groups": int(arg(node, first + 3, "groups", 1))}


def _explicit_padding(padding: Any, weight: Value, dilation: list[int]) -> list[int]:
    if not isinstance(padding, str):
        return ints(padding)
    if padding == "valid":
        return [0] * (weight.type.rank - 2)
    total = [d * (int(k) - 1) for d, k in zip(dilation * (weight.type.rank - 2), weight.shape[2:])]
    if any(t % 2 for t in total):
        raise GraphoptError("padding='same' with an even kernel pads unevenly; pad explicitly with F.pad")
    return [t // 2 for t in total]


@register_aten("conv2d.default", "conv2d.padding", "conv1d.default", "conv1d.padding")
def conv(cv: TorchImporter, node: Node) -> Value:
    x, w = cv.value(node.args[0]), cv.value(node.args[1])
    bias = arg(node, 2, "bias")
    attrs = _conv_args(node, 3)
    attrs["padding"] = _explicit_padding(attrs["padding"], w, attrs["dilation"])
    op = "conv2d" if "conv2d" in str(node.target) else "conv1d"
    return cv.emit(op, [x, w] + ([cv.value(bias)] if bias is not None else []), attrs)


@register_aten("conv_transpose2d.input")
def conv_transpose(cv: TorchImporter, node: Node) -> Value:
    x, w, bias = cv.value(node.args[0]), cv.value(node.args[1]), arg(node, 2, "bias")
    attrs = {"stride": ints(arg(node, 3, "stride", 1)), "padding": ints(arg(node, 4, "padding", 0)),
             "output_padding": ints(arg(node, 5, "output_padding", 0)), "groups": int(arg(node, 6, "groups", 1)),
             "dilation": ints(arg(node, 7, "dilation", 1))}
    return cv.emit("conv_transpose2d", [x, w] + ([cv.value(bias)] if bias is not None else []), attrs)


@register_aten("convolution.default")
def convolution(cv: TorchImporter, node: Node) -> Value:
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = node.args[:9]
    operands = [cv.value(x), cv.value(w)] + ([cv.value(bias)] if bias is not None else [])
    nsp = cv.value(w).type.rank - 2
    attrs = {"stride": ints(stride), "padding": ints(padding), "dilation": ints(dilation), "groups": int(groups)}
    if transposed:
        if nsp != 2:
            raise GraphoptError("only 2-d transposed convolution is supported")
        return cv.emit("conv_transpose2d", operands, {**attrs, "output_padding": ints(output_padding)})
    if nsp not in (1, 2):
        raise GraphoptError(f"{nsp}-d convolution is not supported")
    return cv.emit(f"conv{nsp}d", operands, attrs)


@register_aten("linear.default")
def linear(cv: TorchImporter, node: Node) -> Value:
    bias = arg(node, 2, "bias")
    operands = [cv.value(node.args[0]), cv.value(node.args[1])] + ([cv.value(bias)] if bias is not None else [])
    return cv.emit("linear", operands)


@register_aten("matmul.default", "mm.default", "bmm.default")
def matmul(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("matmul", [cv.value(node.args[0]), cv.value(node.args[1])])


@register_aten("addmm.default")
def addmm(cv: TorchImporter, node: Node) -> Value:
    if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        raise GraphoptError("addmm with alpha or beta is not supported")
    product = cv.emit("matmul", [cv.value(node.args[1]), cv.value(node.args[2])], name="")
    return cv.emit("add", [product, cv.value(node.args[0])])


def _affine(cv: TorchImporter, value: Any, channels: int, fill: float, dtype: DType) -> Value:
    import numpy as np

    if value is not None:
        return cv.value(value)
    return cv.graph.add_parameter(np.full(channels, fill, dtype=dtype.numpy), f"_{'ones' if fill else 'zeros'}_{channels}")


def _batch_norm(cv: TorchImporter, node: Node, x: Any, w: Any, b: Any, mean: Any, var: Any, eps: float) -> Value:
    xv = cv.value(x)
    c = int(xv.shape[1])
    operands = [xv, cv.value(mean), cv.value(var), _affine(cv, w, c, 1.0, xv.dtype), _affine(cv, b, c, 0.0, xv.dtype)]
    return cv.emit("batch_norm", operands, {"eps": float(eps)})


@register_aten("batch_norm.default")
def batch_norm(cv: TorchImporter, node: Node) -> Value:
    x, w, b, mean, var, training, _, eps = node.args[:8]
    if training or mean is None:
        raise GraphoptError("batch norm in training mode; call model.eval() before tracing")
    return _batch_norm(cv, node, x, w, b, mean, var, eps)


@register_aten("_native_batch_norm_legit_no_training.default")
def batch_norm_no_training(cv: TorchImporter, node: Node) -> tuple[Value, None, None]:
    x, w, b, mean, var, _, eps = node.args[:7]
    return _batch_norm(cv, node, x, w, b, mean, var, eps), None, None


@register_aten("layer_norm.default")
def layer_norm(cv: TorchImporter, node: Node) -> Value:
    w, b = arg(node, 2, "weight"), arg(node, 3, "bias")
    x = cv.value(node.args[0])
    operands = [x] + [cv.value(p) for p in (w, b) if p is not None]
    if w is None and b is not None:
        operands = [x, _affine(cv, None, int(x.shape[-1]), 1.0, x.dtype), cv.value(b)]
    return cv.emit("layer_norm", operands, {"normalized_shape": ints(node.args[1]),
                   "eps": float(arg(node, 4, "eps", 1e-5))})


@register_aten("native_layer_norm.default")
def native_layer_norm(cv: TorchImporter, node: Node) -> tuple[Value, None, None]:
    return layer_norm(cv, node), None, None


@register_aten("group_norm.default")
def group_norm(cv: TorchImporter, node: Node) -> Value:
    x, groups, w, b = cv.value(node.args[0]), int(node.args[1]), arg(node, 2, "weight"), arg(node, 3, "bias")
    c = int(x.shape[1])
    return cv.emit("group_norm", [x, _affine(cv, w, c, 1.0, x.dtype), _affine(cv, b, c, 0.0, x.dtype)],
                   {"num_groups": groups, "eps": float(arg(node, 4, "eps", 1e-5))})


@register_aten("max_pool2d.default", "max_pool2d_with_indices.default")
def max_pool2d(cv: TorchImporter, node: Node) -> Any:
    kernel = ints(node.args[1])
    stride = ints(arg(node, 2, "stride", []) or kernel)
    out = cv.emit("max_pool2d", [cv.value(node.args[0])], {
        "kernel_size": kernel, "stride": stride, "padding": ints(arg(node, 3, "padding", 0)),
        "dilation": ints(arg(node, 4, "dilation", 1)), "ceil_mode": bool(arg(node, 5, "ceil_mode", False))})
    return (out, None) if "with_indices" in str(node.target) else out


@register_aten("avg_pool2d.default")
def avg_pool2d(cv: TorchImporter, node: Node) -> Value:
    kernel = ints(node.args[1])
    return cv.emit("avg_pool2d", [cv.value(node.args[0])], {
        "kernel_size": kernel, "stride": ints(arg(node, 2, "stride", []) or kernel),
        "padding": ints(arg(node, 3, "padding", 0)), "ceil_mode": bool(arg(node, 4, "ceil_mode", False)),
        "count_include_pad": bool(arg(node, 5, "count_include_pad", True)),
        "divisor_override": arg(node, 6, "divisor_override")})


@register_aten("adaptive_avg_pool2d.default", "_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("adaptive_avg_pool2d", [cv.value(node.args[0])], {"output_size": ints(node.args[1])})


@register_aten("scaled_dot_product_attention.default")
def sdpa(cv: TorchImporter, node: Node) -> Value:
    if node.kwargs.get("enable_gqa"):
        raise GraphoptError("grouped-query attention (enable_gqa) is not supported")
    mask = arg(node, 3, "attn_mask")
    operands = [cv.value(a) for a in node.args[:3]] + ([cv.value(mask)] if mask is not None else [])
    return cv.emit("scaled_dot_product_attention", operands, {
        "is_causal": bool(arg(node, 5, "is_causal", False)), "scale": node.kwargs.get("scale")})


@register_aten("embedding.default")
def embedding(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("embedding", [cv.value(node.args[1]), cv.value(node.args[0])])


@register_aten("glu.default")
def glu(cv: TorchImporter, node: Node) -> Value:
    return cv.emit("glu", [cv.value(node.args[0])], {"dim": int(arg(node, 1, "dim", -1))})


# --- creation -------------------------------------------------------------------------------------------
@register_aten("full.default", "zeros.default", "ones.default", "new_zeros.default", "new_ones.default",
               "new_full.default", "scalar_tensor.default", "empty.memory_format", "new_empty.default")
def full(cv: TorchImporter, node: Node) -> Value:
    name = str(node.target)
    if "zeros" in name or "empty" in name:
        value = 0.0
    elif "ones" in name:
        value = 1.0
    elif "scalar_tensor" in name:
        value = node.args[0]
    else:
        value = node.args[-1]
    return cv.emit("full", [], {"shape": list(cv.shape()), "value": float(value), "dtype": out_dtype(cv, node)})


@register_aten("full_like.default", "zeros_like.default", "ones_like.default", "empty_like.default", "fill.Scalar",
               "fill_.Scalar", "zero.default", "zero_.default")
def full_like(cv: TorchImporter, node: Node) -> Value:
    name = str(node.target)
    value = 1.0 if "ones" in name else 0.0 if "zero" in name or "empty" in name else node.args[1]
    return cv.emit("full_like", [cv.value(node.args[0])], {"value": float(value), "dtype": out_dtype(cv, node)})


@register_aten("fill.Tensor", "fill_.Tensor", "copy.default", "copy_.default")
def fill_from(cv: TorchImporter, node: Node) -> Value:
    dtype = out_dtype(cv, node)
    return cv.emit("expand", [cv.value(node.args[1], dtype)], {"shape": list(cv.shape())})


@register_aten("arange.default", "arange.start", "arange.start_step")
def arange(cv: TorchImporter, node: Node) -> Value:
    bounds = [cv.env[a.name] if isinstance(a, Node) else a for a in node.args if not isinstance(a, torch.dtype)]
    start, end, step = (0, bounds[0], 1) if len(bounds) == 1 else (bounds[0], bounds[1], bounds[2] if len(bounds) > 2 else 1)
    if isinstance(start, SymDim | Value) or isinstance(step, SymDim | Value):
        raise GraphoptError("arange from or by a size computed at run time is not supported; only its end may be one")
    if isinstance(end, SymDim):  # up to a symbolic size (positions over a dynamic sequence length)
        return arange_to(cv.graph, float(start), end.size, float(step), out_dtype(cv, node), cv.loc)
    if isinstance(end, Value):
        raise GraphoptError("arange up to a tensor's value is data-dependent; export with static bounds")
    return cv.emit("arange", [], {"start": float(start), "end": float(end), "step": float(step),
                                  "dtype": out_dtype(cv, node)})


@register_aten("upsample_bilinear2d.vec", "upsample_nearest2d.vec", "upsample_bilinear2d.default",
               "upsample_nearest2d.default")
def upsample(cv: TorchImporter, node: Node) -> Value:
    name = str(node.target)
    bilinear = "bilinear" in name
    if name.endswith(".vec"):
        align = bool(node.args[2]) if bilinear else False
        scales = node.args[3] if bilinear else node.args[2]
    else:
        align = bool(arg(node, 2, "align_corners", False)) if bilinear else False
        scales = [s for s in node.args[3:5] if s is not None] if bilinear else [s for s in node.args[2:4] if s is not None]
    return cv.emit("interpolate", [cv.value(node.args[0])], {
        "size": list(cv.shape()[2:]), "mode": "bilinear" if bilinear else "nearest", "align_corners": align,
        "scales": [float(s) for s in scales] if scales else None})
