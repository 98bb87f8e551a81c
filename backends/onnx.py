"""ONNX backend (fp32): the graph IR as an ONNX model (opset 17) that ONNX Runtime runs.

Tensor names are the IR's printed names (state-dict names for weights) and node names come from
`loc`, so a person recognises their layers in Netron. `unsupported(graph)` is the capability check:
it lists every node this emitter cannot lower, before any work is done."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.errors import FileError, GraphoptError, expect_type
from graphopt.fileio import check_writable
from graphopt.ir import symbolic as sym
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.printer import Namer
from graphopt.ir.symbolic import Dim
from graphopt.ir.types import DType, TensorType
from graphopt.ir.value import Value
from graphopt.ops.quant import DEQUANTIZE_OPS
from graphopt.ops.registry import get_op

OPSET = 17
INT64_MAX = 2**63 - 1
EXTERNAL_DATA_BYTES = 1 << 30  # larger models keep their weights in a side .data file

Emitter = Callable[["OnnxEmitter", Node], None]
EMITTERS: dict[str, Emitter] = {}
# Ops that lower only under conditions; the check returns a reason when it cannot.
CONDITIONS: dict[str, Callable[[Node], str | None]] = {}


def emits(*ops: str, condition: Callable[[Node], str | None] | None = None) -> Callable[[Emitter], Emitter]:
    def add(fn: Emitter) -> Emitter:
        for op in ops:
            EMITTERS[op] = fn
            if condition is not None:
                CONDITIONS[op] = condition
        return fn

    return add


def onnx_dtype(dtype: DType) -> int:
    return helper.np_dtype_to_tensor_dtype(dtype.numpy)


def unsupported(graph: Graph) -> list[str]:
    """Every node the ONNX emitter cannot lower, with the reason."""
    problems = []
    for node in graph:
        if node.op not in EMITTERS:
            problems.append(f"{node.where}: no ONNX lowering for op {node.op!r}")
        elif node.op in CONDITIONS and (reason := CONDITIONS[node.op](node)):
            problems.append(f"{node.where}: {reason}")
    return problems


class OnnxEmitter:
    """Lowers a Graph to an ONNX model. With `parameters_as_inputs` the weights become graph inputs
    fed at run time instead of being copied into the file (graphopt.quant.runner: a search builds a
    model per candidate, and copying the weights costs more than running it)."""

    def __init__(self, graph: Graph, parameters_as_inputs: bool = False) -> None:
        self.graph = graph
        self.parameters_as_inputs = parameters_as_inputs
        self.names = Namer()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._node_names: set[str] = set()
        self._fresh = 0
        self._dims: dict[str, str] = {}  # a size's text -> the tensor computing it
        self.current: Node | None = None

    # --- helpers ----------------------------------------------------------------------------------
    def name(self, value: Value) -> str:
        return self.names(value)

    def ins(self, node: Node) -> list[str]:
        return [self.name(v) for v in node.operands]

    def out(self, node: Node, index: int = 0) -> str:
        return self.name(node.results[index])

    def tmp(self, hint: str = "t") -> str:
        self._fresh += 1
        base = self.current.loc if self.current is not None and self.current.loc else "tmp"
        return f"{base}/{hint}_{self._fresh}"

    def const(self, array: Any, dtype: Any = None, hint: str = "const") -> str:
        name = self.tmp(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint=hint)

    def add(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str] | None = None, **attrs: Any) -> str:
        """Append an ONNX node; returns its first output (a fresh name unless given)."""
        outputs = list(outputs) if outputs is not None else [self.tmp(op_type.lower())]
        loc = self.current.loc if self.current is not None and self.current.loc else op_type
        name = f"{loc}/{op_type}" if self.current is not None and self.current.loc else op_type
        base, i = name, 1
        while name in self._node_names:
            i += 1
            name = f"{base}_{i}"
        self._node_names.add(name)
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs[0]

    def simple(self, node: Node, op_type: str, **attrs: Any) -> None:
        self.add(op_type, self.ins(node), [self.out(node)], **attrs)

    def dim(self, d: Dim) -> str:
        """A 1-element int64 tensor holding the size `d` at run time: symbols are read off the graph
        input that carries them (Shape), expressions computed with Add/Mul/Div/Mod/Max/Min."""
        if isinstance(d, int):
            return self.ints([d], "dim")
        key = str(d)
        if key not in self._dims:
            self._dims[key] = self._symbol(d) if isinstance(d, str) else \
                sym.lower(d, self.dim, lambda c: self.ints([c], "dim"), self._size_op)
        return self._dims[key]

    def _symbol(self, name: str) -> str:
        for v in self.graph.inputs:
            if name in v.shape:
                axis = v.shape.index(name)
                return self.add("Shape", [self.name(v)], start=axis, end=axis + 1)
        raise GraphoptError(f"the symbolic size {name} is carried by no graph input, so ONNX cannot compute it")

    def _size_op(self, op: str, x: str, y: str) -> str:
        if op == "ceildiv":  # sizes are non-negative: ceil(a / b) = (a + b - 1) // b
            x = self.add("Sub", [self.add("Add", [x, y]), self.ints([1], "dim")])
        return self.add(SIZE_OPS[op], [x, y])

    def reshape_shape(self, source: TensorType, target: TensorType) -> str:
        """The shape input of a Reshape from `source` to `target`."""
        shape = reshape_target(source, target)
        return self.ints(shape) if shape is not None else self.shape(target.shape)

    def shape(self, dims: Sequence[Dim]) -> str:
        """A 1-D int64 tensor holding `dims` at run time (computed once per distinct shape)."""
        if all(isinstance(d, int) for d in dims):
            return self.ints(dims)  # type: ignore[arg-type]
        key = "shape:" + ",".join(map(str, dims))
        if key not in self._dims:
            self._dims[key] = self.add("Concat", [self.dim(d) for d in dims], axis=0)
        return self._dims[key]

    # --- model ------------------------------------------------------------------------------------
    def value_info(self, value: Value) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(self.name(value), onnx_dtype(value.dtype), onnx_dims(value.shape))

    def symbolic_value_info(self) -> list[onnx.ValueInfoProto]:
        """The sizes of intermediate values with symbolic dims. ONNX Runtime's own inference loses a
        size that went through shape arithmetic (Shape -> Concat -> Reshape), and its fusions (skip
        layer norm, attention) need the dims of both operands to match."""
        produced = {name for node in self.nodes for name in node.output}
        outputs = {id(v) for v in self.graph.outputs}
        return [self.value_info(v) for node in self.graph for v in node.results
                if id(v) not in outputs and not all(isinstance(d, int) for d in v.shape)
                and self.name(v) in produced]

    def build(self, opset: int) -> onnx.ModelProto:
        problems = unsupported(self.graph)
        if problems:
            raise GraphoptError("cannot lower to ONNX:\n  " + "\n  ".join(problems))
        inputs = [self.value_info(v) for v in self.graph.inputs]
        for p in self.graph.parameters:
            if p.data is None:
                raise GraphoptError(f"parameter %{p.name} has no data; load the graph with its weights")
        for node in self.graph:
            self.current = node
            EMITTERS[node.op](self, node)
        self.current = None
        outputs = []
        for i, v in enumerate(self.graph.outputs):
            if v.producer is None or any(v is o for o in self.graph.outputs[:i]):
                # ONNX outputs must be distinct node outputs: route inputs/parameters/repeats through Identity.
                alias = self.tmp("output")
                self.add("Identity", [self.name(v)], [alias])
                outputs.append(helper.make_tensor_value_info(alias, onnx_dtype(v.dtype), onnx_dims(v.shape)))
            else:
                outputs.append(self.value_info(v))
        read = {name for node in self.nodes for name in node.input}
        for p in self.graph.parameters:  # one read only by a dequantize folded into its reader is left out
            if self.name(p) not in read:
                continue
            if self.parameters_as_inputs:
                inputs.append(self.value_info(p))
            else:
                self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(p.data), self.name(p)))
        g = helper.make_graph(self.nodes, self.graph.name, inputs, outputs, self.initializers,
                              value_info=self.symbolic_value_info())
        domains = [helper.make_opsetid("", opset)]
        if any(node.domain == MS_DOMAIN for node in self.nodes):
            domains.append(helper.make_opsetid(MS_DOMAIN, 1))
        model = helper.make_model(g, opset_imports=domains, producer_name="graphopt")
        model.ir_version = min(model.ir_version, 8)
        return model


# MatMulNBits computes in fp32 from the packed weights (level 0); level 4 also quantizes the activations
# to int8 per block. Measured on all-MiniLM-L6-v2 (128 tokens, group 32, AVX-512 VNNI, 1 thread): for
# 4-bit weights level 4 was no faster (23.99 against 21.29 ms) and further from the model, so level 0;
# for 8-bit weights (every linear, size=19.9) level 0 ran 1.45x fp32 and level 4 0.88x, with the hard
# texts' cosine min 0.9903 against 0.9901, so level 4 (its activation rounding is the only difference
# from the interpreter there).
ACCURACY_LEVEL = {4: 0, 8: 4}
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops (MatMulNBits)
SIZE_OPS = {"+": "Add", "*": "Mul", "//": "Div", "ceildiv": "Div", "%": "Mod", "max": "Max", "min": "Min"}


def onnx_dims(shape: Sequence[Dim]) -> list[int | str]:
    """Value-info dims: sizes, and symbolic ones as their text (a dim_param)."""
    return [d if isinstance(d, int) else str(d) for d in shape]


def to_onnx(graph: Graph, path: str | os.PathLike[str] | None = None, *, opset: int = OPSET,
            packed: bool = False) -> onnx.ModelProto:
    """Lower `graph` to ONNX; with `path`, also write it there atomically (weights over 1 GiB go to a
    side `<name>.data` file). `packed` stores ternary / binary / 4-bit weights in INT2 / INT4 (opset
    25): a smaller file, the same int8 kernels (backends/onnx_packing.py)."""
    expect_type(graph, Graph, "to_onnx's graph")
    model = OnnxEmitter(graph).build(opset)
    if packed:
        from graphopt.backends.onnx_packing import pack_weights

        model, _ = pack_weights(model)
    big = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    if not big:
        onnx.checker.check_model(model)
    if path is not None:
        save_model(model, Path(path), external=big)
        if big:
            onnx.checker.check_model(str(path))
    return model


def save_model(model: onnx.ModelProto, path: Path, *, external: bool) -> None:
    """Write next to the target, then rename, so a failed write never leaves a partial model."""
    try:
        _stage_and_rename(model, path, external)
    except OSError as e:
        raise FileError(f"cannot write {path}: {e.strerror or e}") from None
    if external:  # saving moved the weights out of `model`; read them back so the caller's proto is whole
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))


def _stage_and_rename(model: onnx.ModelProto, path: Path, external: bool) -> None:
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        location = path.name + ".data"
        if external:
            # Small tensors stay inline: ONNX Runtime reads shape inputs (Reshape targets) at load time.
            onnx.save_model(model, staged, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=location, size_threshold=1024)
            if (Path(tmp) / location).exists():
                os.replace(Path(tmp) / location, path.parent / location)
        else:
            onnx.save_model(model, staged)
        os.replace(staged, path)


# --- elementwise ---------------------------------------------------------------------------------------
for _op, _onnx in {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log",
                   "sqrt": "Sqrt", "erf": "Erf", "neg": "Neg", "abs": "Abs", "sin": "Sin", "cos": "Cos",
                   "reciprocal": "Reciprocal", "logical_not": "Not", "hardswish": "HardSwish",
                   "add": "Add", "sub": "Sub", "mul": "Mul", "pow": "Pow", "maximum": "Max", "minimum": "Min",
                   "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual",
                   "logical_and": "And", "logical_or": "Or", "where": "Where", "matmul": "MatMul",
                   "identity": "Identity", "clone": "Identity", "contiguous": "Identity",
                   "dropout": "Identity", "softsign": "Softsign", "sign": "Sign", "floor": "Floor",
                   "ceil": "Ceil"}.items():
    emits(_op)(lambda e, n, t=_onnx: e.simple(n, t))
for _op, _onnx in {"selu": "Selu", "celu": "Celu", "shrink": "Shrink", "thresholded_relu": "ThresholdedRelu"}.items():
    emits(_op)(lambda e, n, t=_onnx: e.simple(n, t, **n.attrs))  # the IR's attribute names are ONNX's


@emits("einsum")
def _einsum(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "Einsum", equation=n.attrs["equation"])


@emits("embedding")
def _embedding(e: OnnxEmitter, n: Node) -> None:
    dq = _packed_weight(n)
    if dq is None:
        indices, weight = e.ins(n)
        e.add("Gather", [weight, indices], [e.out(n)], axis=0)
        return
    rows, width = (int(d) for d in n.operands[1].shape)  # type: ignore[arg-type]
    bits, group = _packed_bits(dq), dq.operands[0].shape[1]
    table = e.tmp("table")
    if bits == 4:  # signed int4 (zero points 0 by default), two a byte, low nibble first
        flat = (dq.operands[0].data.astype(np.uint8) & 15).reshape(-1)  # type: ignore[union-attr]
        e.initializers.append(helper.make_tensor(table, TensorProto.INT4, [rows, width],
                                                 (flat[0::2] | (flat[1::2] << 4)).tobytes(), raw=True))
        zero = []
    else:  # uint8 around 128
        e.initializers.append(numpy_helper.from_array(_packed(dq, 8).reshape(rows, width), table))
        zero = [e.const(np.full((rows, width // group), 128, np.uint8), hint="zero_point")]
    scales = dq.operands[1].data.astype(np.float32).reshape(rows, -1)  # type: ignore[union-attr]
    e.add("GatherBlockQuantized", [table, e.ins(n)[0], e.const(scales, hint="scales"), *zero], [e.out(n)],
          domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=group, bits=bits)


def _scalar(e: OnnxEmitter, value: float, like: Value) -> str:
    return e.const(np.asarray(value, dtype=like.dtype.numpy))


@emits("relu6", "hardtanh", "clamp")
def _clip(e: OnnxEmitter, n: Node) -> None:
    x = n.operands[0]
    lo, hi = {"relu6": (0.0, 6.0), "hardtanh": (n.attrs.get("min_val"), n.attrs.get("max_val")),
              "clamp": (n.attrs.get("min"), n.attrs.get("max"))}[n.op]
    bounds = ["" if b is None else _scalar(e, b, x) for b in (lo, hi)]
    e.add("Clip", [e.name(x), *bounds], [e.out(n)])


@emits("leaky_relu")
def _leaky(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "LeakyRelu", alpha=n.attrs["negative_slope"])


@emits("elu")
def _elu(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "Elu", alpha=n.attrs["alpha"])


@emits("hardsigmoid")
def _hardsigmoid(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "HardSigmoid", alpha=1 / 6, beta=0.5)


@emits("silu")
def _silu(e: OnnxEmitter, n: Node) -> None:
    (x,) = e.ins(n)
    e.add("Mul", [x, e.add("Sigmoid", [x])], [e.out(n)])


def _softplus(e: OnnxEmitter, x: str, beta: float, like: Value) -> str:
    if beta == 1.0:
        return e.add("Softplus", [x])
    b = _scalar(e, beta, like)
    return e.add("Div", [e.add("Softplus", [e.add("Mul", [x, b])]), b])


@emits("softplus")
def _softplus_node(e: OnnxEmitter, n: Node) -> None:
    e.add("Identity", [_softplus(e, e.ins(n)[0], n.attrs["beta"], n.operands[0])], [e.out(n)])


@emits("mish")
def _mish(e: OnnxEmitter, n: Node) -> None:
    (x,) = e.ins(n)
    e.add("Mul", [x, e.add("Tanh", [_softplus(e, x, 1.0, n.operands[0])])], [e.out(n)])


@emits("gelu")
def _gelu(e: OnnxEmitter, n: Node) -> None:
    """The erf form that ONNX Runtime's optimizer fuses into its Gelu kernel."""
    (x,) = e.ins(n)
    like = n.operands[0]
    if n.attrs["approximate"] == "tanh":
        cube = e.add("Mul", [_scalar(e, 0.044715, like), e.add("Mul", [x, e.add("Mul", [x, x])])])
        inner = e.add("Mul", [_scalar(e, float(np.sqrt(2 / np.pi)), like), e.add("Add", [x, cube])])
        gate = e.add("Add", [_scalar(e, 1.0, like), e.add("Tanh", [inner])])
        e.add("Mul", [e.add("Mul", [x, gate]), _scalar(e, 0.5, like)], [e.out(n)])
    else:
        gelu_erf(e, x, like, e.out(n))


