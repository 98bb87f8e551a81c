"""PyTorch frontend: torch.export (functionalized ATen, nothing decomposed that the IR covers) into
the graph IR. Parameters keep their state-dict names; nodes keep their module path in `loc`.

An ATen op without a converter is a clear error naming the op and the module path; add one with
`@register_aten("op.overload")` (and, if the IR lacks the op, `graphopt.register_op`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx

from graphopt.errors import GraphoptError, ShapeError, UnsupportedError, located
from graphopt.ir import symbolic as sym
from graphopt.ir.graph import Graph
from graphopt.ir.types import Dim, DType, TensorType
from graphopt.ir.value import Value, check_finite

Converter = Callable[["TorchImporter", torch.fx.Node], Any]
ATEN: dict[str, Converter] = {}

_DTYPES = {torch.float32: DType.float32, torch.float16: DType.float16, torch.float64: DType.float64,
           torch.int64: DType.int64, torch.int32: DType.int32, torch.int16: DType.int16,
           torch.int8: DType.int8, torch.uint8: DType.uint8, torch.bool: DType.bool}


def register_aten(*names: str) -> Callable[[Converter], Converter]:
    """Register a converter for ATen overloads such as "relu.default" (the `aten.` prefix is implied)."""

    def add(fn: Converter) -> Converter:
        for name in names:
            ATEN[f"aten.{name}"] = fn
        return fn

    return add


def dtype_of(torch_dtype: torch.dtype) -> DType:
    try:
        return _DTYPES[torch_dtype]
    except KeyError:
        raise ShapeError(f"dtype {torch_dtype} is not supported (supported: {', '.join(map(str, _DTYPES))})") from None


SYMPY_OPS: dict[str, Callable[..., Dim]] = {
    "Add": sym.add, "Mul": sym.mul, "FloorDiv": sym.floordiv, "Mod": sym.mod, "PythonMod": sym.mod,
    "CeilDiv": sym.ceildiv, "Max": lambda *a: functools.reduce(sym.maximum, a),
    "Min": lambda *a: functools.reduce(sym.minimum, a)}  # torch's size expressions (torch.utils._sympy)


class SymDim:
    """A symbolic size (torch.SymInt) flowing through shape arithmetic; never a tensor."""

    def __init__(self, size: Dim) -> None:
        self.size = size


class TorchImporter:
    def __init__(self, program: torch.export.ExportedProgram, name: str, decomposed: Sequence[str] = ()) -> None:
        """`decomposed`: the ops torch's table decomposed because no converter took them."""
        self.program = program
        self.graph = Graph(name)
        self.env: dict[str, Any] = {}
        self.symbols: dict[str, str] = {}
        self.node: torch.fx.Node | None = None
        self._consts: dict[tuple[Any, ...], Value] = {}
        self.decomposed = list(decomposed)

    # --- helpers used by converters ---------------------------------------------------------------
    @property
    def loc(self) -> str:
        stack = self.node.meta.get("nn_module_stack") if self.node is not None else None
        return list(stack.values())[-1][0] if stack else ""

    def where(self) -> str:
        assert self.node is not None
        return f"{self.node.target} (node {self.node.name}, module {self.loc or '<root>'!r})"

    def dim(self, d: Any) -> Dim:
        """An int or a SymInt (its sympy expression) as an IR dim."""
        if isinstance(d, int):
            return d
        expr = d.node.expr if isinstance(d, torch.SymInt) else d
        try:
            return self._sympy_dim(expr)
        except (KeyError, TypeError):
            raise ShapeError(f"{self.where()}: dynamic size {expr} is an expression the IR cannot express; "
                             "export with static sizes for the dims it reads") from None

    def _sympy_dim(self, expr: Any) -> Dim:
        if expr.is_Integer:
            return int(expr)
        if expr.is_Symbol:
            return self.symbols.setdefault(str(expr), f"s{len(self.symbols)}")
        args = [self._sympy_dim(a) for a in expr.args]
        kind = type(expr).__name__
        if kind == "Pow" and isinstance(args[1], int) and args[1] > 0:
            return sym.prod([args[0]] * args[1])
        return SYMPY_OPS[kind](*args)

    def meta_type(self, node: torch.fx.Node) -> TensorType:
        return self.meta_type_of(node.meta["val"])

    def shape(self, node: torch.fx.Node | None = None) -> tuple[Dim, ...]:
        return self.meta_type(node or self.node).shape  # type: ignore[arg-type]

    def value(self, arg: Any, dtype: DType | None = None) -> Value:
        """The Value of an fx argument (cast to `dtype` when given); Python scalars become constants."""
        if isinstance(arg, torch.fx.Node):
            v = self.env[arg.name]
            if not isinstance(v, Value):
                raise GraphoptError(f"{self.where()}: operand {arg.name} is not a tensor")
            return v if dtype is None or v.dtype is dtype else self.emit("to", [v], {"dtype": dtype}, name="")
        if isinstance(arg, bool | int | float):
            return self.const(arg, dtype or (DType.float32 if isinstance(arg, float) else DType.int64))
        raise GraphoptError(f"{self.where()}: unsupported operand {arg!r}")

    def const(self, value: Any, dtype: DType) -> Value:
        key = (float(value) if not isinstance(value, bool) else value, dtype)
        if key not in self._consts:
            data = np.asarray(value, dtype=dtype.numpy)
            self._consts[key] = self.graph.add_parameter(data, f"_const_{len(self._consts)}")
        return self._consts[key]

    def emit(self, op: str, operands: Sequence[Value], attrs: dict[str, Any] | None = None,
             name: str | None = None) -> Value:
        node = self.graph.create(op, operands, attrs or {}, loc=self.loc,
                                 names=[self.node.name if name is None and self.node is not None else name or ""])
        return node.results[0] if len(node.results) == 1 else tuple(node.results)  # type: ignore[return-value]

    def common_dtype(self, *args: Any) -> DType:
        """torch's type promotion (a Python scalar does not widen a tensor of its own kind)."""
        proxies = []
        for a in args:
            if isinstance(a, torch.fx.Node):
                val = a.meta["val"]
                proxies.append(torch.empty((1,) * min(val.dim(), 1), dtype=val.dtype))
            else:
                proxies.append(a)
        result = proxies[0]
        for p in proxies[1:]:
            dtype = torch.result_type(result, p)
            result = torch.empty((1,) if any(isinstance(x, torch.Tensor) and x.dim() for x in (result, p)) else (),
                                 dtype=dtype)
        return dtype_of(result.dtype if isinstance(result, torch.Tensor) else torch.tensor(result).dtype)

    # --- the walk -----------------------------------------------------------------------------------
    def run(self, dynamic_batch: bool, names: Sequence[dict[int, str]] = ()) -> Graph:
        """`names`: per user input, axis -> the name its dynamic dim gets (from dynamic_shapes)."""
        sig = self.program.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs if hasattr(s.arg, "name")}
        placeholders = [n for n in self.program.graph.nodes if n.op == "placeholder"]
        user = 0
        for node in placeholders:
            self.node = node
            spec = specs.get(node.name)
            kind = spec.kind.name if spec is not None else "USER_INPUT"
            if kind == "USER_INPUT":
                self._name_symbols(node, names[user] if user < len(names) else {}, dynamic_batch)
                user += 1
                self.env[node.name] = self.graph.add_input(self.meta_type(node), node.name)
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                self.env[node.name] = self._parameter(spec.target, kind)
            else:
                raise GraphoptError(f"input {node.name} of kind {kind} is not supported")
        for node in self.program.graph.nodes:
            self.node = node
            if node.op == "call_function":
                self.env[node.name] = self._convert(node)
            elif node.op == "output":
                self._outputs(node)
        unused = [p for p in self.graph.parameters if not p.is_used]
        self.graph.remove_parameters(*unused)
        return self.graph

    def _name_symbols(self, node: torch.fx.Node, names: dict[int, str], dynamic_batch: bool) -> None:
        """Input dims get the names dynamic_shapes gave them (`N` for dynamic_batch's batch)."""
        for i, d in enumerate(node.meta["val"].shape):
            key = str(d.node.expr) if isinstance(d, torch.SymInt) else None
            if key is not None and key not in self.symbols:
                taken = set(self.symbols.values())
                wanted = names.get(i) or ("N" if i == 0 and dynamic_batch else None)
                self.symbols[key] = wanted if wanted and wanted not in taken else f"s{len(self.symbols)}"

    def _parameter(self, target: str, kind: str) -> Value:
        tensor = (self.program.constants.get(target) if kind == "CONSTANT_TENSOR"
                  else self.program.state_dict.get(target, self.program.constants.get(target)))
        if not isinstance(tensor, torch.Tensor):
            raise GraphoptError(f"parameter {target} has no tensor data")
        data = tensor.detach().cpu().contiguous().numpy().copy()
        check_finite(data, f"parameter {target}")
        return self.graph.add_parameter(data, target)

    def _convert(self, node: torch.fx.Node) -> Any:
        import operator

        if node.target is operator.getitem:
            return self.env[node.args[0].name][node.args[1]]  # type: ignore[union-attr]
        name = str(node.target)
        if name.startswith("aten.sym_size") or name.startswith("aten.sym_numel"):
            return SymDim(self.dim(node.meta["val"]))
        if name.startswith("aten._assert") or name.startswith("aten.sym_constrain"):
            return None
        if isinstance(node.target, type(operator.mul)) and node.target.__module__ == "_operator":
            return SymDim(self.dim(node.meta["val"]))  # size arithmetic on SymInts
        converter = ATEN.get(name)
        if converter is None:
            origin = f" (from torch's decomposition of {', '.join(self.decomposed)})" if self.decomposed else ""
            wanted = ", ".join(repr(n.removeprefix("aten.")) for n in (self.decomposed or [name]))
            raise UnsupportedError(
                f"unsupported op {name}{origin} at module {self.loc or '<root>'!r} (node {node.name}); register a "
                f"converter with @graphopt.frontends.torch.register_aten({wanted}) and, if the IR lacks the op, "
                "graphopt.register_op")
        try:
            out = converter(self, node)
        except GraphoptError as e:
            raise located(e, self.where()) from None
        self._check(node, out)
        return out

    def _check(self, node: torch.fx.Node, out: Any) -> None:
        """Every converted result must have exactly the type torch computed."""
        vals = node.meta.get("val")
        outs = out if isinstance(out, tuple) else (out,)
        vals = vals if isinstance(vals, list | tuple) else (vals,)
        for v, val in zip(outs, vals):
            if isinstance(v, Value) and isinstance(val, torch.Tensor):
                expected = self.meta_type_of(val)
                if v.type != expected:
                    raise GraphoptError(f"{self.where()}: converted to {v.type}, torch computes {expected}; "
                                        "the converter is wrong")

    def meta_type_of(self, val: torch.Tensor) -> TensorType:
        return TensorType(dtype_of(val.dtype), [self.dim(d) for d in val.shape])

    def _outputs(self, node: torch.fx.Node) -> None:
        user = {s.arg.name for s in self.program.graph_signature.output_specs
                if s.kind.name == "USER_OUTPUT" and hasattr(s.arg, "name")}
        outputs = []
        for arg in torch.fx.node.map_arg(node.args[0], lambda n: n) if node.args else []:
            if isinstance(arg, torch.fx.Node) and arg.name in user:
                outputs.append(self.value(arg))
        self.graph.outputs = outputs


