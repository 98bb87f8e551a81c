"""PyTorch backend: the graph IR as a runnable, trainable torch.fx GraphModule.

Parameters become nn.Parameters (integer tensors become buffers) under their original state-dict
names, so a pruned graph loads, fine-tunes and saves like the model it came from. Dropout becomes an
nn.Dropout submodule, so `module.train()` turns it back on for fine-tuning."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F

from graphopt.errors import GraphoptError, expect_type
from graphopt.ir import symbolic as sym
from graphopt.ir.graph import Graph
from graphopt.ir.symbolic import Dim, Expr
from graphopt.ir.types import DType

TORCH_DTYPES = {DType.float32: torch.float32, DType.float16: torch.float16, DType.float64: torch.float64,
                DType.int64: torch.int64, DType.int32: torch.int32, DType.int16: torch.int16, DType.int8: torch.int8,
                DType.uint8: torch.uint8, DType.bool: torch.bool}
IMPLS: dict[str, Callable[..., Any]] = {}
MODULE_OPS = {"dropout"}  # lowered to submodules, so train() / eval() switch their behaviour


def implements(*ops: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op in ops:
            IMPLS[op] = fn
        return fn

    return add


def unsupported(graph: Graph) -> list[str]:
    """Every node this backend cannot lower (the capability check)."""
    return [f"{n.where}: no torch lowering for op {n.op!r}" for n in graph if n.op not in IMPLS and n.op not in MODULE_OPS]


def _attr_name(name: str) -> str:
    """A state-dict path made of valid attribute names ("layer1.0.conv.weight" stays as it is)."""
    parts = [re.sub(r"\W", "_", p) or "_" for p in name.split(".")]
    return ".".join(parts)


def _statistics(graph: Graph) -> set[int]:
    """Parameters that are not trained: batch-norm running statistics and scalar constants (but not
    fake-quantize scales, which qat learns)."""
    stats = {id(v) for n in graph if n.op == "batch_norm" for v in n.operands[1:3]}
    learned = {id(n.operands[1]) for n in graph if n.op in ("fake_quantize", "fake_binarize")}
    return stats | {id(p) for p in graph.parameters if p.type.rank == 0 and id(p) not in learned}


def _install(root: torch.nn.Module, path: str, tensor: torch.Tensor, trainable: bool) -> None:
    *parents, leaf = path.split(".")
    module = root
    for part in parents:
        if not hasattr(module, part):
            module.add_module(part, torch.nn.Module())
        module = getattr(module, part)
        if not isinstance(module, torch.nn.Module):
            raise GraphoptError(f"parameter path {path} collides with a parameter of the same prefix")
    if trainable and tensor.is_floating_point():
        module.register_parameter(leaf, torch.nn.Parameter(tensor))
    else:
        module.register_buffer(leaf, tensor)


def to_torch(graph: Graph) -> torch.fx.GraphModule:
    """A GraphModule computing `graph`; call it with torch tensors in the graph's input order."""
    expect_type(graph, Graph, "to_torch's graph")
    problems = unsupported(graph)
    if problems:
        raise GraphoptError("cannot lower to torch:\n  " + "\n  ".join(problems))
    root = torch.nn.Module()
    fx = torch.fx.Graph()
    env: dict[int, torch.fx.Node] = {}
    taken: set[str] = set()

    def unique(name: str) -> str:
        base = _attr_name(name) or "v"
        candidate, i = base, 1
        while candidate in taken:
            candidate, i = f"{base}_{i}", i + 1
        taken.add(candidate)
        return candidate

    symbols: dict[str, torch.fx.Node] = {}
    for v in graph.inputs:
        env[id(v)] = fx.placeholder(unique(v.name).replace(".", "_"))
        for dim, d in enumerate(v.shape):
            if isinstance(d, str) and d not in symbols:
                symbols[d] = fx.call_method("size", (env[id(v)], dim))
    frozen = _statistics(graph)
    for p in graph.parameters:
        if p.data is None:
            raise GraphoptError(f"parameter %{p.name} has no data; load the graph with its weights")
        path = unique(p.name)
        _install(root, path, torch.tensor(p.data.copy()), id(p) not in frozen)
        env[id(p)] = fx.get_attr(path)

    def size(d: Dim) -> Any:
        """`d` at run time: a symbol is an input's size(), an expression is arithmetic on them."""
        if isinstance(d, int):
            return d
        if isinstance(d, str):
            if d not in symbols:
                raise GraphoptError(f"the symbolic size {d} is carried by no graph input, so torch cannot compute it")
            return symbols[d]
        key = str(d)
        if key not in symbols:
            symbols[key] = sym.lower(d, size, lambda c: c, lambda op, x, y: fx.call_function(sym.INT_OPS[op], (x, y)))
        return symbols[key]

    def bind(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [bind(v) for v in value]
        if (isinstance(value, str) and value in symbols) or isinstance(value, Expr):
            return size(value)
        return TORCH_DTYPES[value] if isinstance(value, DType) else value

    dropouts = 0
    for node in graph:
        args = [env[id(v)] for v in node.operands]
        if node.op == "dropout":
            name = f"dropout_{dropouts}"
            dropouts += 1
            root.add_module(name, torch.nn.Dropout(node.attrs["p"]))
            out = fx.call_module(name, tuple(args))
        else:
            kwargs = {k: bind(v) for k, v in node.attrs.items()}
            out = fx.create_node("call_function", IMPLS[node.op], tuple(args), kwargs,
                                 name=unique(node.results[0].name or node.op).replace(".", "_"))
        out.meta["loc"] = node.loc
        if len(node.results) == 1:
            env[id(node.result)] = out
        else:
            for i, r in enumerate(node.results):
                env[id(r)] = fx.call_function(operator.getitem, (out, i))
    outputs = [env[id(v)] for v in graph.outputs]
    fx.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    return torch.fx.GraphModule(root, fx, class_name=graph.name)


def parameter_tensors(graph: Graph, module: torch.fx.GraphModule) -> dict[int, torch.Tensor]:
    """The trainable tensor of `module` (made by to_torch(graph)) behind each graph parameter, by id."""
    trainable = dict(module.named_parameters())
    targets = [n.target for n in module.graph.nodes if n.op == "get_attr"]  # one per parameter, in order
    return {id(p): trainable[t] for p, t in zip(graph.parameters, targets) if t in trainable}


# --- elementwise ---------------------------------------------------------------------------------------
for _op, _fn in {"relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "silu": F.silu,
                 "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish, "mish": F.mish, "tanh": torch.tanh,
                 "erf": torch.erf, "neg": torch.neg, "abs": torch.abs, "sin": torch.sin, "cos": torch.cos,
                 "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
                 "reciprocal": torch.reciprocal, "logical_not": torch.logical_not, "add": torch.add,
                 "sub": torch.sub, "mul": torch.mul, "pow": torch.pow, "maximum": torch.maximum,
                 "minimum": torch.minimum, "fmod": torch.fmod, "remainder": torch.remainder, "eq": torch.eq,
                 "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
                 "logical_and": torch.logical_and, "logical_or": torch.logical_or, "where": torch.where,
                 "clone": torch.clone, "softsign": F.softsign, "sign": torch.sign, "floor": torch.floor,
                 "ceil": torch.ceil, "celu": F.celu}.items():
    IMPLS[_op] = _fn


@implements("selu")
def selu(x: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x.clamp(max=0)))


