"""Compression with accuracy won back: pruning and block removal followed by distillation, then int8.

- digits: the CNN trained here on scikit-learn's digits, pruned to 50% and 25% of its MACs and
  distilled on the unlabeled training images (test accuracy against fp32), then int8 on top;
  Torch-Pruning pruned to the same MACs and fine-tuned with the same distill step (loss, epochs,
  data, teacher), so the rows compare the pruning.
- resnet50: remove-blocks by each score, 1 to 4 blocks: output cosine to the unremoved model on
  held-out inputs (not the calibration ones) and the latency gain in ONNX Runtime, plotted.
- minilm: the real all-MiniLM-L6-v2 with 2 layers' worth of blocks removed and heads/FFN pruned to
  half its MACs, distilled on unlabeled varied texts: embedding cosine on other texts, latency at
  batch 1 (fp32 and int8).
- scaling: distill's wall time per epoch on 1 process and on 2 torchrun processes.

    python benchmarks/bench_compress.py [--sections digits minilm resnet50 scaling] [--repeats 7]"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch
from bench_int8 import digits_case
from bench_prune import accuracy, classifier_ignored, ort_ms, tp_prune
from report import cpu_kind, verdict, write_section

import graphopt as go
from graphopt import models
from graphopt.ir.printer import print_graph

DISTILL = "distill{epochs=30,lr=0.003,batch-size=32}"
LAST_HIDDEN = "bert.encoder.layer.5.output.LayerNorm"  # MiniLM's token states before pooling
PLOT = Path(__file__).parent / "results" / "remove_blocks_resnet50.png"


def digits() -> list[str]:
    case = digits_case()
    x_test = np.concatenate([s[0] for s in case.labelled])
    graph = go.run_pipeline(go.from_torch(case.module, case.example, dynamic_batch=True), "canonicalize,fold-bn").graph
    fp32 = accuracy(graph, x_test, case.labels)
    lines = [f"Digits CNN, test accuracy on {len(x_test)} held-out images (fp32 {fp32:.1%}); distillation: "
             f"`{DISTILL}` on the {len(case.training)} unlabeled training images, teacher = the fp32 model.", "",
             "| method | MACs kept | no fine-tuning | distilled | distilled + int8 | distill s |",
             "|---|---:|---:|---:|---:|---:|"]
    targets = []
    for target, allowed in ((0.5, 0.003), (0.25, 0.01)):
        students = {f"graphopt prune, {c}": go.run_pipeline(graph, f"prune{{macs={target},round-to=1,criterion={c}}}",
                                                             calibration=case.calibration).graph
                    for c in ("l1", "taylor")}  # the default, and the one that reads the data
        share = go.graph_cost(students["graphopt prune, l1"]).macs / go.graph_cost(graph).macs
        tp_model, _ = tp_prune(case.module, case.example[0], share, 1, classifier_ignored)
        students["Torch-Pruning group magnitude"] = go.run_pipeline(
            go.from_torch(tp_model.eval(), case.example, dynamic_batch=True), "canonicalize,fold-bn").graph
        ours: dict[str, float] = {}
        for label, student in students.items():
            start = time.perf_counter()
            tuned = go.run_pipeline(student, DISTILL, data=case.training, teacher=graph).graph
            seconds = time.perf_counter() - start
            int8 = go.run_pipeline(tuned, "fuse-activation,quantize", calibration=case.calibration).graph
            kept = go.graph_cost(student).macs / go.graph_cost(graph).macs
            scores = [accuracy(g, x_test, case.labels) for g in (student, tuned, int8)]
            lines.append(f"| {label} | {kept:.1%} | {scores[0]:.1%} | {scores[1]:.1%} | {scores[2]:.1%} | "
                         f"{seconds:.0f} |")
            print(lines[-1], file=sys.stderr, flush=True)
            if label.startswith("graphopt"):
                ours[label] = scores[1]
                what = f"{target:.0%} MACs ({label.split(', ')[1]})"
                targets.append(verdict(f"{what} distilled within {allowed * 100:.1f} points of fp32",
                                       fp32 - scores[1] <= allowed + 1e-9, f"{scores[1]:.1%} against {fp32:.1%}"))
                targets.append(verdict(f"{what} distilled + int8 within 1 point of fp32",
                                       fp32 - scores[2] <= 0.01 + 1e-9, f"{scores[2]:.1%}"))
                targets.append(verdict(f"{what}: distillation within 2 CPU-minutes", seconds <= 120, f"{seconds:.0f} s"))
            else:
                targets += [verdict(f"{target:.0%} MACs ({name.split(', ')[1]}): no worse than Torch-Pruning, same "
                                    "fine-tuning", accuracy_ >= scores[1], f"{accuracy_:.1%} against {scores[1]:.1%}")
                            for name, accuracy_ in ours.items()]
    return [*lines, "", f"One test image is {1 / len(x_test):.2%}.", "", "Targets:", "", *targets]


def resnet50(repeats: int, tmp: Path) -> list[str]:
    module, image = models.torchvision_model("resnet50")
    graph = go.run_pipeline(go.from_torch(module, (image,)), "canonicalize,fold-bn").graph
    rng = np.random.default_rng(0)
    calibration = [(rng.standard_normal((1, 3, 224, 224)).astype(np.float32),) for _ in range(8)]
    held_out = [(np.random.default_rng(100 + i).standard_normal((1, 3, 224, 224)).astype(np.float32) * s,)
                for i, s in enumerate((0.5, 1.0, 2.0, 4.0))]  # other seeds and scales than calibration
    reference = [go.interpret(graph, *s)[0] for s in held_out]
    go.to_onnx(graph, tmp / "base.onnx")
    base_ms = ort_ms(tmp / "base.onnx", {"x": held_out[0][0]}, 1, repeats)
    lines = ["resnet50 (random weights), batch 1, 1 thread; cosine of the output to the unremoved model on 4 "
             "held-out inputs (mean / min), latency ratio to the unremoved model.", "",
             "| score | blocks removed | which | MACs kept | cosine mean | cosine min | latency ratio |",
             "|---|---:|---|---:|---:|---:|---:|"]
    curves: dict[str, list[tuple[float, float]]] = {}
    for score in ("influence", "norm", "output", "angular"):
        for count in (1, 2, 3, 4):
            result = go.run_pipeline(graph, f"remove-blocks{{count={count},score={score}}}", calibration=calibration)
            summary = result.records[0].details
            cosines = [float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
                       for a, b in zip(reference, (go.interpret(result.graph, *s)[0] for s in held_out))]
            go.to_onnx(result.graph, tmp / "removed.onnx")
            ratio = ort_ms(tmp / "removed.onnx", {"x": held_out[0][0]}, 1, repeats) / base_ms
            curves.setdefault(score, []).append((ratio, float(np.mean(cosines))))
            lines.append(f"| {score} | {count} | {', '.join(u.name for u in summary.removed)} | "
                         f"{summary.macs_after / summary.macs_before:.1%} | {np.mean(cosines):.4f} | "
                         f"{min(cosines):.4f} | {ratio:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    _plot(curves)
    return [*lines, "", f"![cosine against latency per score]({PLOT.relative_to(Path(__file__).parent)})"]


def minilm(repeats: int) -> list[str]:
    """all-MiniLM-L6-v2 (real weights): 2 layers' worth of blocks removed, heads and FFN pruned to half
    the encoder's MACs, distilled on unlabeled varied texts; embedding cosine to the original on texts
    no step saw, and latency at batch 1 in ONNX Runtime (fp32, then int8)."""
    from graphopt.analysis.latency import model_ms

    text = models.minilm()
    batch, seq = 16, 64

    def encode(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for k in range(0, len(texts) - batch + 1, batch):
            ids, mask = text.inputs(texts[k:k + batch], seq)
            out.append((ids.numpy(), mask.numpy()))
        return out

    graph = go.run_pipeline(go.from_torch(text.module, text.inputs(models.SENTENCES * 4, seq)),
                            "canonicalize,fold-bn").graph
    train = encode(models.varied_texts(1024, seed=10))
    evaluation = encode(models.HARD_TEXTS + models.varied_texts(56, seed=11))
    one = go.from_torch(text.module, text.inputs(models.SENTENCES[:1], seq))  # batch 1, for the baseline latency
    reference = go.to_torch(graph)

    def cosines(g: go.Graph) -> np.ndarray:
        module = go.to_torch(g)
        with torch.no_grad():
            return np.concatenate([(module(*map(torch.from_numpy, e)).numpy() *
                                    reference(*map(torch.from_numpy, e)).numpy()).sum(1) for e in evaluation])

    ids, mask = (t.numpy() for t in text.inputs(models.SENTENCES[:1], seq))
    base_ms = model_ms(go.run_pipeline(one, "canonicalize,fold-bn").graph, [ids, mask], repeats=repeats)
    steps = "canonicalize,fold-bn,remove-blocks{count=4,score=angular},prune{macs=0.5,macs-of=pipeline,criterion=taylor}"
    distill = f"distill{{epochs=12,lr=0.0005,batch-size=1,loss=cosine,features=[{LAST_HIDDEN}]}}"
    lines = [f"all-MiniLM-L6-v2, sequences of {seq} tokens; distillation on {len(train) * batch} unlabeled texts "
             "(statements, questions, lists, numbers, code, other languages, replies, symbols, formulas, repeats, "
             f"long paragraphs), matching the embedding (cosine) and the last hidden state (MSE); cosine on "
             f"{len(evaluation) * batch} other texts (with a lone word, numbers, punctuation, a long paragraph); "
             f"latency at batch 1, 1 thread (fp32 unpruned: {base_ms:.2f} ms).", "",
             f"Pipeline: `{steps}`, then `{distill}`, then `fuse-activation,quantize`.", "",
             "| pipeline | MACs kept | cosine mean | cosine min | latency ms | speed-up |",
             "|---|---:|---:|---:|---:|---:|"]
    targets = []
    current = graph
    for label, pipeline, calibrated in (("removed + pruned", steps, False), ("+ distilled", distill, False),
                                        ("+ distilled + int8", "fuse-activation,quantize", True)):
        start = time.perf_counter()
        result = go.run_pipeline(current, pipeline, calibration=train[:2], data=train, teacher=graph)
        print(f"{label}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        current = result.graph
        cos = cosines(result.graph)
        kept = go.graph_cost(result.graph).macs / go.graph_cost(graph).macs
        small = _at_batch_one(result.graph, evaluation[0])
        ms = model_ms(small, [ids, mask], repeats=repeats)
        lines.append(f"| {label} | {kept:.1%} | {cos.mean():.4f} | {cos.min():.4f} | {ms:.2f} | {base_ms / ms:.2f}x |")
        print(lines[-1], file=sys.stderr, flush=True)
        if label == "+ distilled":
            targets += [verdict("mean cosine >= 0.95 after distillation", cos.mean() >= 0.95, f"{cos.mean():.4f}"),
                        verdict(">= 1.8x lower latency than fp32 unpruned", base_ms / ms >= 1.8, f"{base_ms / ms:.2f}x")]
        if calibrated:
            targets.append(verdict("int8 on top: >= 3x", base_ms / ms >= 3, f"{base_ms / ms:.2f}x"))
    return [*lines, "", "Targets:", "", *targets]


def _at_batch_one(trained: go.Graph, sample: tuple[np.ndarray, np.ndarray]) -> go.Graph:
    """`trained` (traced at batch 16) at batch 1: its text form with the leading 16 of every shape
    made 1 (a wrong replacement fails to parse or to verify), checked against the batch-16 graph on
    the first text of `sample`."""
    weights = {}
    for p in trained.parameters:  # constants folded at batch 16 (position embeddings, batch indices): row 0
        weights[p.name] = p.data[:1] if p.data is not None and p.data.ndim and p.shape[0] == 16 else p.data
    small = go.parse(print_graph(trained, inline_limit=0).replace("[16, ", "[1, "), weights=weights)
    (want,), (got,) = go.interpret(trained, *sample), go.interpret(small, *(a[:1] for a in sample))
    if not np.allclose(want[:1], got, atol=1e-4):
        raise RuntimeError("the batch-1 copy of the model disagrees with the batch-16 one")
    return small


def scaling() -> list[str]:
    """distill wall time per epoch on 1 process and on 2 torchrun processes (gloo, loopback)."""
    import socket
    import subprocess

    lines = ["distill of the digits CNN pruned to 50% of its MACs (`distill{epochs=3,batch-size=32}`, 1400 images), "
             "wall seconds per epoch; each process gets the machine's cores divided by the process count. Each run "
             "trains the digits CNN first with its own thread count, so the starting weights (and the final loss) "
             "differ a little; tests/test_distill.py checks that 2 processes take 1 process's steps exactly.", "",
             "| processes | threads each | s per epoch | final loss |", "|---:|---:|---:|---:|"]
    cores = os.cpu_count() or 1
    for n in (1, 2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": str(max(1, cores // n))}
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
                               "--master_addr=127.0.0.1", f"--master_port={port}", __file__, "--distill-worker"],
                              env=env, capture_output=True, text=True, timeout=1800, cwd=Path(__file__).parent)
        if done.returncode:
            lines.append(f"| {n} | {max(1, cores // n)} | failed: {done.stderr.strip().splitlines()[-1][:120]} | |")
            continue
        seconds, loss = map(float, done.stdout.strip().splitlines()[-1].split())
        lines.append(f"| {n} | {max(1, cores // n)} | {seconds:.1f} | {loss:.4g} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def distill_worker() -> None:
    import torch.distributed as dist

    case = digits_case()
    graph = go.run_pipeline(go.from_torch(case.module, case.example, dynamic_batch=True), "canonicalize,fold-bn").graph
    result = go.run_pipeline(graph, "prune{macs=0.5,round-to=1},distill{epochs=3,lr=0.003,batch-size=32}",
                             data=case.training)
    summary = result.records[-1].details
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{summary.seconds / len(summary.losses)} {summary.losses[-1]}")
    if dist.is_initialized():
        dist.destroy_process_group()


def _plot(curves: dict[str, list[tuple[float, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for score, points in curves.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=score)
    ax.set_xlabel("latency ratio to the unremoved model (1, 2, 3, 4 blocks removed)")
    ax.set_ylabel("output cosine to the unremoved model")
    ax.set_title("resnet50: blocks removed by each score")
    ax.legend()
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="*", default=["digits", "minilm", "resnet50", "scaling"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--distill-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.distill_worker:
        distill_worker()
        return
    torch.set_num_threads(2)
    header = f"Run {date.today()} on {cpu_kind()}."
    with tempfile.TemporaryDirectory(prefix="graphopt-compress-") as tmp:
        for name in args.sections:
            start = time.perf_counter()
            sections = {"digits": digits, "scaling": scaling, "minilm": lambda: minilm(args.repeats),
                        "resnet50": lambda: resnet50(args.repeats, Path(tmp))}
            lines = sections[name]()
            text = f"{header} ({time.perf_counter() - start:.0f} s)\n\n" + "\n".join(lines)
            print(text, flush=True)
            write_section(f"compress-{name}", text)


if __name__ == "__main__":
    main()
