"""Quantization-aware training on the digits CNN (trained here on scikit-learn's digits, batch norm
folded), two sections:

- widths: for each weight width, post-training rounding beside `qat` (fine-tuned against the fp32
  model on the 1400 unlabeled training images, the fake-quantized scales learned), test accuracy on
  the 397 held-out images. Post-training rows: `quantize{budget=0}` for int8 and 4-bit (W4A8; nearest
  and AdaRound), `qat{epochs=0}` (the starting point: rounded to nearest, or the signs) for ternary
  and binary.
- budget: `qat{size=MB}` from binary up (each layer's width, binary / ternary / 4 / 8 bits / float,
  chosen by its measured noise to fit the budget) at fractions of the fp32 parameter bytes, beside
  QAT at one width for every layer: ONNX file size plain and `to_onnx(packed=True)` (INT2 / INT4), and
  test accuracy.
- clusters: `cluster{clusters=16}` (k-means weight sharing) with and without fine-tuning, and after
  50% unstructured sparsity (`sparsify{ratio=0.5,scope=global}`): ONNX file size and test accuracy.
- calibration: resnet18's calibration statistics on 32 natural-statistics images in 1 and in 2
  torchrun processes (one thread each): wall time, and whether every tensor's range is the same.
- gradients: ternary `qat` on 2 torchrun processes (gloo, loopback, a core each) with fp32 and with
  int8 gradients (`gradient-bits=8`): bytes each process sends a step, and test accuracy.

    python benchmarks/bench_qat.py [--sections widths budget clusters calibration gradients]"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from bench_int8 import digits_case
from report import cpu_kind, verdict, write_section

import graphopt as go

QAT = "qat{epochs=%d,weight-bits=%s,lr=%g,batch-size=32,loss=kl}"  # a classifier: match its softmax
# weight bits -> post-training methods, the qat run, the target (points below fp32)
WIDTHS = {
    "8": ([("round to nearest", "quantize{budget=0}")], QAT % (3, "8", 1e-4), 0.2),
    "4": ([("round to nearest", "quantize{budget=0,weight-bits=4}"),
           ("AdaRound", "quantize{budget=0,weight-bits=4,rounding=adaround}")], QAT % (10, "4", 1e-3), None),
    "ternary": ([("round to nearest", "qat{epochs=0,weight-bits=ternary}")], QAT % (10, "ternary", 3e-3), 2.0),
    "binary": ([("signs", "qat{epochs=0,weight-bits=binary}")], QAT % (10, "binary", 3e-3), 5.0),
}
DISTRIBUTED = QAT % (10, "ternary", 3e-3)
CLUSTER = "cluster{clusters=16,epochs=%d,lr=%g,batch-size=32,loss=kl}"
CLUSTERS = [("16 clusters", CLUSTER % (0, 1e-3)), ("16 clusters, fine-tuned", CLUSTER % (3, 1e-3)),
            ("50% sparse", "sparsify{ratio=0.5,scope=global}"),
            ("50% sparse + 16 clusters, fine-tuned", "sparsify{ratio=0.5,scope=global}," + CLUSTER % (10, 3e-3))]


def digits() -> tuple[go.Graph, list[tuple[np.ndarray]], Callable[[go.Graph], float]]:
    """bench_int8's trained digits CNN (batch norm folded), its unlabeled training images, and test accuracy."""
    case = digits_case()
    graph = go.run_pipeline(go.from_torch(case.module, case.example, dynamic_batch=True),
                            "canonicalize,fold-bn,fuse-activation").graph
    x = np.concatenate([s[0] for s in case.labelled])
    return graph, case.training, lambda g: float(np.mean(go.interpret(g, x)[0].argmax(1) == case.labels))


def widths() -> list[str]:
    graph, samples, accuracy = digits()
    fp32 = accuracy(graph)
    lines = [f"Digits CNN (4 layers), fp32 test accuracy {100 * fp32:.1f}%; accuracy of the exported int8-form model "
             "(interpreter).", "", "| weights | method | pipeline | s | test accuracy | vs fp32 |",
             "|---|---|---|---:|---:|---:|"]
    targets = []
    for bits, (posts, qat, bound) in WIDTHS.items():
        for method, pipeline in [*posts, ("QAT", qat)]:
            began = time.perf_counter()
            result = go.run_pipeline(graph, pipeline, data=samples, calibration=samples[:32])
            seconds = time.perf_counter() - began
            score = accuracy(result.graph)
            lines.append(f"| {bits} | {method} | `{pipeline}` | {seconds:.1f} | {100 * score:.1f} | "
                         f"{100 * (score - fp32):+.1f} |")
            print(lines[-1], flush=True)
        if bound is not None:
            targets.append(verdict(f"{bits} QAT within {bound} points of fp32", fp32 - score <= bound / 100 + 1e-9,
                                   f"{100 * (score - fp32):+.1f} points"))
    return [*lines, "", "Targets:", "", *targets]