@implements("shrink")
def shrink(x: torch.Tensor, bias: float, lambd: float) -> torch.Tensor:
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@implements("thresholded_relu")
def thresholded_relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > alpha, x, torch.zeros_like(x))


@implements("identity", "contiguous")
def identity(x: torch.Tensor) -> torch.Tensor:
    return x


@implements("leaky_relu")
def leaky_relu(x: torch.Tensor, negative_slope: float) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope)


@implements("elu")
def elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.elu(x, alpha)


@implements("hardtanh")
def hardtanh(x: torch.Tensor, min_val: float, max_val: float) -> torch.Tensor:
    return F.hardtanh(x, min_val, max_val)


@implements("clamp")
def clamp(x: torch.Tensor, min: float | None, max: float | None) -> torch.Tensor:
    if min is None and max is None:  # ONNX Clip without bounds (and numpy's clip) pass x through; torch refuses
        return x.clone()
    return torch.clamp(x, min, max)


@implements("gelu")
def gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


@implements("softplus")
def softplus(x: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
    return F.softplus(x, beta, threshold)


@implements("pow_scalar")
def pow_scalar(x: torch.Tensor, exponent: float) -> torch.Tensor:
    return torch.pow(x, exponent)


@implements("div")
def div(a: torch.Tensor, b: torch.Tensor, rounding_mode: str) -> torch.Tensor:
    return torch.div(a, b, rounding_mode=None if rounding_mode == "none" else rounding_mode)


# --- reductions -----------------------------------------------------------------------------------------
def _dims(x: torch.Tensor, dims: list[int] | None) -> tuple[int, ...]:
    return tuple(range(x.dim())) if dims is None else tuple(dims)


def reduction(op: str, fn: Callable[..., torch.Tensor]) -> None:
    def reduce(x: torch.Tensor, dims: list[int] | None, keepdim: bool) -> torch.Tensor:
        return fn(x, dim=_dims(x, dims), keepdim=keepdim) if x.dim() else x.clone()

    reduce.__name__ = op
    IMPLS[op] = reduce


for _op, _fn in {"mean": torch.mean, "sum": torch.sum, "amax": torch.amax, "amin": torch.amin, "any": torch.any,
                 "all": torch.all}.items():
    reduction(_op, _fn)


@implements("prod")
def prod(x: torch.Tensor, dims: list[int] | None, keepdim: bool) -> torch.Tensor:
    for d in sorted((d % max(x.dim(), 1) for d in _dims(x, dims)), reverse=True):
        x = torch.prod(x, d, keepdim=keepdim)
    return x


@implements("norm")
def norm(x: torch.Tensor, ord: float, dims: list[int] | None, keepdim: bool) -> torch.Tensor:
    return torch.linalg.vector_norm(x, ord, _dims(x, dims), keepdim)


@implements("var")
def var(x: torch.Tensor, dims: list[int] | None, correction: int, keepdim: bool) -> torch.Tensor:
    return torch.var(x, _dims(x, dims), correction=correction, keepdim=keepdim)


@implements("argmax")
def argmax(x: torch.Tensor, dim: int | None, keepdim: bool) -> torch.Tensor:
    return torch.argmax(x, dim, keepdim)


@implements("softmax")
def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return F.softmax(x, dim)


@implements("log_softmax")
def log_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return F.log_softmax(x, dim)


@implements("cumsum")
def cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.cumsum(x, dim, dtype=x.dtype)


# --- layout -------------------------------------------------------------------------------------------
@implements("reshape")
def reshape(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return torch.reshape(x, shape)


@implements("flatten")
def flatten(x: torch.Tensor, start_dim: int, end_dim: int) -> torch.Tensor:
    return torch.flatten(x, start_dim, end_dim)


@implements("permute")
def permute(x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    return x.permute(dims)


@implements("unsqueeze")
def unsqueeze(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.unsqueeze(dim)


@implements("squeeze")
def squeeze(x: torch.Tensor, dims: list[int] | None) -> torch.Tensor:
    return x.squeeze() if dims is None else x.squeeze(tuple(dims))


@implements("expand")
def expand(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    return x.expand(shape)


@implements("repeat")
def repeat(x: torch.Tensor, repeats: list[int]) -> torch.Tensor:
    return x.repeat(repeats)


@implements("cat")
def cat(*xs: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.cat(xs, dim)


@implements("split")
def split(x: torch.Tensor, split_sizes: list[int], dim: int) -> tuple[torch.Tensor, ...]:
    return torch.split(x, split_sizes, dim)


def _key(dim: int, item: Any) -> tuple[Any, ...]:
    return (slice(None),) * dim + (item,)


@implements("slice")
def slice_(x: torch.Tensor, dim: int, start: int | None, end: int | None, step: int) -> torch.Tensor:
    return x[_key(dim % x.dim(), slice(start, end, step))]


@implements("slice_scatter")
def slice_scatter(x: torch.Tensor, src: torch.Tensor, dim: int, start: int | None, end: int | None,
                  step: int) -> torch.Tensor:
    return torch.slice_scatter(x, src, dim, start, end, step)


@implements("select")
def select(x: torch.Tensor, dim: int, index: int) -> torch.Tensor:
    return torch.select(x, dim, index)


@implements("index")
def index(x: torch.Tensor, *indices: torch.Tensor, dims: list[int]) -> torch.Tensor:
    key: list[Any] = [slice(None)] * x.dim()
    for d, i in zip(dims, indices):
        key[d] = i
    return x[tuple(key)]


@implements("index_select")
def index_select(x: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.index_select(x, dim, idx)


@implements("gather")
def gather(x: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.gather(x, dim, idx)


@implements("pad")
def pad(x: torch.Tensor, pad: list[int], mode: str, value: float) -> torch.Tensor:
    return F.pad(x, pad, mode=mode, value=value if mode == "constant" else None)


@implements("roll")
def roll(x: torch.Tensor, shifts: list[int], dims: list[int]) -> torch.Tensor:
    return torch.roll(x, shifts, dims)


@implements("flip")
def flip(x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    return torch.flip(x, dims)


@implements("einsum")
def einsum(*xs: torch.Tensor, equation: str) -> torch.Tensor:
    return torch.einsum(equation, *xs)


# --- layers -------------------------------------------------------------------------------------------
_ACTIVATIONS: dict[str, Callable[[torch.Tensor, Any], torch.Tensor]] = {
    "none": lambda y, bounds: y,
    "relu": lambda y, bounds: F.relu(y),
    "relu6": lambda y, bounds: F.relu6(y),
    "hardswish": lambda y, bounds: F.hardswish(y),
    "silu": lambda y, bounds: F.silu(y),
    "gelu": lambda y, bounds: F.gelu(y),
    "clamp": lambda y, bounds: torch.clamp(y, bounds[0], bounds[1]),
}


@implements("conv1d", "conv2d", "conv3d")
def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *, stride: list[int],
         padding: list[int], dilation: list[int], groups: int, activation: str,
         activation_bounds: list[float] | None) -> torch.Tensor:
    fn = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[w.dim()]
    return _ACTIVATIONS[activation](fn(x, w, b, stride, padding, dilation, groups), activation_bounds)


@implements("conv_transpose2d")
def conv_transpose2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *, stride: list[int],
                     padding: list[int], output_padding: list[int], groups: int, dilation: list[int],
                     activation: str, activation_bounds: list[float] | None) -> torch.Tensor:
    y = F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation)
    return _ACTIVATIONS[activation](y, activation_bounds)


@implements("linear")
def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, *, activation: str = "none",
           activation_bounds: list[float] | None = None) -> torch.Tensor:
    return _ACTIVATIONS[activation](F.linear(x, w, b), activation_bounds)


@implements("matmul")
def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, b)


@implements("batch_norm")
def batch_norm(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: float) -> torch.Tensor:
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)


@implements("layer_norm")
def layer_norm(x: torch.Tensor, w: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
               normalized_shape: list[int], eps: float) -> torch.Tensor:
    return F.layer_norm(x, normalized_shape, w, b, eps)


@implements("group_norm")
def group_norm(x: torch.Tensor, w: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
               num_groups: int, eps: float) -> torch.Tensor:
    return F.group_norm(x, num_groups, w, b, eps)


@implements("local_response_norm")
def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    before = (size - 1) // 2  # ONNX's window, which differs from torch's for an even size
    squares = F.pad(x * x, [0, 0] * (x.dim() - 2) + [before, size - 1 - before])  # padded channels
    total = squares.unfold(1, size, 1).sum(-1)
    return x / (k + alpha / size * total) ** beta


@implements("max_pool2d")
def max_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               ceil_mode: bool, dilation: list[int]) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


@implements("avg_pool2d")
def avg_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool,
               count_include_pad: bool, divisor_override: int | None) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


@implements("adaptive_avg_pool2d")
def adaptive_avg_pool2d(x: torch.Tensor, output_size: list[int]) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, output_size)


