"""Post-training quantization v2 on all-MiniLM-L6-v2 (real weights, 128 tokens, batch 1), against
ONNX Runtime in the same process: the wall time of quantizing with defaults beside ONNX Runtime's
quantize_static on the same 32 calibration texts, and int4 weight-only linear layers (rounded to
nearest, and by GPTQ) lowered to MatMulNBits: size, latency against fp32, and embedding cosine on
texts disjoint from calibration and made hard (a lone word, symbols, numbers, code, other
languages, a long paragraph).

    python benchmarks/bench_ptq.py [--repeats 30]"""

from __future__ import annotations

import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from bench_dynamic import cosines, timing_args
from bench_prune import cpu_kind, verdict
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from report import write_section

import graphopt as go
from graphopt import models
from graphopt.analysis.latency import session_ms

NAMES = ("input_ids", "attention_mask")


class Reader(CalibrationDataReader):
    def __init__(self, samples: list[tuple[np.ndarray, ...]]) -> None:
        self.samples = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self.samples, None)
        return None if sample is None else dict(zip(NAMES, sample))


def session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    args = timing_args(__doc__)
    start = time.perf_counter()
    text = models.minilm()
    graph = go.from_torch(text.module, text.inputs(models.SENTENCES[:1], 128))
    calibration = [tuple(t.numpy() for t in text.inputs(models.varied_texts(1, seed=300 + k), 128)) for k in range(32)]
    evaluation = [tuple(t.numpy() for t in text.inputs([t], 128))
                  for t in models.HARD_TEXTS + models.varied_texts(8, seed=77)]
    with torch.no_grad():
        want = [text.module(*map(torch.from_numpy, s)).numpy() for s in evaluation]

    began = time.perf_counter()
    go.run_pipeline(graph, "canonicalize,fold-bn,fuse-activation,quantize", calibration=calibration)
    ours_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "peer.onnx"
        fp32 = go.to_onnx(graph, source).SerializeToString()
        began = time.perf_counter()
        quantize_static(source, target, Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        peer_s = time.perf_counter() - began

    rows, int4 = [], {}
    for rounding in ("nearest", "gptq"):
        began = time.perf_counter()
        result = go.run_pipeline(graph, "canonicalize,fold-bn,quantize{activations=none,weight-bits=4,group-size=32,"
                                 f"rounding={rounding},samples=32}}", calibration=calibration).graph
        seconds = time.perf_counter() - began
        model = go.to_onnx(result).SerializeToString()
        s = session(model)
        c = cosines([s.run(None, dict(zip(NAMES, x)))[0] for x in evaluation], want)
        int4[rounding] = (len(model) / 1e6, c)
        rows.append((rounding, seconds, s, len(model) / 1e6, c))
    fp32_session = session(fp32)
    time.sleep(1)  # torch's idle threads stop spinning before the timings
    fp32_ms = session_ms(fp32_session, evaluation[0], args.repeats)
    lines = [f"Run {date.today()} on {cpu_kind()}; ONNX Runtime 1 thread, batch 1, 128 tokens, median of "
             f"{args.repeats}.", "",
             f"Quantize wall time with defaults (32 calibration texts): graphopt {ours_s:.1f} s, ONNX Runtime "
             f"quantize_static (QDQ, per-channel, u8s8) on the same texts {peer_s:.1f} s: {ours_s / peer_s:.2f}x.", "",
             f"int4 weight-only linear layers (group 32, MatMulNBits), {len(evaluation)} hard texts disjoint from "
             f"calibration; fp32 {len(fp32) / 1e6:.1f} MB, {fp32_ms:.2f} ms:", "",
             "| rounding | quantize s | MB | ms | ms / fp32 ms | cosine mean | cosine min |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for rounding, seconds, s, mb, c in rows:
        ms = session_ms(s, evaluation[0], args.repeats)
        lines.append(f"| {rounding} | {seconds:.1f} | {mb:.1f} | {ms:.2f} | {ms / fp32_ms:.2f} | {c.mean():.4f} | "
                     f"{c.min():.4f} |")
        int4[rounding] = (*int4[rounding], ms)
    mb, c, ms = int4["gptq"]
    targets = [verdict("quantize wall time <= 3x ONNX Runtime's quantize_static", ours_s <= 3 * peer_s,
                       f"{ours_s / peer_s:.2f}x"),
               verdict("int4 model <= 20 MB", mb <= 20, f"{mb:.1f} MB"),
               verdict("int4 latency no worse than fp32 ONNX Runtime", ms <= fp32_ms, f"{ms / fp32_ms:.2f}x"),
               verdict("int4 (gptq) cosine min >= 0.98 on the hard texts", c.min() >= 0.98, f"min {c.min():.4f}")]
    text_out = "\n".join([*lines, "", "Targets:", "", *targets, "", f"({time.perf_counter() - start:.0f} s)"])
    print(text_out)
    write_section("ptq-minilm", text_out)


if __name__ == "__main__":
    main()