# --- entry point --------------------------------------------------------------------------------------
def export(model: Any, example_inputs: Sequence[Any] | None, dynamic_batch: bool,
           example_kwargs: dict[str, Any] | None = None, dynamic_shapes: Any = None) -> torch.export.ExportedProgram:
    if isinstance(model, torch.export.ExportedProgram):
        return model
    if not isinstance(model, torch.nn.Module):
        kind = type(model).__name__
        raise GraphoptError(f"from_torch takes an nn.Module, a GraphModule or an ExportedProgram, got {kind}")
    args = tuple(example_inputs or ())
    kwargs = dict(example_kwargs or {})
    dynamic = dynamic_shapes
    if dynamic_batch and dynamic_shapes is not None:
        raise GraphoptError("give dynamic_batch=True or dynamic_shapes=, not both (a batch Dim in dynamic_shapes "
                            "is what dynamic_batch means)")
    if dynamic_batch:
        batch = torch.export.Dim("N", min=1, max=4096)
        args = tuple(_batch_of_two(a) for a in args)
        kwargs = {k: _batch_of_two(v) for k, v in kwargs.items()}
        dynamic = ([{0: batch} if isinstance(a, torch.Tensor) else None for a in args] if args
                   else {k: {0: batch} for k in kwargs})
    model = model.eval()
    try:
        return torch.export.export(model, args, kwargs or None, dynamic_shapes=dynamic)
    except Exception as e:  # torch raises many types for untraceable code
        lines = str(e).strip().splitlines() or [type(e).__name__]
        first = lines[0]
        if "Constraints violated" in first:  # torch's reasons follow as "  - ..." lines
            reasons = [line.strip(" -") for line in lines if line.startswith("  - ")][:3]
            hint = ("; ".join(reasons) + "; narrow the Dims' ranges to what the model accepts, or give "
                    "torch.export.Dim.AUTO")
        elif "data-dependent" in str(e).lower() or "guard" in str(e).lower():
            hint = ("data-dependent control flow or shapes: rewrite the branch with torch.cond or make it depend only "
                    "on shapes")
        else:
            hint = "see the message; graphopt traces models with torch.export"
        raise UnsupportedError(f"torch.export could not trace {type(model).__name__}: {type(e).__name__}: {first} "
                            f"({hint})") from e


