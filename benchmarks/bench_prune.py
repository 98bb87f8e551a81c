"""Structural pruning side by side with Torch-Pruning (MetaPruner, group magnitude importance, the
same round-to), in one process on the same models.

- speed: resnet50 and mobilenet_v2 pruned to 50% of their MACs, ONNX Runtime fp32 at batch 8 on 1
  and 2 threads, latency ratio to the unpruned model; a sweep of ratios on mobilenet_v2 and
  resnet18 (batch 8, 1 thread); resnet18 pruned and quantized against PyTorch eager fp32 at batch 1.
- accuracy (no fine-tuning): the digits CNN trained here at 70% and 50% of its MACs (test accuracy)
  and the real all-MiniLM-L6-v2 with heads and FFN units pruned to 70% of its MACs (embedding cosine
  to the unpruned model over 50 varied sentences plus hard ones: a lone word, numbers, punctuation,
  a long paragraph; none of them used for calibration), every criterion against `random`.

Both pruned models go through the same exporter (graphopt.from_torch -> canonicalize,fold-bn ->
to_onnx) so the latency columns compare the pruning, not the exporters. The table says which CPU
produced it.

- coverage: every torchvision classifier and MiniLM, `prune{macs=0.5}`: does it run, MACs achieved,
  ONNX Runtime and to_torch against the interpreter, seconds; Torch-Pruning unconfigured (and with
  heads configured on attention models): does it run, its MACs, its time (one model a subprocess,
  with a time limit, since the peer hangs on some).

    python benchmarks/bench_prune.py [--sections speed accuracy coverage] [--repeats 10] [--models ...]"""

from __future__ import annotations

import argparse
import copy
import gzip
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_int8 import digits_case, ort_session
from report import cpu_kind, verdict, write_section

import graphopt as go
from graphopt import models
from graphopt.analysis import analyze_channels
from graphopt.demo import median_seconds
from graphopt.progress import progress


def export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, pipeline: str,
           dynamic_batch: bool = True, **options: Any) -> tuple[go.Graph, Any]:
    graph = go.from_torch(module.eval(), example, dynamic_batch=dynamic_batch)
    result = go.run_pipeline(graph, pipeline, **options)
    go.to_onnx(result.graph, path)
    return result.graph, result


def ort_ms(path: Path, feed: dict[str, np.ndarray], threads: int, repeats: int) -> float:
    session = ort_session(path, threads)
    return median_seconds(lambda: session.run(None, feed), repeats) * 1e3


def tp_prune(model: torch.nn.Module, example: Any, target: float, round_to: int,
             configure: Callable[[torch.nn.Module], dict[str, Any]]) -> tuple[torch.nn.Module, float]:
    """Torch-Pruning at `target` of the MACs: the smallest pruning_ratio (bisection) whose model fits;
    `configure(copy)` gives the MetaPruner options that name the copy's modules (ignored layers, heads)."""
    import torch_pruning as tp

    base, _ = tp.utils.count_ops_and_params(model, example)
    best, lo, hi = None, 0.0, 1.0
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        pruner = tp.pruner.MetaPruner(trial, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=mid, round_to=round_to, **configure(trial))
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(trial, example)
        if macs <= target * base:
            best, hi = (trial, macs / base), mid
        else:
            lo = mid
    if best is None:
        raise RuntimeError("no pruning ratio reaches the target")
    return best


def classifier_ignored(model: torch.nn.Module) -> dict[str, Any]:
    return {"ignored_layers": [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]}


