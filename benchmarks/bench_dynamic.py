"""Symbolic sequence length: all-MiniLM-L6-v2 (real weights) traced with a symbolic batch and length,
int8 by graphopt calibrated on unpadded sentences of many lengths, run unpadded at every length;
against ONNX Runtime's own quantizer (quantize_dynamic) on the model exported at a fixed length of
128, which must pad every input to it. Evaluation texts are disjoint from calibration and cut to
exact token counts (5 to 128), including symbol runs, numbers and other languages.

    python benchmarks/bench_dynamic.py [--repeats 30]"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from report import cpu_kind, verdict, write_section

import graphopt as go
from graphopt import models
from graphopt.analysis.latency import ort_session, session_ms

LENGTHS = (5, 16, 32, 64, 128)
PADDED = 128


def cut(text: models.TextModel, sentences: list[str], length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each sentence as one batch-1 input of exactly `length` tokens (texts too short are repeated)."""
    out = []
    for sentence in sentences:
        ids = text.tokenizer((sentence + " ") * 200, truncation=True, max_length=length, return_tensors="np")
        if ids["input_ids"].shape[1] != length:
            raise RuntimeError(f"{sentence!r} repeated is still shorter than {length} tokens")
        out.append((ids["input_ids"], ids["attention_mask"]))
    return out


def padded(text: models.TextModel, sample: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = sample
    pad = PADDED - ids.shape[1]
    return (np.pad(ids, [(0, 0), (0, pad)], constant_values=text.tokenizer.pad_token_id), np.pad(mask, [(0, 0), (0, pad)]))


def cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    return np.array([float((x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b)])


def timing_args(doc: str, sections: tuple[str, ...] = ()) -> argparse.Namespace:
    """`--repeats` (and `--sections`, where a benchmark has several) for a benchmark that times
    ONNX Runtime beside torch (2 threads, warnings off)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    if sections:
        parser.add_argument("--sections", nargs="*", choices=sections, default=list(sections))
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    return parser.parse_args()


def main() -> None:
    args = timing_args(__doc__)
    start = time.perf_counter()
    text = models.minilm()
    n, length = torch.export.Dim("N", min=1, max=64), torch.export.Dim("L", min=2, max=512)
    example = text.inputs(models.SENTENCES, 16)
    graph = go.from_torch(text.module, example, dynamic_shapes=({0: n, 1: length}, {0: n, 1: length}))
    calibration = []
    for k in range(16):  # unpadded batches of 4: each as long as its longest sentence
        batch = text.tokenizer(models.varied_texts(4, seed=100 + k), return_tensors="np", padding=True,
                               truncation=True, max_length=PADDED)
        calibration.append((batch["input_ids"], batch["attention_mask"]))
    int8 = go.run_pipeline(graph, "canonicalize,fold-bn,fuse-activation,quantize", calibration=calibration).graph
    ours, _ = ort_session(int8)
    fp32, _ = ort_session(graph)
    static = go.from_torch(text.module, text.inputs(models.SENTENCES[:1], PADDED))
    with tempfile.TemporaryDirectory() as tmp:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "peer.onnx"
        go.to_onnx(static, source)
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        peer = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    evaluation = models.HARD_TEXTS + models.varied_texts(8, seed=77)
    lines = [f"Run {date.today()} on {cpu_kind()}; ONNX Runtime 1 thread, batch 1, median of {args.repeats}.", "",
             f"all-MiniLM-L6-v2 traced as `int64[N, L]`; graphopt int8 (`canonicalize,fold-bn,fuse-activation,"
             f"quantize`) calibrated on 16 unpadded batches of varied texts; {len(evaluation)} other texts (a lone word, "
             "symbols, numbers, a long paragraph, code, other languages) cut to each length. The peer: ONNX "
             f"Runtime's quantize_dynamic on the model exported at length {PADDED}, fed each text padded to "
             f"{PADDED}. Cosine: embedding against the fp32 model at the same length, unpadded. \"Traced at this fixed "
             "length\": the same int8 recipe on a model traced at exactly that many tokens, ONNX Runtime's cost at "
             "that length with no symbolic sizes.", "",
             "| tokens | graphopt int8 cosine mean | min | graphopt fp32 ms | graphopt int8 ms | int8 traced at this "
             "fixed length ms | peer int8 ms (padded) | peer int8 cosine min | int8 ms / int8 ms at 128 | tokens / 128 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    accuracy, fixed_int8 = {}, {}
    for count in LENGTHS:  # torch first, for every length: its idle threads spin and would skew the timings
        samples = cut(text, evaluation, count)
        with torch.no_grad():
            want = [text.module(*map(torch.from_numpy, s)).numpy() for s in samples]
        got = [ours.run(None, dict(zip(("input_ids", "attention_mask"), s)))[0] for s in samples]
        peer_got = [peer.run(None, dict(zip([i.name for i in peer.get_inputs()], padded(text, s))))[0]
                    for s in samples]
        accuracy[count] = (samples[0], cosines(got, want), cosines(peer_got, want))
        fixed = go.from_torch(text.module, tuple(map(torch.from_numpy, samples[0])))  # the floor at this length
        fixed_int8[count], _ = ort_session(go.run_pipeline(
            fixed, "canonicalize,fold-bn,fuse-activation,quantize",
            calibration=cut(text, models.varied_texts(8, seed=5), count)).graph)
    time.sleep(1)
    results = {}
    for count in sorted(LENGTHS, reverse=True):
        sample, ours_cos, peer_cos = accuracy[count]
        ms = session_ms(ours, sample, args.repeats)
        results[count] = (ours_cos, ms)
        lines.append(f"| {count} | {ours_cos.mean():.4f} | {ours_cos.min():.4f} | "
                     f"{session_ms(fp32, sample, args.repeats):.2f} | {ms:.2f} | "
                     f"{session_ms(fixed_int8[count], sample, args.repeats):.2f} | "
                     f"{session_ms(peer, padded(text, sample), args.repeats):.2f} | "
                     f"{peer_cos.min():.4f} | {ms / results[PADDED][1]:.2f} | {count / PADDED:.2f} |")
        print(lines[-1], flush=True)
    header, rows = lines[:6], lines[6:]
    short, long = results[5], results[128]
    targets = [verdict("int8 cosine >= 0.99 to fp32 at 5 tokens (every text)", short[0].min() >= 0.99,
                       f"min {short[0].min():.4f}"),
               verdict("int8 cosine >= 0.99 to fp32 at 128 tokens (every text)", long[0].min() >= 0.99,
                       f"min {long[0].min():.4f}"),
               verdict("latency at 5 tokens at most twice its share of 128 tokens' (5/128, so <= 0.08)",
                       short[1] / long[1] <= 2 * 5 / 128,
                       f"{short[1] / long[1]:.2f}: {short[1]:.2f} ms against {long[1]:.2f} ms")]
    text_out = "\n".join([*header, *reversed(rows), "", "Targets:", "", *targets,
                          "", f"({time.perf_counter() - start:.0f} s)"])
    print(text_out)
    write_section("dynamic-minilm", text_out)


if __name__ == "__main__":
    main()