def gelu_erf(e: OnnxEmitter, x: str, like: Value, out: str) -> None:
    gate = e.add("Add", [e.add("Erf", [e.add("Div", [x, _scalar(e, float(np.sqrt(2)), like)])]), _scalar(e, 1.0, like)])
    e.add("Mul", [e.add("Mul", [x, gate]), _scalar(e, 0.5, like)], [out])


@emits("rsqrt")
def _rsqrt(e: OnnxEmitter, n: Node) -> None:
    e.add("Reciprocal", [e.add("Sqrt", e.ins(n))], [e.out(n)])


@emits("pow_scalar")
def _pow_scalar(e: OnnxEmitter, n: Node) -> None:
    e.add("Pow", [e.ins(n)[0], _scalar(e, n.attrs["exponent"], n.operands[0])], [e.out(n)])


@emits("ne")
def _ne(e: OnnxEmitter, n: Node) -> None:
    e.add("Not", [e.add("Equal", e.ins(n))], [e.out(n)])


@emits("div")
def _div(e: OnnxEmitter, n: Node) -> None:
    a, b = e.ins(n)
    mode, is_float = n.attrs["rounding_mode"], n.result.dtype.is_float
    if mode == "none" or (mode == "trunc" and not is_float):
        e.add("Div", [a, b], [e.out(n)])  # ONNX integer Div truncates
    elif mode == "floor" and is_float:
        e.add("Floor", [e.add("Div", [a, b])], [e.out(n)])
    elif mode == "trunc":
        q = e.add("Div", [a, b])
        e.add("Mul", [e.add("Sign", [q]), e.add("Floor", [e.add("Abs", [q])])], [e.out(n)])
    else:  # integer floor: truncate, then step down where the remainder's sign differs from b's
        q = e.add("Div", [a, b])
        r = e.add("Sub", [a, e.add("Mul", [q, b])])
        zero = _scalar(e, 0, n.result)
        step = e.add("Cast", [e.add("Less", [e.add("Mul", [r, b]), zero])], to=onnx_dtype(n.result.dtype))
        e.add("Sub", [q, step], [e.out(n)])