# --- speed ---------------------------------------------------------------------------------------------------
def speed(repeats: int, tmp: Path) -> str:
    lines = ["| model | threads | unpruned ms | graphopt ms | speed-up | graphopt at the peer's MACs ms | speed-up | "
             "Torch-Pruning ms | speed-up | graphopt MACs | Torch-Pruning MACs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    x8 = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    targets = []
    for name in ("resnet50", "mobilenet_v2"):
        model, image = models.torchvision_model(name)
        example = (image,)
        paths = [tmp / f"{name}.{kind}.onnx" for kind in ("base", "pruned", "matched", "tp")]
        export(model, example, paths[0], "canonicalize,fold-bn")
        _, result = export(model, example, paths[1], "canonicalize,fold-bn,prune{macs=0.5,round-to=16}")
        summary = next(r.details for r in result.records if r.spec.startswith("prune"))
        tp_model, tp_share = tp_prune(model, image, 0.5, 16, classifier_ignored)
        export(model, example, paths[2], f"canonicalize,fold-bn,prune{{macs={tp_share:.4f},round-to=16}}")
        export(tp_model, example, paths[3], "canonicalize,fold-bn")
        for threads in (1, 2):
            times = [ort_ms(p, {"x": x8}, threads, repeats) for p in paths]
            lines.append(f"| {name} | {threads} | {times[0]:.1f} | " + " | ".join(
                f"{t:.1f} | {times[0] / t:.2f}x" for t in times[1:]) +
                f" | {summary.macs_after / summary.macs_before:.1%} | {tp_share:.1%} |")
            print(lines[-1], file=sys.stderr, flush=True)
            if name == "resnet50":
                targets.append(verdict(f"resnet50, {threads} thread(s): >= 2.3x at 50% MACs", times[0] / times[1] >= 2.3,
                                       f"{times[0] / times[1]:.2f}x"))
            targets.append(verdict(f"{name}, {threads} thread(s): no slower than Torch-Pruning at its MACs",
                                   times[2] <= times[3], f"{times[2]:.1f} ms against {times[3]:.1f} ms"))
    lines += ["", "Targets:", "", *targets]
    lines += ["", "`prune{latency=0.5}` (the layer latency table measured at batch 8, 1 thread; then the whole model "
              "measured by ONNX Runtime):", "", "| model | latency asked | latency measured | MACs kept |",
              "|---|---:|---:|---:|"]
    latency_targets = []
    for name in ("resnet50", "mobilenet_v2"):
        model, _ = models.torchvision_model(name)
        path = tmp / f"{name}.latency.onnx"
        _, result = export(model, (torch.from_numpy(x8),), path, "canonicalize,fold-bn,prune{latency=0.5,round-to=16}",
                           dynamic_batch=False)
        summary = next(r.details for r in result.records if r.spec.startswith("prune"))
        base = tmp / f"{name}.base.onnx"
        measured = ort_ms(path, {"x": x8}, 1, repeats) / ort_ms(base, {"x": x8}, 1, repeats)
        lines.append(f"| {name} | 50% | {measured:.1%} | {summary.macs_after / summary.macs_before:.1%} |")
        print(lines[-1], file=sys.stderr, flush=True)
        latency_targets.append(verdict(f"{name}: latency=0.5 lands within 5% of it (47.5-52.5%)",
                                       abs(measured - 0.5) <= 0.025, f"{measured:.1%}"))
    lines += ["", *latency_targets]
    lines += ["", "Sweep (batch 8, 1 thread; latency of the pruned model / unpruned, below 1 is faster):", "",
              "| model | ratio | MACs kept | latency ratio |", "|---|---:|---:|---:|"]
    for name in ("mobilenet_v2", "resnet18"):
        model, image = models.torchvision_model(name)
        example = (image,)
        base = tmp / f"{name}.sweep.onnx"
        export(model, example, base, "canonicalize,fold-bn")
        base_ms = ort_ms(base, {"x": x8}, 1, repeats)
        for ratio in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
            path = tmp / f"{name}.{ratio}.onnx"
            _, result = export(model, example, path, f"canonicalize,fold-bn,prune{{ratio={ratio},round-to=16}}")
            summary = next(r.details for r in result.records if r.spec.startswith("prune"))
            ratio_ms = ort_ms(path, {"x": x8}, 1, repeats) / base_ms
            lines.append(f"| {name} | {ratio} | {summary.macs_after / summary.macs_before:.1%} | {ratio_ms:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "Sparsity (resnet18, batch 8, 1 thread; shapes unchanged, so no speed is expected on these CPUs):", "",
              "| model | latency ratio to dense | .onnx size | gzip -6 size |", "|---|---:|---:|---:|"]
    model, image = models.torchvision_model("resnet18")
    example = (image,)
    dense_ms = 0.0
    for pipeline in ("canonicalize,fold-bn", "canonicalize,fold-bn,sparsify{ratio=0.5}",
                     "canonicalize,fold-bn,sparsify{pattern=2:4}"):
        path = tmp / "sparse.onnx"
        export(model, example, path, pipeline)
        ms = ort_ms(path, {"x": x8}, 1, repeats)
        dense_ms = dense_ms or ms
        data = path.read_bytes()
        lines.append(f"| `{pipeline.removeprefix('canonicalize,fold-bn,') or 'dense'}` | {ms / dense_ms:.2f} | "
                     f"{len(data) / 1e6:.1f} MB | {len(gzip.compress(data, 6)) / 1e6:.1f} MB |")
        print(lines[-1], file=sys.stderr, flush=True)
    rng = np.random.default_rng(1)
    calibration = [(rng.standard_normal((1, 3, 224, 224)).astype(np.float32),) for _ in range(16)]
    path = tmp / "resnet18.int8.onnx"
    export(model, example, path, "canonicalize,fold-bn,prune{macs=0.5,round-to=16},fuse-activation,quantize",
           calibration=calibration)
    x1 = x8[:1]
    with torch.no_grad():
        torch.set_num_threads(1)
        eager = median_seconds(lambda: model(torch.from_numpy(x1)), repeats) * 1e3
        torch.set_num_threads(2)
    int8 = ort_ms(path, {"x": x1}, 1, repeats)
    lines += ["", f"resnet18 pruned to 50% of its MACs and quantized (`prune{{macs=0.5}},fuse-activation,quantize`), "
              f"batch 1, 1 thread: {int8:.1f} ms against PyTorch eager fp32 {eager:.1f} ms: {eager / int8:.2f}x faster."]
    return "\n".join(lines)


# --- accuracy --------------------------------------------------------------------------------------------------
CRITERIA = ("l1", "l2", "bn-scale", "activation", "taylor", "auto", "random")


def digits_accuracy() -> list[str]:
    case = digits_case()
    x_test = np.concatenate([s[0] for s in case.evaluation])
    graph = go.from_torch(case.module, case.example, dynamic_batch=True)
    lines = ["| digits CNN | MACs kept | test accuracy |", "|---|---:|---:|",
             f"| unpruned | 100% | {accuracy(graph, x_test, case.labels):.1%} |"]
    for target in (0.7, 0.5):
        for criterion in CRITERIA:
            result = go.run_pipeline(graph, f"prune{{macs={target},criterion={criterion},round-to=1}}",
                                     calibration=case.calibration)
            summary = result.records[0].details
            lines.append(f"| graphopt {criterion} | {summary.macs_after / summary.macs_before:.1%} | "
                         f"{accuracy(result.graph, x_test, case.labels):.1%} |")
        tp_model, share = tp_prune(case.module, case.example[0], target, 1, classifier_ignored)
        tp_graph = go.from_torch(tp_model.eval(), case.example, dynamic_batch=True)
        lines.append(f"| Torch-Pruning group magnitude | {share:.1%} | {accuracy(tp_graph, x_test, case.labels):.1%} |")
        print("\n".join(lines[-len(CRITERIA) - 1:]), file=sys.stderr, flush=True)
    return lines


def accuracy(graph: go.Graph, x: np.ndarray, labels: np.ndarray) -> float:
    module = go.to_torch(graph)
    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == labels).mean())


