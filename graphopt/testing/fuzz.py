"""A mutation fuzzer for the ONNX frontend, the text IR and everything behind them.

Each mutant of a seed model (op types, attributes, input dims, initializers, Constant nodes, edges,
raw bytes) or of a seed's text IR (tokens swapped, dropped, duplicated) goes through import, verify,
the clean-up, weight-only quantization, pruning and sparsity passes, the interpreter and the ONNX
backend. The contract
is that every mutant either gives a valid result or a graphopt error naming the problem: any other
exception, an InternalError (graphopt's own "this is a bug"), or a mutant that runs past its time
limit is a finding, saved with its traceback so it can be pinned as a test.

Mutant `i` of a seed depends only on (seed, model name, i), so a finding reproduces alone:
`python -m graphopt.testing.fuzz --seed S --only NAME:I`. CI runs a short budget; the long profile
is `python -m graphopt.testing.fuzz --budget 20000`."""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.errors import GraphoptError, InternalError
from graphopt.ir.types import bind_dims

PIPELINES = ("canonicalize,fold-bn,fuse-activation,quantize{activations=none,budget=0}",
             "prune{ratio=0.5,round-to=1},sparsify{pattern=2:4}")
INTERESTING_INTS = [-(2**31), -7, -3, -2, -1, 0, 1, 2, 3, 4, 5, 8, 64, 2**31 - 1, 2**40]
INTERESTING_FLOATS = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-30, 0.5, 6.0, 1e30]
STRINGS = ["", "NOTSET", "SAME_UPPER", "VALID", "nearest", "linear", "cubic", "asymmetric", "align_corners",
           "tanh", "reflect", "edge", "floor", "bogus"]


class Hang(Exception):
    """A mutant that ran past its time limit."""


@dataclass
class Finding:
    """A mutant that broke the contract: its name, what was mutated, and the traceback."""

    mutant: str
    mutations: list[str]
    error: str
    trace: str
    data: bytes  # the mutant: ONNX bytes, or IR text encoded


@dataclass
class FuzzReport:
    mutants: int = 0
    valid: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # graphopt error class -> count
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        rejected = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common())
        lines = [f"{self.mutants} mutants in {self.seconds:.1f} s: {self.valid} valid results, "
                 f"{sum(self.rejected.values())} graphopt errors ({rejected or 'none'}), "
                 f"{len(self.findings)} findings"]
        lines += [f"  {f.mutant} [{'; '.join(f.mutations)}]: {f.error}" for f in self.findings]
        return "\n".join(lines)


# --- seed models ------------------------------------------------------------------------------------
def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[str],
           inits: list[TensorProto], name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="graphopt-fuzz")
    return _typed_outputs(model)


def _typed_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Output types as ONNX's shape inference gives them (the checker needs them)."""
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model, data_prop=True).graph.value_info}
    for out in model.graph.output:
        out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model)
    return model


