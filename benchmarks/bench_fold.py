"""fold-bn + canonicalize against onnxoptimizer and onnx-simplifier on the same ONNX model, and what
folding buys in ONNX Runtime latency.

The model under test is the unfolded ONNX that graphopt writes for resnet50 and vit_b_16 (torchvision,
random weights). Each tool gets that same file: graphopt (from_onnx -> canonicalize,fold-bn ->
to_onnx), onnxoptimizer (its fusion and elimination passes, fuse_bn_into_conv included) and onnxsim
(simplify). Columns: the tool's own time, node count, max abs difference from the unfolded model's
output in ONNX Runtime, and ORT fp32 latency (median of 20, batch 1) with ORT's graph optimizations
off (what the file itself costs) and at ORT's default level (ORT folds batch norms itself at load).

    python benchmarks/bench_fold.py [--models resnet50 vit_b_16]"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from report import write_section

import graphopt as go
from graphopt import models
from graphopt.demo import median_seconds

HERE = Path(__file__).parent
ONNXOPTIMIZER_PASSES = ["eliminate_deadend", "eliminate_identity", "eliminate_nop_dropout", "eliminate_nop_transpose",
                        "eliminate_unused_initializer", "extract_constant_to_initializer", "fuse_bn_into_conv",
                        "fuse_consecutive_transposes", "fuse_add_bias_into_conv", "fuse_matmul_add_bias_into_gemm"]


def latency(path: Path, x: np.ndarray, optimize: bool, repeats: int = 20) -> tuple[float, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x}
    out = session.run(None, feeds)[0]
    return median_seconds(lambda: session.run(None, feeds), repeats), out


def run_tools(source: Path, folder: Path) -> dict[str, tuple[Path, float]]:
    import onnxoptimizer
    import onnxsim

    results: dict[str, tuple[Path, float]] = {}
    start = time.perf_counter()
    graph = go.from_onnx(source)
    folded = go.run_pipeline(graph, "canonicalize,fold-bn", in_place=True).graph
    go.to_onnx(folded, folder / "graphopt.onnx")
    results["graphopt canonicalize,fold-bn"] = (folder / "graphopt.onnx", time.perf_counter() - start)

    model = onnx.load(str(source))
    start = time.perf_counter()
    optimized = onnxoptimizer.optimize(model, ONNXOPTIMIZER_PASSES)
    results["onnxoptimizer"] = (folder / "onnxoptimizer.onnx", time.perf_counter() - start)
    onnx.save(optimized, str(folder / "onnxoptimizer.onnx"))

    model = onnx.load(str(source))
    start = time.perf_counter()
    simplified, ok = onnxsim.simplify(model)
    results["onnxsim"] = (folder / "onnxsim.onnx", time.perf_counter() - start)
    if not ok:
        raise RuntimeError("onnxsim could not validate its output")
    onnx.save(simplified, str(folder / "onnxsim.onnx"))
    return results


def measure(name: str) -> list[dict[str, Any]]:
    module, x = models.torchvision_model(name)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "unfolded.onnx"
        go.to_onnx(go.from_torch(module, (x,)), source)
        base_ms, reference = latency(source, x.numpy(), optimize=False)
        base_opt_ms, _ = latency(source, x.numpy(), optimize=True)
        rows.append({"model": name, "tool": "unfolded export", "seconds": 0.0, "nodes": count(source),
                     "error": 0.0, "ort_off_ms": base_ms * 1e3, "ort_default_ms": base_opt_ms * 1e3})
        for tool, (path, seconds) in run_tools(source, folder).items():
            off, out = latency(path, x.numpy(), optimize=False)
            on, _ = latency(path, x.numpy(), optimize=True)
            rows.append({"model": name, "tool": tool, "seconds": seconds, "nodes": count(path),
                         "error": float(np.abs(out - reference).max()), "ort_off_ms": off * 1e3,
                         "ort_default_ms": on * 1e3})
    return rows


def count(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | tool | tool time s | ONNX nodes | max abs diff | ORT ms, opt. off | vs unfolded "
             "| ORT ms, default opt. | vs unfolded |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    base: dict[str, dict[str, Any]] = {}
    for r in rows:
        base.setdefault(r["model"], r)
        b = base[r["model"]]
        lines.append(f"| {r['model']} | {r['tool']} | {r['seconds']:.2f} | {r['nodes']} | {r['error']:.1e} "
                     f"| {r['ort_off_ms']:.1f} | {b['ort_off_ms'] / r['ort_off_ms']:.2f}x "
                     f"| {r['ort_default_ms']:.1f} | {b['ort_default_ms'] / r['ort_default_ms']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    args = parser.parse_args()
    rows = []
    for name in args.models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows += measure(name)
    text = table(rows)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "fold.md").write_text(text + "\n")
    if args.models == ["resnet50", "vit_b_16"]:
        write_section("fold", text)


if __name__ == "__main__":
    main()