@emits("fmod")
def _fmod(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "Mod", fmod=1)


@emits("remainder")
def _remainder(e: OnnxEmitter, n: Node) -> None:
    a, b = e.ins(n)
    if not n.result.dtype.is_float:
        e.simple(n, "Mod", fmod=0)
        return
    e.add("Sub", [a, e.add("Mul", [e.add("Floor", [e.add("Div", [a, b])]), b])], [e.out(n)])


@emits("to")
def _to(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "Cast", to=onnx_dtype(n.attrs["dtype"]))  # float -> int truncates, as in torch


# --- reductions -----------------------------------------------------------------------------------------
def _axes(n: Node) -> dict[str, Any]:
    dims = n.attrs.get("dims")
    return {} if dims is None else {"axes": list(dims)}


def _reduce(e: OnnxEmitter, op_type: str, x: str, n: Node, out: str | None = None) -> str:
    keep = int(n.attrs.get("keepdim", False))
    if op_type == "ReduceSum":  # axes became an input in opset 13
        dims = n.attrs.get("dims")
        inputs = [x] + ([e.ints(dims, "axes")] if dims is not None else [])
        return e.add(op_type, inputs, [out] if out else None, keepdims=keep)
    return e.add(op_type, [x], [out] if out else None, keepdims=keep, **_axes(n))


