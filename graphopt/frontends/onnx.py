"""ONNX frontend: a ModelProto or .onnx file (opset 11 and newer, external data included) into the
graph IR. Initializers become parameters, ONNX node names become `loc`.

Shape arithmetic that exporters leave behind (Shape -> Gather -> Concat -> Reshape chains, masks
built with ConstantOfShape / ScatterND) is evaluated at import with onnx's reference evaluator,
since the input shapes are known; what reaches the IR is the model's real computation."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import EncodeError
from onnx import helper, numpy_helper

from graphopt.errors import (
    FileError,
    GraphoptError,
    InternalError,
    ShapeError,
    UnsupportedError,
    expect_type,
    located,
)
from graphopt.frontends.onnx_shapes import SHAPE_OPS, fold, is_symbolic
from graphopt.ir.graph import Graph
from graphopt.ir.types import Dim, DType, TensorType, fmt_shape
from graphopt.ir.value import Value, check_finite

Converter = Callable[["OnnxImporter", onnx.NodeProto], Sequence[Value | np.ndarray] | Value | np.ndarray]
ONNX: dict[str, Converter] = {}
# Evaluated at import when every input is constant; never these (they carry quantization structure).
NOT_FOLDED = {"QuantizeLinear", "DequantizeLinear"}
INT64_MAX = 2**63 - 1


def register_onnx(*op_types: str) -> Callable[[Converter], Converter]:
    """Register a converter for ONNX op types (default domain)."""

    def add(fn: Converter) -> Converter:
        for op in op_types:
            ONNX[op] = fn
        return fn

    return add


def load_model(source: str | os.PathLike[str] | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, bytes):
        try:
            return onnx.load_from_string(source)
        except Exception as e:
            raise GraphoptError(f"malformed ONNX bytes: {type(e).__name__}: {e}") from None
    expect_type(source, (str, os.PathLike), "from_onnx's source (a path, bytes or a ModelProto)")
    path = Path(source)
    if not path.exists():
        raise FileError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as e:
        raise GraphoptError(f"malformed or truncated ONNX file {path}: {type(e).__name__}: {e}") from None
    return model


def external_data_files(path: str | os.PathLike[str]) -> list[Path]:
    """The external-data files an .onnx file refers to (read without loading any tensor data)."""
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # a malformed file: from_onnx reports it when the work starts
        return []
    locations = {entry.value for t in model.graph.initializer if uses_external_data(t)
                 for entry in t.external_data if entry.key == "location"}
    return [path.parent / loc for loc in sorted(locations)]


class Attributes(dict[str, Any]):
    """A node's attributes; a missing required one is a clear error, not a KeyError."""

    def __missing__(self, key: str) -> Any:
        raise GraphoptError(f"required attribute {key!r} is missing")


def _defined_element_type(elem_type: int, what: str) -> None:
    """onnx.checker lets an undefined element type through; refuse it before onnx's helpers KeyError."""
    if elem_type not in onnx.TensorProto.DataType.values():
        raise GraphoptError(f"{what}: {elem_type} is not an ONNX element type")


def _array(tensor: onnx.TensorProto, what: str) -> np.ndarray:
    _defined_element_type(tensor.data_type, what)
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError) as e:  # data that does not fit its declared type and shape
        raise GraphoptError(f"{what}: cannot read its data ({type(e).__name__}: {e})") from None


def _describe(array: np.ndarray) -> str:
    return f"{array.dtype}{list(array.shape)}"