def _batch_of_two(x: Any) -> Any:
    """A batch-1 example specializes the batch dim; repeat it so the export stays dynamic."""
    if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == 1:
        return x.repeat(2, *([1] * (x.dim() - 1)))
    return x


def from_torch(model: Any, example_inputs: Sequence[Any] | None = None, *, dynamic_batch: bool = False,
               dynamic_shapes: Any = None, example_kwargs: dict[str, Any] | None = None,
               name: str | None = None) -> Graph:
    """Trace `model` (nn.Module, fx GraphModule or ExportedProgram) into a Graph. `dynamic_shapes`
    is torch.export's spec (per input, axis -> torch.export.Dim("L", ...)); the IR's symbols take
    the Dims' names. `dynamic_batch=True` is the spec with one `N` on every input's first axis."""
    from graphopt.frontends import torch_ops  # noqa: F401  (registers the converters)

    program = export(model, example_inputs, dynamic_batch, example_kwargs, dynamic_shapes)
    with torch.no_grad():
        program = program.run_decompositions({})  # functionalize; keep conv2d, linear, layer_norm, ...
        program, decomposed = _decompose_unconverted(program)
    label = name or (type(model).__name__ if not isinstance(model, torch.export.ExportedProgram) else "main")
    importer = TorchImporter(program, label if label.isidentifier() else "main", decomposed)
    return importer.run(dynamic_batch, _dim_names(dynamic_shapes))