@implements("scaled_dot_product_attention")
def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *, is_causal: bool,
         scale: float | None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal, scale=scale)


@implements("embedding")
def embedding(indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.embedding(indices, weight)


@implements("glu")
def glu(x: torch.Tensor, dim: int) -> torch.Tensor:
    return F.glu(x, dim)


@implements("interpolate")
def interpolate(x: torch.Tensor, size: list[int], mode: str, align_corners: bool,
                scales: list[float] | None) -> torch.Tensor:
    if scales:
        return F.interpolate(x, scale_factor=scales, mode=mode, align_corners=align_corners if mode != "nearest" else None)
    return F.interpolate(x, size, mode=mode, align_corners=align_corners if mode != "nearest" else None)


# --- creation -------------------------------------------------------------------------------------------
@implements("full")
def full(shape: list[int], value: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, value, dtype=dtype)


@implements("full_like")
def full_like(x: torch.Tensor, value: float, dtype: torch.dtype | None) -> torch.Tensor:
    return torch.full_like(x, value, dtype=dtype)


@implements("arange")
def arange(start: float, end: float, step: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(start, end, step).to(dtype)


@implements("to")
def to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype)


# --- quantization (integer tensors, the interpreter's exact semantics) --------------------------------------
def _range(dtype: torch.dtype, quant_min: int | None, quant_max: int | None) -> tuple[int, int]:
    info = torch.iinfo(dtype)
    return (info.min if quant_min is None else quant_min, info.max if quant_max is None else quant_max)


def _channel(p: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return p.reshape(shape)


@implements("quantize_per_tensor")
def quantize_per_tensor(x: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype, quant_min: int | None,
                        quant_max: int | None) -> torch.Tensor:
    lo, hi = _range(dtype, quant_min, quant_max)
    q = torch.round(x / torch.tensor(scale, dtype=torch.float32)) + zero_point
    return torch.clamp(q, lo, hi).to(dtype)


@implements("dequantize_per_tensor")
def dequantize_per_tensor(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return (q.to(torch.int32) - zero_point).to(torch.float32) * torch.tensor(scale, dtype=torch.float32)


@implements("quantize_per_channel")
def quantize_per_channel(x: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, axis: int,
                         dtype: torch.dtype, quant_min: int | None, quant_max: int | None) -> torch.Tensor:
    lo, hi = _range(dtype, quant_min, quant_max)
    q = torch.round(x / _channel(scales, x, axis)) + _channel(zero_points, x, axis).to(torch.float32)
    return torch.clamp(q, lo, hi).to(dtype)


@implements("dequantize_per_channel")
def dequantize_per_channel(q: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor,
                           axis: int) -> torch.Tensor:
    centered = q.to(torch.int32) - _channel(zero_points, q, axis).to(torch.int32)
    return centered.to(torch.float32) * _channel(scales, q, axis)


@implements("fake_quantize")
def fake_quantize(x: torch.Tensor, log2_scale: torch.Tensor, zero_point: int, quant_min: int, quant_max: int,
                  axis: int | None) -> torch.Tensor:
    """Quantize-dequantize with gradients: rounding passes the gradient straight through, the clamp
    stops it outside the range, and the scale learns through both (LSQ, Esser et al. 2020; its log2
    trained, as in TQT)."""
    scale = torch.exp2(log2_scale)
    s = scale if axis is None else _channel(scale, x, axis)
    v = x / s
    q = torch.clamp(v + (torch.round(v) - v).detach() + zero_point, quant_min, quant_max)
    return (q - zero_point) * s


@implements("fake_binarize")
def fake_binarize(x: torch.Tensor, log2_scale: torch.Tensor, axis: int | None) -> torch.Tensor:
    """+-scale by sign, the gradient passed straight through where |x| <= scale (BinaryConnect's
    clipped estimator) and the scale learned through the output."""
    scale = torch.exp2(log2_scale)
    s = scale if axis is None else _channel(scale, x, axis)
    clipped = torch.clamp(x / s, -1, 1)
    return (clipped + (torch.where(x >= 0, 1.0, -1.0) - clipped).detach()) * s