def seed_models() -> dict[str, onnx.ModelProto]:
    """Small models in the shapes exporters write: a CNN (grouped conv, batch norm, pools, resize,
    residual, concat, Gemm), a transformer block (shape arithmetic, attention, layer norm, gather),
    and a grab-bag of layout ops (slice, split, pad, clip, expand, squeeze, transpose, where)."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    cnn = _model([
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], "conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], "bn1"),
        helper.make_node("Relu", ["bn"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "dw.w"], ["dw"], "dwconv", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["dw", "lo", "hi"], ["dwc"], "relu6"),
        helper.make_node("Add", ["dwc", "r1"], ["res"], "residual"),
        helper.make_node("MaxPool", ["res"], ["mp"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["res"], ["ap"], "avgpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["mp", "ap"], ["cat"], "concat", axis=1),
        helper.make_node("Resize", ["cat", "", "scales"], ["up"], "upsample", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("ConvTranspose", ["up", "ct.w"], ["ct"], "deconv", strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ct"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], "fc", transB=1),
    ], [x], ["y"], [_init("c1.w", w(8, 3, 3, 3)), _init("c1.b", w(8)), _init("bn.s", w(8)), _init("bn.b", w(8)),
                    _init("bn.m", w(8)), _init("bn.v", np.abs(w(8)) + 0.5), _init("dw.w", w(8, 1, 3, 3)),
                    _init("lo", np.array(0, np.float32)), _init("hi", np.array(6, np.float32)),
                    _init("scales", np.array([1, 1, 2, 2], np.float32)), _init("ct.w", w(16, 4, 2, 2)),
                    _init("fc.w", w(5, 4)), _init("fc.b", w(5))], "cnn")

    t = helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 6, 8])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 6])
    transformer = _model([
        helper.make_node("Gather", ["emb", "ids"], ["e"], "embed"),
        helper.make_node("Add", ["t", "e"], ["h"], "embed_add"),
        helper.make_node("LayerNormalization", ["h", "ln.s", "ln.b"], ["n"], "ln", axis=-1),
        helper.make_node("MatMul", ["n", "qkv.w"], ["qkv"], "qkv"),
        helper.make_node("Split", ["qkv", "split"], ["q", "k", "v"], "split", axis=-1),
        helper.make_node("Shape", ["q"], ["qs"], "shape"),
        helper.make_node("Gather", ["qs", "zero"], ["b"], "batch", axis=0),
        helper.make_node("Unsqueeze", ["b", "zero1"], ["b1"], "unsq"),
        helper.make_node("Concat", ["b1", "heads"], ["hs"], "heads_shape", axis=0),
        helper.make_node("Reshape", ["q", "hs"], ["qh"], "q_heads"),
        helper.make_node("Reshape", ["k", "hs"], ["kh"], "k_heads"),
        helper.make_node("Reshape", ["v", "hs"], ["vh"], "v_heads"),
        helper.make_node("Transpose", ["qh"], ["qt"], "q_t", perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["kh"], ["kt"], "k_t", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["vh"], ["vt"], "v_t", perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qt", "kt"], ["s"], "scores"),
        helper.make_node("Div", ["s", "sqrt_d"], ["sd"], "scale"),
        helper.make_node("Softmax", ["sd"], ["p"], "softmax", axis=-1),
        helper.make_node("MatMul", ["p", "vt"], ["o"], "attend"),
        helper.make_node("Transpose", ["o"], ["ot"], "o_t", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ot", "flat_shape"], ["of"], "merge"),
        helper.make_node("Gemm", ["of", "out.w", "out.b"], ["y2d"], "out_proj"),
        helper.make_node("Reshape", ["y2d", "back"], ["y"], "unmerge"),
        helper.make_node("ReduceMean", ["y"], ["m"], "pool", axes=[1], keepdims=0),
        helper.make_node("Softplus", ["m"], ["g"], "softplus"),
    ], [t, ids], ["g"], [_init("emb", w(10, 8)), _init("ln.s", w(8)), _init("ln.b", w(8)), _init("qkv.w", w(8, 24)),
                         _init("split", np.array([8, 8, 8], np.int64)), _init("zero", np.array(0, np.int64)),
                         _init("zero1", np.array([0], np.int64)), _init("heads", np.array([6, 2, 4], np.int64)),
                         _init("sqrt_d", np.array(2.0, np.float32)), _init("flat_shape", np.array([12, 8], np.int64)),
                         _init("out.w", w(8, 8)), _init("out.b", w(8)), _init("back", np.array([2, 6, 8], np.int64))],
                         "transformer")

    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4, 6])
    layout = _model([
        helper.make_node("Slice", ["z", "st", "en", "ax", "sp"], ["sl"], "slice"),
        helper.make_node("Pad", ["sl", "pads", "pv"], ["pd"], "pad", mode="constant"),
        helper.make_node("Squeeze", ["pd", "sq_ax"], ["sq"], "squeeze"),
        helper.make_node("Unsqueeze", ["sq", "sq_ax"], ["us"], "unsqueeze"),
        helper.make_node("Expand", ["us", "ex_shape"], ["ex"], "expand"),
        helper.make_node("Sigmoid", ["ex"], ["sg"], "sigmoid"),
        helper.make_node("Greater", ["ex", "half"], ["mask"], "gt"),
        helper.make_node("Where", ["mask", "ex", "sg"], ["wh"], "where"),
        helper.make_node("Constant", [], ["cst"], "const", value=numpy_helper.from_array(w(1, 1, 1))),
        helper.make_node("Mul", ["wh", "cst"], ["mu"], "mul"),
        helper.make_node("Transpose", ["mu"], ["tr"], "transpose", perm=[2, 0, 1]),
        helper.make_node("ReduceSum", ["tr", "rs_ax"], ["rs"], "reduce", keepdims=1),
        helper.make_node("Cast", ["rs"], ["ca"], "cast", to=TensorProto.FLOAT),
        helper.make_node("Tanh", ["ca"], ["y"], "tanh"),
    ], [z], ["y"], [_init("st", np.array([0, 1], np.int64)), _init("en", np.array([1, 5], np.int64)),
                    _init("ax", np.array([0, 2], np.int64)), _init("sp", np.array([1, 1], np.int64)),
                    _init("pads", np.array([0, 0, 1, 0, 0, 1], np.int64)), _init("pv", np.array(0.5, np.float32)),
                    _init("sq_ax", np.array([0], np.int64)), _init("ex_shape", np.array([3, 4, 6], np.int64)),
                    _init("half", np.array(0.5, np.float32)), _init("rs_ax", np.array([0], np.int64))], "layout")
    return {"cnn": cnn, "transformer": transformer, "layout": layout}


# --- ONNX mutations ---------------------------------------------------------------------------------
def _tensor_names(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    return [v.name for v in g.input] + [i.name for i in g.initializer] + [o for n in g.node for o in n.output if o]


def _mutate_op_type(rng: random.Random, model: onnx.ModelProto) -> str:
    from graphopt.frontends import onnx_ops  # noqa: F401  (the converter table)
    from graphopt.frontends.onnx import ONNX

    node = rng.choice(model.graph.node)
    old, node.op_type = node.op_type, rng.choice(sorted(ONNX))
    return f"op {node.name}: {old} -> {node.op_type}"


def _mutate_attribute(rng: random.Random, model: onnx.ModelProto) -> str:
    nodes = [n for n in model.graph.node if n.attribute and n.op_type != "Constant"]
    if not nodes:
        return _mutate_edge(rng, model)
    node = rng.choice(nodes)
    attr = rng.choice(node.attribute)
    if rng.random() < 0.1:
        node.attribute.remove(attr)
        return f"attr {node.name}.{attr.name} removed"
    if attr.type == onnx.AttributeProto.INT:
        attr.i = rng.choice(INTERESTING_INTS)
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = rng.choice(INTERESTING_FLOATS)
    elif attr.type == onnx.AttributeProto.STRING:
        attr.s = rng.choice(STRINGS).encode()
    elif attr.type == onnx.AttributeProto.INTS:
        ints = list(attr.ints)
        choice = rng.randrange(3)
        if choice == 0 and ints:
            ints.pop(rng.randrange(len(ints)))
        elif choice == 1:
            ints.insert(rng.randrange(len(ints) + 1), rng.choice(INTERESTING_INTS))
        elif ints:
            ints[rng.randrange(len(ints))] = rng.choice(INTERESTING_INTS)
        del attr.ints[:]
        attr.ints.extend(ints)
    else:
        return f"attr {node.name}.{attr.name} kept"
    return f"attr {node.name}.{attr.name} -> {helper.get_attribute_value(attr)!r}"


def _mutate_input_dims(rng: random.Random, model: onnx.ModelProto) -> str:
    vi = rng.choice(model.graph.input)
    dims = vi.type.tensor_type.shape.dim
    choice = rng.randrange(4)
    if choice == 0 and len(dims):
        dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 2, 3, 5, 7, 33])
    elif choice == 1 and len(dims):
        del dims[rng.randrange(len(dims))]
    elif choice == 2:
        dims.add().dim_value = rng.choice([1, 2, 3])
    elif len(dims):
        dims[rng.randrange(len(dims))].dim_param = rng.choice(["N", "height", "seq", "?"])
    return f"input {vi.name} -> {[d.dim_value if d.HasField('dim_value') else d.dim_param for d in dims]}"


def _altered_array(rng: random.Random, data: np.ndarray) -> tuple[np.ndarray, str]:
    choice = rng.randrange(7)
    if choice == 0:
        return data.reshape(-1), "flattened"
    if choice == 1:
        return data.reshape(1, *data.shape), "rank + 1"
    if choice == 2 and data.size:
        return np.asarray(data.reshape(-1)[0]), "scalar"
    if choice == 3:
        return data.reshape(-1)[: max(0, data.size - 1)], "one element fewer"
    if choice == 4 and data.dtype.kind == "f" and data.size:
        out = data.copy()
        out.reshape(-1)[rng.randrange(data.size)] = rng.choice(INTERESTING_FLOATS)
        return out, "special value"
    if choice == 5:
        dtype = rng.choice([np.float32, np.int64, np.int32, np.float16, np.bool_, np.uint8])
        return data.astype(dtype), f"as {np.dtype(dtype).name}"
    return np.asarray(rng.choice(INTERESTING_INTS), np.int64).reshape([1] * rng.randrange(3)), "random int"


def _mutate_initializer(rng: random.Random, model: onnx.ModelProto) -> str:
    inits = model.graph.initializer
    index = rng.randrange(len(inits))
    data = numpy_helper.to_array(inits[index])
    new, how = _altered_array(rng, data)
    name = inits[index].name
    if rng.random() < 0.3:  # as a Constant node, the other way exporters store constants
        del inits[index]
        model.graph.node.insert(0, helper.make_node("Constant", [], [name], f"const_{name}",
                                                    value=numpy_helper.from_array(new)))
        return f"initializer {name} -> Constant node, {how}"
    inits[index].CopyFrom(numpy_helper.from_array(new, name))
    return f"initializer {name}: {how}"


def _mutate_edge(rng: random.Random, model: onnx.ModelProto) -> str:
    node = rng.choice(model.graph.node)
    names = _tensor_names(model)
    choice = rng.randrange(4)
    if choice == 0 and len(node.input):
        i = rng.randrange(len(node.input))
        node.input[i] = rng.choice(names)
        return f"edge {node.name} input {i} -> {node.input[i]}"
    if choice == 1 and len(node.input):
        node.input.pop()
        return f"edge {node.name}: last input dropped"
    if choice == 2:
        node.input.append(rng.choice([*names, ""]))
        return f"edge {node.name}: input {node.input[-1]!r} appended"
    if len(node.input):
        node.input[rng.randrange(len(node.input))] = ""
    return f"edge {node.name}: an input made optional-empty"


ONNX_MUTATIONS: list[Callable[[random.Random, onnx.ModelProto], str]] = [
    _mutate_op_type, _mutate_attribute, _mutate_attribute, _mutate_input_dims, _mutate_initializer,
    _mutate_initializer, _mutate_edge]


def _mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    buf = bytearray(data)
    choice = rng.randrange(3)
    if choice == 0:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf), "bytes flipped"
    if choice == 1:
        return bytes(buf[: rng.randrange(len(buf))]), "truncated"
    at = rng.randrange(len(buf))
    return bytes(buf[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + buf[at:]), "bytes inserted"


# --- text IR mutations ------------------------------------------------------------------------------
def _mutate_text(rng: random.Random, text: str) -> tuple[str, str]:
    from graphopt.ir.parser import _TOKEN

    tokens = [m for m in _TOKEN.finditer(text) if m.lastgroup != "skip"]
    if not tokens:
        return text, "no tokens"
    tok = rng.choice(tokens)
    choice = rng.randrange(5)
    if choice == 0 and tok.lastgroup == "number":
        new = str(rng.choice(INTERESTING_INTS + INTERESTING_FLOATS))
    elif choice == 1:
        new = rng.choice([t.group() for t in tokens])
    elif choice == 2:
        new = ""
    elif choice == 3:
        lines = text.splitlines(keepends=True)
        i = rng.randrange(len(lines))
        lines.insert(i, lines[rng.randrange(len(lines))])
        return "".join(lines), f"line {i + 1} duplicated"
    else:
        new = rng.choice(["float16", "int64", "bool", "N", "0", "-1", "relu", "conv2d", "reshape", "%x", "[", "}"])
    return text[:tok.start()] + new + text[tok.end():], f"token {tok.group()!r} at {tok.start()} -> {new!r}"


# --- running a mutant ---------------------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread once `seconds` pass (no limit off the main thread)."""
    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds:g} s")

    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return
    try:
        previous = signal.signal(signal.SIGALRM, fire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def exercise(graph: Any, workdir: Path) -> None:
    """Everything after import: verify, the passes, the interpreter and the ONNX backend."""
    from graphopt.backends.onnx import to_onnx
    from graphopt.interp import interpret
    from graphopt.ir.verifier import verify
    from graphopt.pipeline import run_pipeline

    verify(graph)
    rng = np.random.default_rng(0)
    sizes = {s: 2 for s in graph.symbols()}
    shapes = [bind_dims(v.shape, sizes) for v in graph.inputs]
    inputs = [(rng.standard_normal(shape) * 2).astype(v.dtype.numpy) if v.dtype.is_float else
              np.ones(shape, v.dtype.numpy) for v, shape in zip(graph.inputs, shapes)]
    if sum(a.size for a in inputs) < 1 << 20:  # a mutated huge input dim is checked, not run
        interpret(graph, *inputs)
    for pipeline in PIPELINES:
        result = run_pipeline(graph, pipeline)
        to_onnx(result.graph, workdir / "out.onnx")


def _import_and_exercise(source: Path | onnx.ModelProto, workdir: Path) -> None:
    from graphopt.frontends.onnx import from_onnx

    exercise(from_onnx(source), workdir)


def _check(run: Callable[[], None], name: str, mutations: list[str], data: bytes, report: FuzzReport,
           timeout: float) -> None:
    report.mutants += 1
    try:
        with np.errstate(all="ignore"), time_limit(timeout):
            run()
        report.valid += 1
    except GraphoptError as e:
        if isinstance(e, InternalError):
            report.findings.append(Finding(name, mutations, f"InternalError: {e}", traceback.format_exc(), data))
        else:
            report.rejected[type(e).__name__] += 1
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        report.findings.append(Finding(name, mutations, f"{type(e).__name__}: {first}"[:300],
                                       traceback.format_exc(), data))


def fuzz_onnx(seed_model: onnx.ModelProto, name: str, count: int, *, seed: int = 0, timeout: float = 20.0,
              only: int | None = None, report: FuzzReport | None = None) -> FuzzReport:
    """Run `count` ONNX mutants of `seed_model` (or just mutant `only`)."""
    report = report or FuzzReport()
    original = seed_model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="graphopt-fuzz-") as tmp:
        workdir = Path(tmp)
        for i in range(count) if only is None else [only]:
            rng = random.Random(f"{seed}:{name}:{i}")
            mutations: list[str] = []
            if rng.random() < 0.12:
                data, how = _mutate_bytes(rng, original)
                mutations.append(how)
                source: Path | onnx.ModelProto = workdir / "mutant.onnx"
                source.write_bytes(data)
            else:
                source = copy.deepcopy(seed_model)
                for _ in range(rng.choice([1, 1, 2, 3])):
                    mutations.append(rng.choice(ONNX_MUTATIONS)(rng, source))
                data = source.SerializeToString()
            run = functools.partial(_import_and_exercise, source, workdir)
            _check(run, f"{name}:{i}", mutations, data, report, timeout)
    return report