BUDGET_FRACTIONS = (1 / 12, 1 / 9, 1 / 7, 1 / 5)  # of the fp32 parameter bytes


def budget() -> list[str]:
    graph, samples, accuracy = digits()
    fp32, floats = accuracy(graph), sum(p.data.nbytes for p in graph.parameters)
    lines = [f"Digits CNN, fp32 test accuracy {100 * fp32:.1f}%, {floats / 1e3:.1f} kB of fp32 parameters. Sizes: "
             "the ONNX file as written and with `packed=True` (INT2 for ternary / binary, INT4 for 4-bit; a Cast "
             "ONNX Runtime folds at load, so the int8 kernels are the same).", "",
             "| model | widths | s | ONNX kB | packed kB | test accuracy | vs fp32 |", "|---|---|---:|---:|---:|---:|---:|"]
    runs = [(f"QAT, all {bits}", QAT % (10, bits, 3e-3)) for bits in ("ternary", "4", "8")]
    runs += [(f"QAT, size={fraction * floats / 1e6:.4f} MB", QAT[:-1] % (10, "binary", 3e-3) +
              f",size={fraction * floats / 1e6:.4f}}}") for fraction in BUDGET_FRACTIONS]
    scores = {}
    for label, pipeline in runs:
        began = time.perf_counter()
        result = go.run_pipeline(graph, pipeline, data=samples)
        seconds = time.perf_counter() - began
        summary = result.records[-1].details
        mix = summary.width_mix() if summary.widths else "one width"
        score, packed = accuracy(result.graph), go.to_onnx(result.graph, packed=True).ByteSize()
        scores[label] = (score, packed)
        lines.append(f"| {label} | {mix} | {seconds:.1f} | {go.to_onnx(result.graph).ByteSize() / 1e3:.1f} | "
                     f"{packed / 1e3:.1f} | {100 * score:.1f} | {100 * (score - fp32):+.1f} |")
        print(lines[-1], flush=True)
    ternary = scores["QAT, all ternary"]
    beaten = [label for label, (score, size) in scores.items() if "size=" in label and size <= 1.25 * ternary[1]
              and score >= ternary[0]]
    targets = [verdict("a size budget within 1.25x all-ternary's packed file is at least as accurate", bool(beaten),
                       ", ".join(beaten) or "none")]
    return [*lines, "", "Targets:", "", *targets]


def clusters() -> list[str]:
    graph, samples, accuracy = digits()
    fp32 = accuracy(graph)
    lines = [f"Digits CNN, fp32 test accuracy {100 * fp32:.1f}%, ONNX file {go.to_onnx(graph).ByteSize() / 1e3:.1f} kB. "
             "ONNX Runtime folds the lookups into float weights at load: the clustered files save size, not time.", "",
             "| model | pipeline | s | ONNX kB | test accuracy | vs fp32 |", "|---|---|---:|---:|---:|---:|"]
    scores = {}
    for label, pipeline in CLUSTERS:
        began = time.perf_counter()
        result = go.run_pipeline(graph, pipeline, data=samples)
        seconds = time.perf_counter() - began
        scores[label] = accuracy(result.graph)
        lines.append(f"| {label} | `{pipeline}` | {seconds:.1f} | {go.to_onnx(result.graph).ByteSize() / 1e3:.1f} | "
                     f"{100 * scores[label]:.1f} | {100 * (scores[label] - fp32):+.1f} |")
        print(lines[-1], flush=True)
    tuned, sparse = scores["16 clusters, fine-tuned"], scores["50% sparse + 16 clusters, fine-tuned"]
    targets = [verdict("16 clusters within 0.5 points of fp32", fp32 - tuned <= 0.005 + 1e-9,
                       f"{100 * (tuned - fp32):+.1f} points"),
               verdict("50% sparse + 16 clusters within 1 point of fp32", fp32 - sparse <= 0.01 + 1e-9,
                       f"{100 * (sparse - fp32):+.1f} points")]
    return [*lines, "", "Targets:", "", *targets]


