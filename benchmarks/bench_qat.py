"""Quantization-aware training on the digits CNN (trained here on scikit-learn's digits, batch norm
folded): for each weight width, post-training rounding beside `qat` (fine-tuned against the fp32
model on the 1400 unlabeled training images, the fake-quantized scales learned), test accuracy on
the 397 held-out images. Post-training rows: `quantize{budget=0}` for int8 and 4-bit (W4A8; nearest
and AdaRound), `qat{epochs=0}` (the starting point: rounded to nearest, or the signs) for ternary
and binary.

    python benchmarks/bench_qat.py"""

from __future__ import annotations

import argparse
import time
from datetime import date

import numpy as np
import torch
from bench_int8 import DigitsNet
from bench_ptq import train_digits
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


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from sklearn.datasets import load_digits

    torch.set_num_threads(2)
    start = time.perf_counter()
    data = load_digits()
    x, y = (data.images / 16.0).astype(np.float32)[:, None], data.target
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    net = train_digits(DigitsNet, x[train], y[train])
    graph = go.run_pipeline(go.from_torch(net, (torch.from_numpy(x[:8]),), dynamic_batch=True),
                            "canonicalize,fold-bn,fuse-activation").graph
    samples = [(x[i:i + 1],) for i in train]

    def accuracy(g: go.Graph) -> float:
        return float(np.mean(go.interpret(g, x[test])[0].argmax(1) == y[test]))

    fp32 = accuracy(graph)
    lines = [f"Run {date.today()} on {cpu_kind()}. Digits CNN (4 layers), fp32 test accuracy {100 * fp32:.1f}%; "
             "accuracy of the exported int8-form model (interpreter).", "",
             "| weights | method | pipeline | s | test accuracy | vs fp32 |", "|---|---|---|---:|---:|---:|"]
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
    text = "\n".join([*lines, "", "Targets:", "", *targets, "", f"({time.perf_counter() - start:.0f} s)"])
    print(text)
    write_section("qat-digits", text)


if __name__ == "__main__":
    main()