for _op, _onnx in {"mean": "ReduceMean", "sum": "ReduceSum", "prod": "ReduceProd", "amax": "ReduceMax",
                   "amin": "ReduceMin"}.items():
    emits(_op)(lambda e, n, t=_onnx: _reduce(e, t, e.ins(n)[0], n, e.out(n)))


@emits("any", "all")
def _any_all(e: OnnxEmitter, n: Node) -> None:
    as_int = e.add("Cast", e.ins(n), to=TensorProto.INT32)
    reduced = _reduce(e, "ReduceMax" if n.op == "any" else "ReduceMin", as_int, n)
    e.add("Cast", [reduced], [e.out(n)], to=TensorProto.BOOL)


@emits("norm")
def _norm(e: OnnxEmitter, n: Node) -> None:
    (x,) = e.ins(n)
    order = n.attrs["ord"]
    if order in (1.0, 2.0):
        _reduce(e, "ReduceL1" if order == 1.0 else "ReduceL2", x, n, e.out(n))
    elif order == float("inf"):
        _reduce(e, "ReduceMax", e.add("Abs", [x]), n, e.out(n))
    else:
        like = n.operands[0]
        powered = e.add("Pow", [e.add("Abs", [x]), _scalar(e, order, like)])
        e.add("Pow", [_reduce(e, "ReduceSum", powered, n), _scalar(e, 1 / order, like)], [e.out(n)])


@emits("var")
def _var(e: OnnxEmitter, n: Node) -> None:
    (x,) = e.ins(n)
    value = n.operands[0]
    dims = range(value.type.rank) if n.attrs["dims"] is None else n.attrs["dims"]
    count = int(np.prod([value.shape[d] for d in dims]))  # type: ignore[misc]
    centered = e.add("Sub", [x, e.add("ReduceMean", [x], keepdims=1, **_axes(n))])
    total = _reduce(e, "ReduceSum", e.add("Mul", [centered, centered]), n)
    e.add("Div", [total, _scalar(e, max(count - n.attrs["correction"], 0), value)], [e.out(n)])


@emits("argmax")
def _argmax(e: OnnxEmitter, n: Node) -> None:
    (x,) = e.ins(n)
    if n.attrs["dim"] is None:
        x = e.add("Reshape", [x, e.ints([-1])])
    e.add("ArgMax", [x], [e.out(n)], axis=n.attrs["dim"] or 0, keepdims=int(n.attrs["keepdim"]))


@emits("softmax")
def _softmax(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "Softmax", axis=n.attrs["dim"])


@emits("log_softmax")
def _log_softmax(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "LogSoftmax", axis=n.attrs["dim"])


@emits("cumsum")
def _cumsum(e: OnnxEmitter, n: Node) -> None:
    e.add("CumSum", [e.ins(n)[0], e.const(np.int64(n.attrs["dim"]))], [e.out(n)])


# --- layout -------------------------------------------------------------------------------------------
def reshape_target(source: TensorType, target: TensorType) -> list[int] | None:
    """A constant Reshape shape for a possibly symbolic target (0 copies a matching input dim, -1
    fills one), or None when it takes shape arithmetic."""
    shape: list[int] = []
    for i, d in enumerate(target.shape):
        if isinstance(d, int):
            shape.append(d)
        elif i < source.rank and source.shape[i] == d:
            shape.append(0)
        else:
            shape.append(-1)
    return shape if shape.count(-1) <= 1 else None


@emits("reshape", "flatten", "squeeze", "unsqueeze")
def _reshape(e: OnnxEmitter, n: Node) -> None:
    if _read_packed(n):
        return
    e.add("Reshape", [e.ins(n)[0], e.reshape_shape(n.operands[0].type, n.result.type)], [e.out(n)])


@emits("permute")
def _permute(e: OnnxEmitter, n: Node) -> None:
    rank = n.operands[0].type.rank
    e.simple(n, "Transpose", perm=[d % rank for d in n.attrs["dims"]])


@emits("expand")
def _expand(e: OnnxEmitter, n: Node) -> None:
    x = n.operands[0]
    lead = n.result.type.rank - x.type.rank
    kept = [d for i, d in enumerate(n.result.shape) if isinstance(d, int) or (i >= lead and x.shape[i - lead] == d)]
    if len(kept) == n.result.type.rank:  # 1 keeps the input's (symbolic) dim
        target = e.ints([d if isinstance(d, int) else 1 for d in n.result.shape])
    else:
        target = e.shape(n.result.shape)
    e.add("Expand", [e.name(x), target], [e.out(n)])


@emits("repeat")
def _repeat(e: OnnxEmitter, n: Node) -> None:
    x, reps = e.ins(n)[0], list(n.attrs["repeats"])
    extra = len(reps) - n.operands[0].type.rank
    if extra:
        source = n.operands[0].type
        x = e.add("Reshape", [x, e.reshape_shape(source, source.with_shape((1,) * extra + source.shape))])
    e.add("Tile", [x, e.ints(reps, "repeats")], [e.out(n)])


@emits("cat")
def _cat(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "Concat", axis=n.attrs["dim"])


@emits("split")
def _split(e: OnnxEmitter, n: Node) -> None:
    e.add("Split", [e.ins(n)[0], e.ints(n.attrs["split_sizes"], "split")],
          [e.out(n, i) for i in range(len(n.results))], axis=n.attrs["dim"])