def minilm_accuracy() -> list[str]:
    text = models.minilm()
    seq = 64
    encode = lambda s: tuple(t.numpy() for t in text.inputs([s], seq_len=seq))  # noqa: E731
    calibration = [encode(s) for s in models.varied_sentences(16, seed=0)]
    evaluation = [encode(s) for s in models.varied_sentences(50, seed=1) + models.HARD_TEXTS]
    graph = go.from_torch(text.module, text.inputs(models.SENTENCES[:1], seq_len=seq))
    reference = [go.interpret(graph, *e)[0] for e in progress(evaluation, len(evaluation), "minilm reference")]
    lines = ["| MiniLM (heads + FFN) | MACs kept | cosine mean | cosine min |", "|---|---:|---:|---:|"]
    for criterion in CRITERIA:
        result = go.run_pipeline(graph, f"prune{{macs=0.7,criterion={criterion},round-to=1}}", calibration=calibration)
        summary = result.records[0].details
        module = go.to_torch(result.graph)
        with torch.no_grad():
            cos = [float(np.dot(module(*map(torch.from_numpy, e)).numpy().ravel(), r.ravel()))
                   for e, r in zip(evaluation, reference)]
        lines.append(f"| graphopt {criterion} | {summary.macs_after / summary.macs_before:.1%} | "
                     f"{np.mean(cos):.3f} | {np.min(cos):.3f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines.append(tp_minilm(text, graph, evaluation, reference, seq))
    return lines


def tp_minilm(text: Any, graph: go.Graph, evaluation: list[tuple[np.ndarray, ...]], reference: list[np.ndarray],
              seq: int) -> str:
    """Torch-Pruning configured as its docs say for heads (num_heads of each q/k/v layer,
    prune_num_heads) with every layer but q/k/v and the FFN's first linear ignored."""
    def heads_and_ffn(model: torch.nn.Module) -> dict[str, Any]:
        heads = {m: model.bert.config.num_attention_heads for n, m in model.named_modules()
                 if n.endswith(("attention.self.query", "attention.self.key", "attention.self.value"))}
        keep = {*heads, *(m for n, m in model.named_modules() if n.endswith("intermediate.dense"))}
        ignored = [m for m in model.modules() if isinstance(m, torch.nn.Linear | torch.nn.Embedding | torch.nn.LayerNorm)
                   and m not in keep]
        return {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False, "ignored_layers": ignored}

    try:
        example = text.inputs(models.SENTENCES[:1], seq_len=seq)
        tp_model, share = tp_prune(text.module, example, 0.7, 1, heads_and_ffn)
        with torch.no_grad():
            cos = [float(np.dot(tp_model(*map(torch.from_numpy, e)).numpy().ravel(), r.ravel()))
                   for e, r in zip(evaluation, reference)]
        return f"| Torch-Pruning group magnitude | {share:.1%} | {np.mean(cos):.3f} | {np.min(cos):.3f} |"
    except Exception as e:  # the peer's failure is a result to report
        return f"| Torch-Pruning group magnitude | fails: {type(e).__name__}: {str(e)[:120]} | | |"


# --- coverage --------------------------------------------------------------------------------------------------
ATTENTION = ("vit", "swin", "maxvit")


def coverage_row(name: str) -> dict[str, Any]:
    """One model: graphopt prune{macs=0.5} (MACs, ORT and to_torch against the interpreter, seconds),
    then Torch-Pruning unconfigured at pruning_ratio 0.3 (and, for attention models, with its heads
    configured as its docs say)."""
    import json

    import torch_pruning as tp

    row: dict[str, Any] = {"model": name}
    if name == "minilm":
        text = models.minilm()
        module, inputs = text.module, text.inputs(models.SENTENCES[:1], seq_len=32)
    else:
        module, image = models.torchvision_model(name)  # at its native size: some heads pool to a fixed grid
        inputs = (image,)
    graph = go.from_torch(module, inputs)
    try:
        start = time.perf_counter()
        analyze_channels(graph)
        row["analysis_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = go.run_pipeline(graph, "prune{macs=0.5}")
        row["seconds"] = time.perf_counter() - start
        summary = result.records[0].details
        row["macs"] = summary.macs_after / summary.macs_before
        row["pruned_groups"] = sum(g.channels_after < g.channels_before for g in summary.groups)
        arrays = [t.numpy() for t in inputs]
        (want,) = go.interpret(result.graph, *arrays)
        scale = float(np.abs(want).max()) or 1.0
        with tempfile.TemporaryDirectory() as tmp:
            go.to_onnx(result.graph, Path(tmp) / "m.onnx")
            session = ort_session(Path(tmp) / "m.onnx", 2)
            got = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})[0]
        row["ort_err"] = float(np.abs(got - want).max()) / scale
        with torch.no_grad():
            row["torch_err"] = float(np.abs(go.to_torch(result.graph)(*inputs).numpy() - want).max()) / scale
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
    print(json.dumps(row), flush=True)  # graphopt's part stands even if the peer takes the process down
    example = inputs[0] if len(inputs) == 1 else inputs
    for label, configure in [("tp", lambda m: {}), ("tp_heads", _tp_heads)]:
        if label == "tp_heads" and not name.startswith(ATTENTION) and name != "minilm":
            continue
        try:
            trial = copy.deepcopy(module)
            base, _ = tp.utils.count_ops_and_params(trial, example)
            start = time.perf_counter()
            pruner = tp.pruner.MetaPruner(trial, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                          pruning_ratio=0.3, round_to=8, **classifier_ignored(trial),
                                          **configure(trial))
            row[f"{label}_graph_s"] = time.perf_counter() - start
            pruner.step()
            row[f"{label}_s"] = time.perf_counter() - start
            with torch.no_grad():
                trial(*inputs)
            row[f"{label}_macs"] = tp.utils.count_ops_and_params(trial, example)[0] / base
        except Exception as e:
            row[f"{label}_error"] = f"{type(e).__name__}: {str(e)[:160]}"
    return row