class OnnxImporter:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.opset = default_opset(model)
        self.graph = Graph(_identifier(model.graph.name) or "main")
        self.values: dict[str, Value] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.node: onnx.NodeProto | None = None
        self.symbols: dict[str, str] = {}  # the file's dim names -> IR symbols
        self.pins: dict[str, list[Dim | None]] = {}
        self.read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}

    # --- helpers ----------------------------------------------------------------------------------
    @property
    def loc(self) -> str:
        return self.node.name if self.node is not None else ""

    def attrs(self, node: onnx.NodeProto) -> Attributes:
        out = Attributes()
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            try:
                out[a.name] = v.decode() if isinstance(v, bytes) else v
            except UnicodeDecodeError:
                raise GraphoptError(f"attribute {a.name!r} is not UTF-8 text: {v!r}") from None
        return out

    def has(self, node: onnx.NodeProto, index: int) -> bool:
        return len(node.input) > index and node.input[index] != ""

    def const(self, name: str) -> np.ndarray:
        """The value of an input that must be constant (shapes, axes, pads ...)."""
        if name not in self.consts:
            raise UnsupportedError(f"input {name!r} must be a constant (it is computed at run time)")
        return self.consts[name]

    def opt_const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        return self.const(node.input[index]) if self.has(node, index) else None

    def ints(self, node: onnx.NodeProto, index: int, what: str, length: int | None = None) -> list[int] | None:
        """A constant 1-D integer input (a shape, axes, pads); None when the optional input is absent."""
        if not self.has(node, index):
            return None
        values = self.dims(node, index, what, length)
        if values is not None and not all(isinstance(v, int) for v in values):
            raise UnsupportedError(f"input {index} ({what}) is {[str(v) for v in values]}, known only at run time; "
                                   "pin the dims it depends on (from_onnx(input_shapes=...), --input-shape)")
        return values  # type: ignore[return-value]

    def dims(self, node: onnx.NodeProto, index: int, what: str, length: int | None = None) -> list[Dim] | None:
        """A constant 1-D integer input whose entries may be symbolic sizes (a Reshape target)."""
        if not self.has(node, index):
            return None
        array = self.const(node.input[index])
        if array.ndim != 1 or array.dtype.kind not in "iuO":
            raise GraphoptError(f"input {index} ({what}) must be a 1-D integer tensor, got {_describe(array)}")
        if length is not None and array.size != length:
            raise GraphoptError(f"input {index} ({what}) must hold {length} values, got {array.size}")
        return [v if is_symbolic(array) and not isinstance(v, int | np.integer) else int(v) for v in array]

    def number(self, node: onnx.NodeProto, index: int, what: str) -> float | None:
        """A constant scalar input (a clip bound, a fill value); None when absent."""
        if not self.has(node, index):
            return None
        array = self.const(node.input[index])
        if array.size != 1 or array.dtype.kind not in "biuf":
            raise GraphoptError(f"input {index} ({what}) must be a scalar, got {_describe(array)}")
        return float(array.reshape(-1)[0])

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        """`axis` in [-rank, rank), made non-negative."""
        if not -rank <= axis < rank:
            raise GraphoptError(f"{what} {axis} is out of range for a rank-{rank} tensor")
        return axis % rank

    def ints_attr(self, attrs: Attributes, name: str, length: int, default: int) -> list[int]:
        """An ints attribute that must have one value per spatial dim (strides, dilations, ...)."""
        values = list(attrs.get(name, [default] * length))
        if len(values) != length:
            raise GraphoptError(f"attribute {name} {values} must have {length} values")
        return [int(v) for v in values]

    def static_dims(self, value: Value, dims: Sequence[int], what: str) -> list[int]:
        """The sizes of `value` at `dims`, which the conversion needs as numbers."""
        if value.type.rank <= max(dims, default=-1):
            raise GraphoptError(f"{what} needs a tensor of rank above {max(dims)}, got {value.type}")
        sizes = [value.shape[d] for d in dims]
        if not all(isinstance(s, int) for s in sizes):
            raise UnsupportedError(f"{what} needs static sizes, got {value.type}; give the model static input shapes")
        return sizes  # type: ignore[return-value]

    def value(self, name: str) -> Value:
        """The IR value of an ONNX tensor; constants become parameters on first use."""
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            data = self.consts[name]
            if is_symbolic(data):
                raise UnsupportedError(f"tensor {name!r} holds the sizes {[str(d) for d in data.reshape(-1)]}, "
                                       "known only at run time, and this op reads it as data; pin the dims it "
                                       "depends on (from_onnx(input_shapes=...), --input-shape)")
            value = self.graph.add_parameter(data, name)
            self.values[name] = value
            return value
        raise GraphoptError(f"tensor {name!r} is not defined before its use")

    def input(self, node: onnx.NodeProto, index: int) -> Value:
        if not self.has(node, index):
            raise GraphoptError(f"input {index} is missing ({len(node.input)} given)")
        return self.value(node.input[index])

    def emit(self, op: str, operands: Sequence[Value], attrs: dict[str, Any] | None = None) -> Value:
        created = self.graph.create(op, operands, attrs or {}, loc=self.loc)
        return created.results[0] if len(created.results) == 1 else tuple(created.results)  # type: ignore[return-value]

    def scalar(self, value: float, like: Value) -> Value:
        return self.value(self.store(np.asarray(value, dtype=like.dtype.numpy)))

    def store(self, array: np.ndarray) -> str:
        """Keep `array` as a named constant (a parameter once an IR node reads it); returns the name."""
        name = f"{self.loc or 'const'}/c{len(self.consts)}"
        self.consts[name] = array
        return name

    # --- the walk -----------------------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.model.graph
        for init in g.initializer:
            data = _array(init, f"initializer {init.name!r}")
            check_finite(data, f"initializer {init.name!r}")
            self.consts[init.name] = data
        for vi in g.input:
            if vi.name not in self.consts:
                self.values[vi.name] = self.graph.add_input(self._type(vi), vi.name)
        for node in g.node:
            self.node = node
            self._convert(node)
        self.node = None
        self.graph.outputs = [self._output(o.name) for o in g.output]
        return self.graph

    def _output(self, name: str) -> Value:
        value = self.value(name)
        if value.producer is None and not value.is_input:  # a constant output: keep it a node result
            return self.graph.create("identity", [value], loc=name).result
        return value

    def _type(self, vi: onnx.ValueInfoProto) -> TensorType:
        """An input's type: its static dims, its named dims as symbols, and a fresh symbol for a dim
        with no size, a -1 or `?`; `self.pins` (input_shapes=) overrides dims by position."""
        t = vi.type.tensor_type
        dims: list[Dim] = []
        for axis, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(d.dim_value)
            elif d.dim_param and d.dim_param != "?":
                dims.append(self._symbol(d.dim_param))
            else:
                dims.append(self._symbol(f"{vi.name}_{axis}"))
        pins = self.pins.pop(vi.name, None)
        if pins is not None:
            dims = _pinned(vi.name, dims, pins)
        return TensorType(_dtype(t.elem_type, vi.name), dims)

    def _symbol(self, name: str) -> str:
        if name not in self.symbols:
            base = _identifier(name) or f"s{len(self.symbols)}"
            taken = set(self.symbols.values())
            self.symbols[name] = next(c for c in (base, *(f"{base}_{i}" for i in range(1, 1000))) if c not in taken)
        return self.symbols[name]

    def _convert(self, node: onnx.NodeProto) -> None:
        where = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(f"{where}: op domain {node.domain!r} is not supported")
        inputs = [i for i in node.input if i]
        foldable = node.op_type == "Constant" or (inputs and all(i in self.consts for i in inputs))
        if foldable and node.op_type in SHAPE_OPS and any(is_symbolic(self.consts[i]) for i in inputs):
            arrays = [self.consts[i] if i else None for i in node.input]  # an empty optional input keeps its place
            results = fold(node.op_type, arrays, self.attrs(node), where)
            self.consts.update((name, r) for name, r in zip(node.output, results) if name)
            return
        if node.op_type not in NOT_FOLDED and foldable and self._fold(node, where):
            return
        converter = ONNX.get(node.op_type)
        if converter is None and (node.op_type.startswith(("Sequence", "String", "Optional"))
                                  or node.op_type in ("ConcatFromSequence", "SplitToSequence", "RegexFullMatch")):
            raise UnsupportedError(f"{where}: {node.op_type} works on sequences, optionals or strings, which graphopt's "
                                   "tensor IR leaves out of scope; keep that part of the model outside the graph")
        if converter is None:
            raise UnsupportedError(
                f"{where}: unsupported ONNX op {node.op_type!r}; register a converter with "
                f"@graphopt.frontends.onnx.register_onnx({node.op_type!r}) and, if the IR lacks the op, "
                "graphopt.register_op")
        try:
            result = converter(self, node)
        except GraphoptError as e:
            raise located(e, where) from None
        except (ArithmeticError, AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
            raise InternalError(f"{where}: the ONNX converter failed ({type(e).__name__}: {e}); this is a bug in "
                                "graphopt: please report it with the model") from e
        results = list(result) if isinstance(result, list | tuple) else [result]
        for name, r in zip(node.output, results):
            if not name:
                continue
            if isinstance(r, np.ndarray):
                self.consts[name] = r
            else:
                r.name = name
                self.values[name] = r

    def _fold(self, node: onnx.NodeProto, where: str) -> bool:
        """Evaluate an all-constant node; False (convert it as an IR node instead) if onnx cannot."""
        from onnx.reference import ReferenceEvaluator

        feeds = {i: self.consts[i] for i in node.input if i}
        try:
            outputs = ReferenceEvaluator(node).run(None, feeds)
        except Exception as e:
            if node.op_type == "Constant" or node.op_type not in ONNX:
                raise GraphoptError(f"{where}: cannot evaluate constant subgraph: {type(e).__name__}: {e}") from None
            return False
        for name, array in zip(node.output, outputs):
            if name:
                self.consts[name] = np.asarray(array)
                if node.op_type == "Constant":
                    check_finite(self.consts[name], f"{where}: value")
        return True

def _check_text(model: onnx.ModelProto) -> None:
    """protobuf hands back a string field that is not UTF-8 as bytes: refuse the file naming it."""
    g = model.graph
    fields = [("graph name", g.name)] + [(f"tensor name {i}", v.name) for i, v in
                                          enumerate([*g.input, *g.output, *g.initializer, *g.value_info])]
    for i, node in enumerate(g.node):
        fields += [(f"node {i} {what}", text) for what, text in
                   [("name", node.name), ("op_type", node.op_type), ("domain", node.domain),
                    *((f"input {j}", t) for j, t in enumerate(node.input)),
                    *((f"output {j}", t) for j, t in enumerate(node.output)),
                    *((f"attribute {j} name", a.name) for j, a in enumerate(node.attribute))]]
    for what, text in fields:
        if not isinstance(text, str):
            raise GraphoptError(f"malformed ONNX model: the {what} is not UTF-8 text: {text!r}")


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned.isidentifier() else ""


def _dtype(elem_type: int, what: str) -> DType:
    _defined_element_type(elem_type, what)
    try:
        return DType.of(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ShapeError, TypeError):
        name = onnx.TensorProto.DataType.Name(elem_type)
        raise UnsupportedError(f"{what}: ONNX element type {name} is not supported") from None


def _pinned(name: str, dims: list[Dim], pins: Sequence[Dim | None]) -> list[Dim]:
    if len(pins) != len(dims):
        raise GraphoptError(f"input_shapes[{name!r}] has {len(pins)} dims but the input has rank {len(dims)} "
                            f"({fmt_shape(dims)})")
    out: list[Dim] = []
    for axis, (have, want) in enumerate(zip(dims, pins)):
        if want is None:
            out.append(have)
        elif isinstance(have, int) and have != want:
            raise GraphoptError(f"input_shapes[{name!r}] pins dim {axis} to {want}, but the file fixes it at {have}")
        else:
            out.append(want if isinstance(want, str) else int(want))
    return out


def from_onnx(source: str | os.PathLike[str] | bytes | onnx.ModelProto,
              input_shapes: Mapping[str, Sequence[Dim | None]] | None = None) -> Graph:
    """Import an ONNX model (file path, serialized bytes or ModelProto). Dims the file names, leaves
    empty, or writes as -1 or `?` stay symbolic; `input_shapes={"x": [1, 3, 48, None]}` pins dims
    (an int fixes one, a name makes it that symbol, None keeps the file's)."""
    from graphopt.frontends import onnx_ops  # noqa: F401  (registers the converters)

    model = load_model(source)
    try:  # a file is checked from disk: the checker cannot serialize a model over 2 GB in memory
        onnx.checker.check_model(str(source) if isinstance(source, str | os.PathLike) else model)
    except onnx.checker.ValidationError as e:
        raise GraphoptError(f"malformed ONNX model: {str(e).strip().splitlines()[0]}") from None
    except (ValueError, EncodeError):
        pass  # a ModelProto over 2 GB: the importer does not need the checker's serialization
    _check_text(model)
    model = _upgraded(model)
    importer = OnnxImporter(model)
    importer.pins = {k: list(v) for k, v in (input_shapes or {}).items()}
    known = [vi.name for vi in model.graph.input if vi.name not in {i.name for i in model.graph.initializer}]
    unknown = sorted(set(importer.pins) - set(known))
    if unknown:
        raise GraphoptError(f"input_shapes names {', '.join(unknown)}, which the model does not take "
                            f"(its inputs: {', '.join(known)})")
    return importer.run()


UPGRADE_TO = 13  # old files are read in this opset's terms


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgraded(model: onnx.ModelProto) -> onnx.ModelProto:
    """A model of opset 7 to 10 converted by onnx's version converter (the importer reads opset 11
    and up), with a warning saying so; older than 7 (which ONNX Runtime no longer runs) is refused."""
    opset = default_opset(model)
    if opset >= 11:
        return model
    if opset < 7:
        raise UnsupportedError(f"ONNX opset {opset} is older than 7, the oldest ONNX Runtime runs; re-export the model")
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, UPGRADE_TO)
    except Exception as e:  # the converter raises RuntimeError or its own C++ errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"ONNX opset {opset}: onnx's version converter could not upgrade the model to "
                               f"opset {UPGRADE_TO} ({first}); re-export it at opset 11 or later") from None
    warnings.warn(f"ONNX opset {opset} upgraded to {UPGRADE_TO} with onnx.version_converter", stacklevel=3)
    return upgraded