def _decompose_unconverted(program: torch.export.ExportedProgram) -> tuple[torch.export.ExportedProgram, list[str]]:
    """Ops without a converter, decomposed by torch's own table into ops that may have one
    (aten.addcmul, aten.diff), while that makes progress; and the ops it decomposed. What is left
    is the importer's clear error."""
    table = torch.export.default_decompositions()
    decomposed: list[str] = []
    for _ in range(4):
        missing = {n.target for n in program.graph.nodes if n.op == "call_function"
                   and str(n.target).startswith("aten.") and str(n.target) not in ATEN and n.target in table
                   and not str(n.target).startswith(("aten.sym_", "aten._assert"))}
        if not missing:
            break
        decomposed += sorted(map(str, missing))
        program = program.run_decompositions({op: table[op] for op in missing})
    return program, decomposed


def _dim_names(dynamic_shapes: Any) -> list[dict[int, str]]:
    """Per user input in order, axis -> the name of its torch.export.Dim."""
    if dynamic_shapes is None:
        return []
    specs = list(dynamic_shapes.values()) if isinstance(dynamic_shapes, dict) else list(dynamic_shapes)
    return [{axis: getattr(d, "__name__", "") for axis, d in (s.items() if isinstance(s, dict) else enumerate(s or ()))
             if d is not None} for s in specs]