def _slice_inputs(e: OnnxEmitter, start: Dim | None, end: Dim | None, dim: int, step: int) -> list[str]:
    """Slice's starts, ends, axes, steps; a symbolic bound is computed at run time."""
    return [e.dim(0 if start is None else start), e.dim(INT64_MAX if end is None else end), e.ints([dim]),
            e.ints([step])]


@emits("slice")
def _slice(e: OnnxEmitter, n: Node) -> None:
    a = n.attrs
    e.add("Slice", [e.ins(n)[0], *_slice_inputs(e, a["start"], a["end"], a["dim"], a["step"])], [e.out(n)])


def _unit_step(n: Node) -> str | None:
    return None if n.attrs["step"] == 1 else "slice_scatter with a step other than 1"


@emits("slice_scatter", condition=_unit_step)
def _slice_scatter(e: OnnxEmitter, n: Node) -> None:
    """x[:start] ++ src ++ x[end:] along `dim`."""
    x, src = e.ins(n)
    a = n.attrs
    size = n.operands[0].shape[a["dim"] % n.operands[0].type.rank]
    start, end = slice(a["start"], a["end"]).indices(size)[:2]  # type: ignore[arg-type]
    parts = [e.add("Slice", [x, *_slice_inputs(e, 0, start, a["dim"], 1)]), src,
             e.add("Slice", [x, *_slice_inputs(e, end, None, a["dim"], 1)])]
    e.add("Concat", parts, [e.out(n)], axis=a["dim"])


@emits("select")
def _select(e: OnnxEmitter, n: Node) -> None:
    e.add("Gather", [e.ins(n)[0], e.const(np.int64(n.attrs["index"]))], [e.out(n)], axis=n.attrs["dim"])


def _consecutive(n: Node) -> str | None:
    dims = list(n.attrs["dims"])
    return None if dims == list(range(dims[0], dims[-1] + 1)) else "advanced indexing on non-adjacent dims"


@emits("index", condition=_consecutive)
def _index(e: OnnxEmitter, n: Node) -> None:
    """Several index tensors on adjacent dims become one Gather on the merged dims."""
    x, *indices = e.ins(n)
    value = n.operands[0]
    dims = list(n.attrs["dims"])
    if len(dims) == 1:
        e.add("Gather", [x, indices[0]], [e.out(n)], axis=dims[0])
        return
    sizes = [value.shape[d] for d in dims]
    linear = None
    for i, idx in enumerate(indices):
        stride, dtype = sym.prod(sizes[i + 1 :]), n.operands[1 + i].dtype
        if isinstance(stride, int):
            factor = e.const(np.asarray(stride, dtype=dtype.numpy))
        else:  # computed from the symbolic sizes, in the index's dtype
            factor = e.add("Cast", [e.dim(stride)], to=onnx_dtype(dtype))
        term = e.add("Mul", [idx, factor])
        linear = term if linear is None else e.add("Add", [linear, term])
    merged = [*value.shape[: dims[0]], sym.prod(sizes), *value.shape[dims[-1] + 1 :]]
    flat = e.add("Reshape", [x, e.reshape_shape(value.type, value.type.with_shape(merged))])
    e.add("Gather", [flat, linear], [e.out(n)], axis=dims[0])  # type: ignore[list-item]


@emits("index_select")
def _index_select(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "Gather", axis=n.attrs["dim"])


@emits("gather")
def _gather(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "GatherElements", axis=n.attrs["dim"])


def _pad_mode(n: Node) -> str | None:
    return "circular padding needs ONNX opset 19" if n.attrs["mode"] == "circular" else None