def _tp_heads(model: torch.nn.Module) -> dict[str, Any]:
    """Torch-Pruning's documented head configuration: nn.MultiheadAttention (and BERT's q/k/v) head counts."""
    heads: dict[torch.nn.Module, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.MultiheadAttention):
            heads[m] = m.num_heads
        elif name.endswith(("attention.self.query", "attention.self.key", "attention.self.value")):
            heads[m] = model.bert.config.num_attention_heads  # type: ignore[union-attr]
    return {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False}


ROWS = Path(__file__).parent / "results" / "prune_coverage.jsonl"


def coverage(names: list[str], timeout: int) -> str:
    """Measure `names` (one subprocess each), merge them into results/prune_coverage.jsonl (a partial
    run keeps the other models' rows) and return the table of every row there."""
    import json
    import subprocess

    kept = {r["model"]: r for r in map(json.loads, ROWS.read_text().splitlines())} if ROWS.exists() else {}
    for name in progress(names, len(names), "prune coverage"):
        try:
            done = subprocess.run([sys.executable, __file__, "--coverage-row", name], capture_output=True, text=True,
                                  timeout=timeout)
            line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
            kept[name] = json.loads(line) if line.startswith("{") else \
                {"model": name, "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
            if done.returncode and "error" not in kept[name]:
                kept[name]["tp_error"] = f"the process ended with code {done.returncode} (-9: killed, out of memory)"
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
            partial = [line for line in out.splitlines() if line.startswith("{")]
            kept[name] = {**json.loads(partial[-1]), "tp_error": f"no result in {timeout} s"} if partial else \
                {"model": name, "error": f"no result in {timeout} s"}
        print(kept[name], file=sys.stderr, flush=True)
        ROWS.write_text("".join(json.dumps(r) + "\n" for r in sorted(kept.values(), key=lambda r: r["model"])))
    rows = sorted(kept.values(), key=lambda r: r["model"])
    fmt = lambda row, key, spec: format(row[key], spec) if key in row else "-"  # noqa: E731
    ok = [r for r in rows if "error" not in r]
    within = [r for r in ok if 0.45 <= r["macs"] <= 0.5]
    tp_ok = [r for r in rows if "tp_macs" in r]
    timed = [r for r in rows if "analysis_s" in r and "tp_graph_s" in r]
    faster = [r for r in timed if r["analysis_s"] < r["tp_graph_s"]]
    lines = [f"graphopt: {len(ok)}/{len(rows)} models prune to 50% of their MACs, {len(within)} land within 5 points "
             f"under the target (45-50%); ONNX Runtime and to_torch agree with the interpreter (max error / output "
             f"scale) where shown. Torch-Pruning unconfigured (pruning_ratio 0.3, classifier ignored): "
             f"{len(tp_ok)}/{len(rows)} run.", "",
             f"Target: channel analysis faster than the peer's DependencyGraph build: "
             f"{'met' if len(faster) == len(timed) else 'MISSED'} on {len(faster)}/{len(timed)} models where both ran"
             + (f" (slower on {', '.join(r['model'] for r in timed if r not in faster)})" if len(faster) < len(timed)
                else "") + ".", "",
             "| model | graphopt MACs | groups pruned | ORT err | to_torch err | graphopt s (analysis) | Torch-Pruning | "
             "its MACs | its s (graph build) | Torch-Pruning, heads configured |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        heads = "" if "tp_heads_s" not in r and "tp_heads_error" not in r else \
            r.get("tp_heads_error", f"runs, MACs {r.get('tp_heads_macs', float('nan')):.1%}")
        lines.append(f"| {r['model']} | {fmt(r, 'macs', '.1%') if 'error' not in r else 'fails: ' + r['error']} | "
                     f"{r.get('pruned_groups', '-')} | {fmt(r, 'ort_err', '.1e')} | {fmt(r, 'torch_err', '.1e')} | "
                     f"{fmt(r, 'seconds', '.1f')} ({fmt(r, 'analysis_s', '.2f')}) | "
                     f"{'runs' if 'tp_macs' in r else r.get('tp_error', '-')} | "
                     f"{fmt(r, 'tp_macs', '.1%')} | {fmt(r, 'tp_s', '.1f')} ({fmt(r, 'tp_graph_s', '.1f')}) | {heads} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="*", default=["speed", "accuracy"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", nargs="*", help="coverage: these models (default: every torchvision classifier "
                        "and minilm)")
    parser.add_argument("--timeout", type=int, default=900, help="coverage: seconds a model may take")
    parser.add_argument("--coverage-row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.coverage_row:
        import json

        print(json.dumps(coverage_row(args.coverage_row)))
        return
    header = f"Run {date.today()} on {cpu_kind()}; {args.repeats} repeats a latency."
    with tempfile.TemporaryDirectory(prefix="graphopt-prune-") as tmp:
        if "speed" in args.sections:
            start = time.perf_counter()
            text = speed(args.repeats, Path(tmp))
            print(text, flush=True)
            write_section("prune-speed", f"{header} ({time.perf_counter() - start:.0f} s)\n\n{text}")
        if "coverage" in args.sections:
            names = args.models if args.models is not None else [*models.torchvision_classifiers(), "minilm"]
            text = coverage(names, args.timeout)  # --models with no names: re-render the table from the rows
            print(text, flush=True)
            write_section("prune-coverage", f"{header}\n\n{text}")
        if "accuracy" in args.sections:
            text = "\n".join([*digits_accuracy(), "", *minilm_accuracy()])
            print(text, flush=True)
            write_section("prune-accuracy", f"{header}\n\n{text}")


if __name__ == "__main__":
    main()
