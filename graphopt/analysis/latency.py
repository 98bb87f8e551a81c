"""Measured layer latency: what a conv, linear or matmul layer costs in ONNX Runtime's CPU provider at
given channel counts. Latency is a staircase in the channel count (vector widths, cache blocking),
not a line, so latency-aware pruning reads a table of measurements rather than MACs. Each entry is
measured once per machine kind, ONNX Runtime version and thread count, and kept in a JSON file
under $GRAPHOPT_CACHE_DIR (default ~/.cache/graphopt)."""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.fileio import atomic_write
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.types import TensorType

LAYERS = ("conv1d", "conv2d", "conv_transpose2d", "linear", "matmul")


@functools.cache
def cpu_kind() -> str:
    """avx512vnni | avxvnni | avx512 | avx2 | x86 | arm-dotprod | arm: the vector ISA that int8
    kernels and latency tables depend on (read from /proc/cpuinfo's flags or features)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown-cpu"
    return isa_of(flags, platform.machine())


# cpu_kind's answers as people say them
ISA_NAMES = {"avx512vnni": "AVX-512 VNNI", "avxvnni": "AVX-VNNI", "avx512": "AVX-512 without VNNI", "avx2": "AVX2",
             "x86": "x86 without AVX2", "arm-dotprod": "ARM dot product", "arm": "ARM NEON"}


def isa_of(flags: set[str], machine: str) -> str:
    if machine.lower() in ("aarch64", "arm64"):
        return "arm-dotprod" if "asimddp" in flags else "arm"
    for flag, kind in (("avx512_vnni", "avx512vnni"), ("avx_vnni", "avxvnni"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return "x86"


def static(t: TensorType) -> TensorType:
    """Symbolic dims (the batch) measured at 1."""
    return t.with_shape(tuple(d if isinstance(d, int) else 1 for d in t.shape))


class LatencyTable:
    """Median milliseconds of single layers, measured on demand and cached on disk."""

    def __init__(self, threads: int = 1, repeats: int = 15, folder: Path | None = None) -> None:
        import onnxruntime as ort

        self.threads, self.repeats = threads, repeats
        folder = folder or Path(os.environ.get("GRAPHOPT_CACHE_DIR", Path.home() / ".cache" / "graphopt"))
        self.path = folder / f"latency-{cpu_kind()}-ort{ort.__version__}-t{threads}.json"
        try:
            self.entries: dict[str, float] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.measured = 0

    def layer_ms(self, op: str, operands: Sequence[TensorType], attrs: Mapping[str, Any]) -> float:
        types = [static(t) for t in operands]
        key = f"{op}|{'|'.join(map(str, types))}|{sorted(attrs.items())}"
        if key not in self.entries:
            self.entries[key] = self._measure(op, types, attrs)
            self.measured += 1
        return self.entries[key]

    def save(self) -> None:
        if self.measured:
            text = json.dumps(self.entries, indent=0, sort_keys=True)
            atomic_write(self.path, lambda f: f.write(text.encode()))

    def _measure(self, op: str, types: Sequence[TensorType], attrs: Mapping[str, Any]) -> float:
        rng = np.random.default_rng(0)
        g = Graph("layer")
        x = g.add_input(types[0], "x")
        rest = [g.add_parameter(rng.standard_normal([int(d) for d in t.shape]).astype(t.dtype.numpy), f"p{i}")
                for i, t in enumerate(types[1:])]
        g.outputs = [g.create(op, [x, *rest], dict(attrs)).result]
        return model_ms(g, random_inputs(g), self.threads, self.repeats)


def random_inputs(graph: Graph) -> list[np.ndarray]:
    """An input for each graph input (symbolic dims at 1): normal floats, zero integers."""
    rng = np.random.default_rng(0)
    out = []
    for v in graph.inputs:
        t = static(v.type)
        shape = [int(d) for d in t.shape]
        out.append(rng.standard_normal(shape).astype(t.dtype.numpy) if t.dtype.is_float else np.zeros(shape, t.dtype.numpy))
    return out


def ort_session(graph: Graph, threads: int = 1) -> tuple[Any, int]:
    """`graph` as an ONNX Runtime CPU session, and the size of its ONNX bytes."""
    import onnxruntime as ort

    from graphopt.backends.onnx import to_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    data = to_onnx(graph).SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]), len(data)


def session_ms(session: Any, inputs: Sequence[np.ndarray], repeats: int = 15) -> float:
    """Median milliseconds of one run of `session` on `inputs` (after a warm-up run)."""
    import time

    feed = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def model_ms(graph: Graph, inputs: Sequence[np.ndarray], threads: int = 1, repeats: int = 15) -> float:
    """Median milliseconds of `graph` in ONNX Runtime's CPU provider on `inputs` (graph input order)."""
    return session_ms(ort_session(graph, threads)[0], inputs, repeats)


def layers_ms(graph: Graph, table: LatencyTable, types: Mapping[int, TensorType] | None = None,
              attrs: Mapping[int, Mapping[str, Any]] | None = None) -> float:
    """The summed table latency of `graph`'s layers, with values retyped by `types` and nodes'
    attributes replaced by `attrs` (how a pruning candidate would look, without rewriting)."""
    types, attrs = types or {}, attrs or {}
    total = 0.0
    for node in graph:
        if _is_layer(node):
            total += table.layer_ms(node.op, [types.get(id(v), v.type) for v in node.operands],
                                    attrs.get(id(node), node.attrs))
    return total


def _is_layer(node: Node) -> bool:
    return node.op in LAYERS and len(node.operands) > 1 and node.operands[1].is_parameter