def torchrun(processes: int, *worker: str) -> str:
    """The last line rank 0 of a torchrun job of this script printed (gloo over loopback, a thread each)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                           "--master_addr=127.0.0.1", f"--master_port={port}", __file__, *worker],
                          env=env, capture_output=True, text=True, timeout=1800, cwd=Path(__file__).parent)
    if done.returncode:
        raise RuntimeError(f"torchrun failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def calibration() -> list[str]:
    runs = {n: torchrun(n, "--calibrate").split() for n in (1, 2)}
    (one_s, one_digest), (two_s, two_digest) = [(float(s), d) for s, d in runs.values()]
    lines = ["resnet18 (random weights), `Calibration.statistics` on 32 natural-statistics images (a histogram and "
             "channel maxima for every float tensor), each process one thread.", "",
             "| processes | s | ranges digest |", "|---:|---:|---|",
             f"| 1 | {one_s:.1f} | `{one_digest[:16]}` |", f"| 2 | {two_s:.1f} | `{two_digest[:16]}` |"]
    targets = [verdict("ranges identical to one process", one_digest == two_digest,
                       "the same digest" if one_digest == two_digest else "digests differ"),
               verdict(">= 1.6x faster on 2 processes", one_s >= 1.6 * two_s, f"{one_s / two_s:.2f}x")]
    return [*lines, "", "Targets:", "", *targets]


def calibrate_worker() -> None:
    import hashlib

    from graphopt import models
    from graphopt.parallel import ranks
    from graphopt.quant import Calibration, observe_range
    from graphopt.quant.calibration import tracked_values

    graph = go.run_pipeline(go.from_torch(models.torchvision_model("resnet18")[0], (torch.randn(1, 3, 224, 224),)),
                            "canonicalize,fold-bn").graph
    samples = [(x[None],) for x in models.natural_images(32, seed=0)]
    ranks()  # join the group before timing
    began = time.perf_counter()
    stats = Calibration(samples).statistics(graph)
    seconds = time.perf_counter() - began
    digest = hashlib.sha256(repr([observe_range(stats.of(v), "percentile", 255)
                                  for v in tracked_values(graph)]).encode()).hexdigest()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{seconds} {digest}")


def gradients() -> list[str]:
    rows = {}
    for bits in (32, 8):
        rows[bits] = tuple(map(float, torchrun(2, "--worker", str(bits)).split()))
        print(bits, rows[bits], file=sys.stderr, flush=True)
    (exact_acc, exact_bytes, exact_s), (int8_acc, int8_bytes, int8_s) = rows[32], rows[8]
    lines = [f"`{DISTRIBUTED}` on 2 torchrun processes (gloo over loopback, one thread each).", "",
             "| gradients | bytes sent a step by each process | s | test accuracy |", "|---|---:|---:|---:|",
             f"| fp32 (all-reduce) | {exact_bytes:,.0f} | {exact_s:.1f} | {100 * exact_acc:.1f} |",
             f"| int8, error feedback (`gradient-bits=8`) | {int8_bytes:,.0f} | {int8_s:.1f} | {100 * int8_acc:.1f} |"]
    targets = [verdict(">= 3.5x fewer bytes with int8 gradients", exact_bytes >= 3.5 * int8_bytes,
                       f"{exact_bytes / int8_bytes:.2f}x"),
               verdict("accuracy cost of int8 gradients at most 0.3 points", exact_acc - int8_acc <= 0.003 + 1e-9,
                       f"{100 * (int8_acc - exact_acc):+.1f} points")]
    return [*lines, "", "Targets:", "", *targets]


def worker(bits: int) -> None:
    import torch.distributed as dist

    graph, samples, accuracy = digits()
    result = go.run_pipeline(graph, DISTRIBUTED.replace("loss=kl", f"loss=kl,gradient-bits={bits}"), data=samples)
    summary = result.records[-1].details
    if dist.get_rank() == 0:
        print(f"{accuracy(result.graph)} {summary.gradient_bytes} {summary.seconds}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sections = {"widths": widths, "budget": budget, "clusters": clusters, "calibration": calibration, "gradients": gradients}
    parser.add_argument("--sections", nargs="*", choices=tuple(sections), default=list(sections))
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--calibrate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.calibrate:
        calibrate_worker()
        return
    torch.set_num_threads(2)
    for name in args.sections:
        start = time.perf_counter()
        lines = sections[name]()
        text = "\n".join([f"Run {date.today()} on {cpu_kind()}.", "", *lines, "",
                          f"({time.perf_counter() - start:.0f} s)"])
        print(text, flush=True)
        write_section(f"qat-{name}", text)


if __name__ == "__main__":
    main()