def fuzz_text(seed_text: str, name: str, count: int, *, seed: int = 0, timeout: float = 20.0,
              only: int | None = None, report: FuzzReport | None = None) -> FuzzReport:
    """Run `count` text-IR mutants of `seed_text`: parse, verify, passes, export, print and parse again."""
    from graphopt.ir.parser import parse
    from graphopt.ir.printer import print_graph

    report = report or FuzzReport()
    with tempfile.TemporaryDirectory(prefix="graphopt-fuzz-") as tmp:
        for i in range(count) if only is None else [only]:
            rng = random.Random(f"{seed}:{name}:{i}")
            text, mutations = seed_text, []
            for _ in range(rng.choice([1, 1, 2])):
                text, how = _mutate_text(rng, text)
                mutations.append(how)

            def run(text: str = text) -> None:
                graph = parse(text)
                exercise(graph, Path(tmp))
                parse(print_graph(graph))

            _check(run, f"{name}:{i}", mutations, text.encode(), report, timeout)
    return report


def seed_texts(models: dict[str, onnx.ModelProto]) -> dict[str, str]:
    """Each seed model's text IR, parameters inlined, so text mutants need no weights file."""
    from graphopt.frontends.onnx import from_onnx
    from graphopt.ir.printer import print_graph

    return {f"{name}.gir": print_graph(from_onnx(m), inline_limit=1 << 20) for name, m in models.items()}