@emits("pad", condition=_pad_mode)
def _pad(e: OnnxEmitter, n: Node) -> None:
    rank, pad = n.operands[0].type.rank, n.attrs["pad"]
    begin: list[Dim] = [0] * rank
    end: list[Dim] = [0] * rank
    for i in range(len(pad) // 2):
        begin[rank - 1 - i], end[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[n.attrs["mode"]]
    inputs = [e.ins(n)[0], e.shape(begin + end)]
    if mode == "constant":
        inputs.append(_scalar(e, n.attrs["value"], n.operands[0]))
    e.add("Pad", inputs, [e.out(n)], mode=mode)


@emits("roll")
def _roll(e: OnnxEmitter, n: Node) -> None:
    x = e.ins(n)[0]
    value = n.operands[0]
    for i, (shift, dim) in enumerate(zip(n.attrs["shifts"], n.attrs["dims"])):
        size = int(value.shape[dim])  # type: ignore[arg-type]
        cut = size - shift % size
        parts = [e.add("Slice", [x, *_slice_inputs(e, cut, None, dim, 1)]),
                 e.add("Slice", [x, *_slice_inputs(e, 0, cut, dim, 1)])]
        last = i == len(n.attrs["dims"]) - 1
        x = e.add("Concat", parts, [e.out(n)] if last else None, axis=dim)


@emits("flip")
def _flip(e: OnnxEmitter, n: Node) -> None:
    dims = list(n.attrs["dims"])
    e.add("Slice", [e.ins(n)[0], e.ints([-1] * len(dims)), e.ints([-(2**63)] * len(dims)), e.ints(dims),
                    e.ints([-1] * len(dims))], [e.out(n)])


# --- layers -------------------------------------------------------------------------------------------
def _activated(e: OnnxEmitter, n: Node) -> str:
    """The name the layer itself writes: its output, or a temporary when a fused activation follows."""
    return e.out(n) if n.attrs["activation"] == "none" else e.tmp("pre_activation")


def _activation(e: OnnxEmitter, n: Node, y: str) -> None:
    kind, out, like = n.attrs["activation"], e.out(n), n.result
    if kind == "none":
        return
    if kind in ("relu6", "clamp"):
        lo, hi = (0.0, 6.0) if kind == "relu6" else n.attrs["activation_bounds"]
        e.add("Clip", [y, _scalar(e, lo, like), _scalar(e, hi, like)], [out])
    elif kind == "silu":
        e.add("Mul", [y, e.add("Sigmoid", [y])], [out])
    elif kind == "gelu":
        gelu_erf(e, y, like, out)
    else:
        e.add({"relu": "Relu", "hardswish": "HardSwish"}[kind], [y], [out])


@emits("conv1d", "conv2d", "conv3d")
def _conv(e: OnnxEmitter, n: Node) -> None:
    a = n.attrs
    y = e.add("Conv", e.ins(n), [_activated(e, n)], strides=list(a["stride"]), pads=list(a["padding"]) * 2,
              dilations=list(a["dilation"]), group=a["groups"], kernel_shape=list(n.operands[1].shape[2:]))
    _activation(e, n, y)


@emits("conv_transpose2d")
def _conv_transpose(e: OnnxEmitter, n: Node) -> None:
    a = n.attrs
    y = e.add("ConvTranspose", e.ins(n), [_activated(e, n)], strides=list(a["stride"]), pads=list(a["padding"]) * 2,
              dilations=list(a["dilation"]), group=a["groups"], output_padding=list(a["output_padding"]),
              kernel_shape=list(n.operands[1].shape[2:]))
    _activation(e, n, y)


def _packed_weight(n: Node) -> Node | None:
    """The dequantize of a linear's weight or a lookup's table when it has the per-group layout
    MatMulNBits and GatherBlockQuantized take: int8 rows of one power-of-two group (>= 16) of input
    features, zero points 0, reshaped to [out, in] and read by nothing else."""
    reshape = n.operands[1].producer if n.op in ("linear", "embedding") else None
    if reshape is None or reshape.op != "reshape":
        return None
    dq = reshape.operands[0].producer
    if dq is None or dq.op != "dequantize_per_channel" or dq.attrs["axis"] != 0 or len(dq.result.users) != 1 or \
            not all(v.is_parameter and v.data is not None for v in dq.operands):
        return None
    q, _, zero_points = (v.data for v in dq.operands)
    group = q.shape[1] if q.ndim == 2 else 0
    if q.dtype != np.int8 or group < 16 or group & (group - 1) or np.any(zero_points) or q.min() < -127:
        return None
    return dq


def _packed_bits(dq: Node) -> int:
    """4 when every value fits a nibble ([-7, 7]), else 8."""
    return 4 if np.abs(dq.operands[0].data).max() <= 7 else 8  # type: ignore[union-attr]


def _read_packed(reshape: Node) -> bool:
    """A reshape of per-group weights read only by linears and lookups lowered to MatMulNBits and
    GatherBlockQuantized, which take the packed weights instead (the dequantize before it is then
    left out too: nothing reads it)."""
    users = reshape.result.users
    return bool(users) and not reshape.result.is_graph_output and all(
        _packed_weight(u) is not None and u.operands[1] is reshape.result for u in users)


def _packed(dq: Node, bits: int) -> np.ndarray:
    """The weights as unsigned bytes ([rows, in] layout): two a byte (+8, low nibble first) for 4
    bits, one (+128) for 8."""
    q = dq.operands[0].data.astype(np.int16)  # type: ignore[union-attr]
    if bits == 8:
        return (q + 128).astype(np.uint8)
    nibbles = (q + 8).astype(np.uint8)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def _matmul_nbits(e: OnnxEmitter, n: Node, dq: Node, out: str) -> str:
    """ONNX Runtime's int4 / int8 weight kernel: the packed weights, one scale a group."""
    rows, k = (int(d) for d in n.operands[1].shape)  # type: ignore[arg-type]
    group, bits = dq.operands[0].shape[1], _packed_bits(dq)
    packed = _packed(dq, bits).reshape(rows, k // group, -1)
    scales = dq.operands[1].data.astype(np.float32)  # type: ignore[union-attr]
    return e.add("MatMulNBits", [e.ins(n)[0], e.const(packed), e.const(scales, hint="scales")], [out],
                 domain=MS_DOMAIN, K=k, N=rows, bits=bits, block_size=group, accuracy_level=ACCURACY_LEVEL[bits])


@emits("linear")
def _linear(e: OnnxEmitter, n: Node) -> None:
    ins, target = e.ins(n), _activated(e, n)
    packed = _packed_weight(n)
    if packed is not None:
        y = _matmul_nbits(e, n, packed, target if len(ins) == 2 else e.tmp("matmul"))
        if len(ins) == 3:
            y = e.add("Add", [y, ins[2]], [target])
    elif n.operands[0].type.rank == 2:
        y = e.add("Gemm", ins, [target], transB=1)
    elif not _lowered_to_matmul(n):
        # int8 on rank > 2: flatten to one Gemm (ONNX Runtime fuses DQ -> Gemm -> with an int32 bias
        # into QGemm; MatMul + Add fuses only when no other rewrite claims the Add first).
        flat = e.add("Reshape", [ins[0], e.ints([-1, n.operands[0].shape[-1]])])
        y = e.add("Reshape", [e.add("Gemm", [flat, *ins[1:]], transB=1), e.shape(n.result.shape)], [target])
    else:
        y = e.add("MatMul", [ins[0], _transposed_weight(e, n.operands[1])], [target] if len(ins) == 2 else None)
        if len(ins) == 3:
            y = e.add("Add", [y, _float_bias(e, n.operands[2])], [target])
    _activation(e, n, y)


@emits("batch_norm")
def _batch_norm(e: OnnxEmitter, n: Node) -> None:
    x, mean, var, weight, bias = e.ins(n)
    e.add("BatchNormalization", [x, weight, bias, mean, var], [e.out(n)], epsilon=n.attrs["eps"])


@emits("layer_norm")
def _layer_norm(e: OnnxEmitter, n: Node) -> None:
    ins = e.ins(n)
    norm = list(n.attrs["normalized_shape"])
    if len(ins) == 1:
        ins.append(e.const(np.ones(norm, dtype=n.operands[0].dtype.numpy), hint="ones"))
    e.add("LayerNormalization", ins, [e.out(n)], axis=-len(norm), epsilon=n.attrs["eps"])


@emits("local_response_norm")
def _lrn(e: OnnxEmitter, n: Node) -> None:
    a = n.attrs
    e.simple(n, "LRN", size=a["size"], alpha=a["alpha"], beta=a["beta"], bias=a["k"])


@emits("group_norm")
def _group_norm(e: OnnxEmitter, n: Node) -> None:
    """Reshape to [N, G, -1], normalize over the last axis, reshape back, apply the affine."""
    x, *affine = e.ins(n)
    value = n.operands[0]
    grouped = e.add("Reshape", [x, e.ints([0, n.attrs["num_groups"], -1])])
    mean = e.add("ReduceMean", [grouped], axes=[2], keepdims=1)
    centered = e.add("Sub", [grouped, mean])
    var = e.add("ReduceMean", [e.add("Mul", [centered, centered])], axes=[2], keepdims=1)
    normed = e.add("Div", [centered, e.add("Sqrt", [e.add("Add", [var, _scalar(e, n.attrs["eps"], value)])])])
    y = e.add("Reshape", [normed, e.reshape_shape(value.type, value.type)])
    channel_shape = e.ints([-1] + [1] * (value.type.rank - 2))
    for i, (p, op_type) in enumerate(zip(affine, ("Mul", "Add"))):
        last = i == len(affine) - 1
        y = e.add(op_type, [y, e.add("Reshape", [p, channel_shape])], [e.out(n)] if last else None)
    if not affine:
        e.add("Identity", [y], [e.out(n)])


def _pool_attrs(n: Node) -> dict[str, Any]:
    a = n.attrs
    return {"kernel_shape": list(a["kernel_size"]), "strides": list(a["stride"]), "pads": list(a["padding"]) * 2,
            "ceil_mode": int(a["ceil_mode"])}


@emits("max_pool2d")
def _max_pool(e: OnnxEmitter, n: Node) -> None:
    e.simple(n, "MaxPool", dilations=list(n.attrs["dilation"]), **_pool_attrs(n))


def _divisor_ok(n: Node) -> str | None:
    a = n.attrs
    if a["divisor_override"] and (any(a["padding"]) or a["ceil_mode"]):
        return "avg_pool2d divisor_override with padding or ceil_mode"
    return None


@emits("avg_pool2d", condition=_divisor_ok)
def _avg_pool(e: OnnxEmitter, n: Node) -> None:
    a = n.attrs
    if not a["divisor_override"]:
        e.simple(n, "AveragePool", count_include_pad=int(a["count_include_pad"]), **_pool_attrs(n))
        return
    mean = e.add("AveragePool", e.ins(n), **_pool_attrs(n))
    factor = float(np.prod(a["kernel_size"])) / a["divisor_override"]
    e.add("Mul", [mean, _scalar(e, factor, n.operands[0])], [e.out(n)])


@emits("adaptive_avg_pool2d")
def _adaptive(e: OnnxEmitter, n: Node) -> None:
    """ONNX has no adaptive pooling: one global or even-binned pool where the sizes allow, otherwise
    torch's bins [floor(i*S/O), ceil((i+1)*S/O)) sliced out (bounds computed at run time for a
    symbolic S) and averaged one axis at a time, which is exact since each bin is a rectangle."""
    out, size = list(n.attrs["output_size"]), n.operands[0].shape[2:]
    if out == [1, 1]:
        e.simple(n, "GlobalAveragePool")
        return
    if all(isinstance(s, int) and s % o == 0 for s, o in zip(size, out)):
        kernel = [int(s) // o for s, o in zip(size, out)]  # type: ignore[call-overload]
        e.simple(n, "AveragePool", kernel_shape=kernel, strides=kernel)
        return
    y = e.ins(n)[0]
    for axis in (3, 2):
        s, o = size[axis - 2], out[axis - 2]
        bins = [e.add("ReduceMean", [e.add("Slice", [y, *_slice_inputs(
                    e, sym.floordiv(sym.mul(i, s), o), sym.ceildiv(sym.mul(i + 1, s), o), axis, 1)])],
                      axes=[axis], keepdims=1) for i in range(o)]
        y = e.add("Concat", bins, [e.out(n)] if axis == 2 else None, axis=axis)


@emits("scaled_dot_product_attention")
def _sdpa(e: OnnxEmitter, n: Node) -> None:
    q, k, v, *mask = e.ins(n)
    query = n.operands[0]
    rank = query.type.rank
    scale = n.attrs["scale"] or 1 / np.sqrt(int(query.shape[-1]))  # type: ignore[arg-type]
    perm = [*range(rank - 2), rank - 1, rank - 2]
    scores = e.add("Mul", [e.add("MatMul", [q, e.add("Transpose", [k], perm=perm)]), _scalar(e, scale, query)])
    if n.attrs["is_causal"]:
        size_q, size_k = int(query.shape[-2]), int(n.operands[1].shape[-2])  # type: ignore[arg-type]
        bias = np.where(np.tril(np.ones((size_q, size_k), bool)), 0, -np.inf).astype(query.dtype.numpy)
        scores = e.add("Add", [scores, e.const(bias, hint="causal_mask")])
    if mask:
        if n.operands[3].dtype is DType.bool:
            scores = e.add("Where", [mask[0], scores, _scalar(e, -np.inf, query)])
        else:
            scores = e.add("Add", [scores, mask[0]])
    e.add("MatMul", [e.add("Softmax", [scores], axis=-1), v], [e.out(n)])


@emits("glu")
def _glu(e: OnnxEmitter, n: Node) -> None:
    a, b = e.tmp("a"), e.tmp("b")
    half = int(n.result.shape[n.attrs["dim"]])  # type: ignore[arg-type]
    e.add("Split", [e.ins(n)[0], e.ints([half, half], "split")], [a, b], axis=n.attrs["dim"])
    e.add("Mul", [a, e.add("Sigmoid", [b])], [e.out(n)])


@emits("interpolate")
def _interpolate(e: OnnxEmitter, n: Node) -> None:
    """Resize with the coordinate transform torch uses for the same mode."""
    a = n.attrs
    if a["mode"] == "nearest":
        mode, extra = "nearest", {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:
        transform = "align_corners" if a["align_corners"] else "pytorch_half_pixel"
        mode, extra = "linear", {"coordinate_transformation_mode": transform}
    if a["scales"]:
        inputs = [e.ins(n)[0], "", e.const(np.asarray([1.0, 1.0, *a["scales"]], np.float32), hint="scales")]
    else:
        inputs = [e.ins(n)[0], "", "", e.shape(n.result.shape)]
    e.add("Resize", inputs, [e.out(n)], mode=mode, **extra)


# --- creation -------------------------------------------------------------------------------------------
@emits("full", "arange")
def _constant(e: OnnxEmitter, n: Node) -> None:
    from graphopt.ops import get_op

    if not n.result.type.is_static:  # a full of a symbolic shape (arange sizes are static)
        value = helper.make_tensor("value", onnx_dtype(n.result.dtype), [1], [n.attrs["value"]])
        e.add("ConstantOfShape", [e.shape(n.result.shape)], [e.out(n)], value=value)
        return
    data = get_op(n.op).reference(**n.attrs)
    e.initializers.append(numpy_helper.from_array(np.asarray(data, dtype=n.result.dtype.numpy), e.out(n)))


@emits("full_like")
def _full_like(e: OnnxEmitter, n: Node) -> None:
    value = helper.make_tensor("value", onnx_dtype(n.result.dtype), [1], [n.attrs["value"]])
    e.add("ConstantOfShape", [e.add("Shape", e.ins(n))], [e.out(n)], value=value)


# --- quantization -------------------------------------------------------------------------------------------
def _default_range(n: Node) -> str | None:
    if n.attrs.get("quant_min") is not None or n.attrs.get("quant_max") is not None:
        return "a narrowed quant range (quant_min/quant_max) has no ONNX QuantizeLinear equivalent"
    return None


def _dequantized(v: Value) -> bool:
    return v.producer is not None and v.producer.op in DEQUANTIZE_OPS


def _lowered_to_matmul(linear: Node) -> bool:
    """A linear `_linear` emits as MatMul (+ Add): rank > 2, and not int8 with every size static."""
    return linear.operands[0].type.rank != 2 and not (
        _dequantized(linear.operands[1]) and all(isinstance(d, int) for d in linear.result.shape))


def _emitted_by_linears(n: Node) -> bool:
    """A dequantized parameter read only as the weight or bias of linears emitted as MatMul: they emit
    the weight transposed (DQ(Transpose(int8)), which ONNX Runtime folds and fuses into MatMul) and
    the bias as its float value (a DQ'd bias would keep ONNX Runtime from fusing bias, residual add
    and layer norm, and costs a kernel per layer)."""
    users = n.result.users
    return all(v.is_parameter for v in n.operands) and bool(users) and not n.result.is_graph_output and all(
        u.op == "linear" and _lowered_to_matmul(u) and u.operands[0] is not n.result for u in users)


def _float_bias(e: OnnxEmitter, bias: Value) -> str:
    dq = bias.producer
    if dq is None or not _dequantized(bias) or not _emitted_by_linears(dq):
        return e.name(bias)
    return e.const(get_op(dq.op).reference(*(v.data for v in dq.operands), **dq.attrs), hint="bias")


def _transposed_weight(e: OnnxEmitter, w: Value) -> str:
    dq = w.producer
    if dq is None or not _dequantized(w) or not _emitted_by_linears(dq):
        return e.add("Transpose", [e.name(w)], perm=[1, 0])
    q = e.add("Transpose", [e.name(dq.operands[0])], perm=[1, 0])
    if dq.op == "dequantize_per_tensor":
        return _dequantize_per_tensor(e, dq, q, e.tmp("weight"))
    return _dequantize_per_channel(e, dq, q, e.tmp("weight"), axis=1)


@emits("quantize_per_tensor", condition=_default_range)
def _quantize(e: OnnxEmitter, n: Node) -> None:
    scale = e.const(np.float32(n.attrs["scale"]), hint="scale")
    zp = e.const(np.asarray(n.attrs["zero_point"], dtype=n.attrs["dtype"].numpy), hint="zero_point")
    e.add("QuantizeLinear", [e.ins(n)[0], scale, zp], [e.out(n)])


def _fake_scale(e: OnnxEmitter, n: Node, log2_scale: str) -> str:
    """2^log2_scale, shaped to broadcast along the node's axis (or a scalar)."""
    scale = e.add("Pow", [e.const(np.float32(2.0)), log2_scale])
    if n.attrs["axis"] is None:
        return scale
    shape = [1] * n.operands[0].type.rank
    shape[n.attrs["axis"] % len(shape)] = -1
    return e.add("Reshape", [scale, e.ints(shape)])


@emits("fake_quantize")
def _fake_quantize(e: OnnxEmitter, n: Node) -> None:
    """In float ops (a quantize / dequantize pair holds only a dtype's full range; these ranges can
    be narrower): Round is half-to-even, as the interpreter's rint."""
    x, log2_scale = e.ins(n)
    a = n.attrs
    scale = _fake_scale(e, n, log2_scale)
    zero = e.const(np.float32(a["zero_point"]), hint="zero_point")
    q = e.add("Clip", [e.add("Add", [e.add("Round", [e.add("Div", [x, scale])]), zero]),
                       e.const(np.float32(a["quant_min"])), e.const(np.float32(a["quant_max"]))])
    e.add("Mul", [e.add("Sub", [q, zero]), scale], [e.out(n)])


@emits("fake_binarize")
def _fake_binarize(e: OnnxEmitter, n: Node) -> None:
    x, log2_scale = e.ins(n)
    scale = _fake_scale(e, n, log2_scale)
    e.add("Where", [e.add("GreaterOrEqual", [x, e.const(np.float32(0.0))]), scale, e.add("Neg", [scale])],
          [e.out(n)])


@emits("dequantize_per_tensor")
def _dequantize(e: OnnxEmitter, n: Node) -> None:
    if not _emitted_by_linears(n):
        _dequantize_per_tensor(e, n, e.ins(n)[0], e.out(n))


def _dequantize_per_tensor(e: OnnxEmitter, n: Node, x: str, out: str) -> str:
    scale = e.const(np.float32(n.attrs["scale"]), hint="scale")
    zp = e.const(np.asarray(n.attrs["zero_point"], dtype=n.operands[0].dtype.numpy), hint="zero_point")
    return e.add("DequantizeLinear", [x, scale, zp], [out])


@emits("quantize_per_channel", condition=_default_range)
def _quantize_channel(e: OnnxEmitter, n: Node) -> None:
    x, scales, zps = e.ins(n)
    if n.operands[2].dtype is not n.attrs["dtype"]:
        zps = e.add("Cast", [zps], to=onnx_dtype(n.attrs["dtype"]))
    e.add("QuantizeLinear", [x, scales, zps], [e.out(n)], axis=n.attrs["axis"])


@emits("dequantize_per_channel")
def _dequantize_channel(e: OnnxEmitter, n: Node) -> None:
    if not _emitted_by_linears(n) and not all(u.op == "reshape" and _read_packed(u) for u in n.result.users):
        _dequantize_per_channel(e, n, e.ins(n)[0], e.out(n), n.attrs["axis"])


def _dequantize_per_channel(e: OnnxEmitter, n: Node, x: str, out: str, axis: int) -> str:
    _, scales, zps = e.ins(n)
    if n.operands[2].dtype is not n.operands[0].dtype:
        zps = e.add("Cast", [zps], to=onnx_dtype(n.operands[0].dtype))
    return e.add("DequantizeLinear", [x, scales, zps], [out], axis=axis)