def run_campaign(budget: int, *, seed: int = 0, timeout: float = 20.0, models: dict[str, onnx.ModelProto] | None = None,
                 text_share: float = 0.25, only: str | None = None, progress: bool = False) -> FuzzReport:
    """Split `budget` mutants over the seed models and their text forms; `only="name:i"` runs one."""
    models = models or seed_models()
    report = FuzzReport()
    start = time.perf_counter()
    if only is not None:
        name, _, index = only.rpartition(":")
        if name.endswith(".gir"):
            text = seed_texts({name.removesuffix(".gir"): models[name.removesuffix(".gir")]})[name]
            fuzz_text(text, name, 1, seed=seed, timeout=timeout, only=int(index), report=report)
        else:
            fuzz_onnx(models[name], name, 1, seed=seed, timeout=timeout, only=int(index), report=report)
    else:
        texts = seed_texts(models) if text_share > 0 else {}
        text_budget = int(budget * text_share) // max(len(texts), 1)
        onnx_budget = (budget - text_budget * len(texts)) // max(len(models), 1)
        for name, model in models.items():
            fuzz_onnx(model, name, onnx_budget, seed=seed, timeout=timeout, report=report)
            if progress:
                print(f"  {name}: {report.mutants} mutants so far, {len(report.findings)} findings", file=sys.stderr)
        for name, text in texts.items():
            fuzz_text(text, name, text_budget, seed=seed, timeout=timeout, report=report)
            if progress:
                print(f"  {name}: {report.mutants} mutants so far, {len(report.findings)} findings", file=sys.stderr)
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphopt.testing.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=20000, help="mutants in all (default: the long profile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a mutant may take before it is a hang")
    parser.add_argument("--model", action="append", default=[], metavar="FILE.onnx", help="extra seed model")
    parser.add_argument("--only", metavar="NAME:I", help="run one mutant (to reproduce a finding)")
    parser.add_argument("--save", metavar="DIR", help="write each finding's mutant and traceback here")
    args = parser.parse_args(argv)
    models = seed_models()
    models.update({Path(p).stem: onnx.load(p) for p in args.model})
    report = run_campaign(args.budget, seed=args.seed, timeout=args.timeout, models=models, only=args.only,
                          progress=True)
    print(report.summary())
    if args.save:
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        for f in report.findings:
            stem = f.mutant.replace(":", "-")
            (folder / (stem + (".gir" if ".gir" in f.mutant else ".onnx"))).write_bytes(f.data)
            (folder / f"{stem}.txt").write_text(f"{'; '.join(f.mutations)}\n\n{f.trace}")
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
