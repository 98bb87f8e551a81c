"""Empirical bias correction (Nagel et al., "Data-Free Quantization", section 4.2, measured on the
calibration samples): rounding a layer's weights shifts the mean of its output channels, most of
all for depthwise convs with per-tensor weights, and the shift adds up through the layers that
follow. Layer by layer in graph order, with the layers before it already quantized and corrected,
each layer's per-channel output mean is measured in the quantized model and its bias moved so the
mean matches the float model's.

Contract: bounded. The float graph's biases change (each by the measured mean shift), so its
quantized model's per-channel output means match the float model's on the calibration samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.progress import progress
from graphopt.quant.runner import Runner
from graphopt.quant.sensitivity import Evaluator


@dataclass(frozen=True)
class BiasShift:
    layer: str
    shift: float  # the largest |mean shift| removed, relative to the output's RMS


def channel_axis(layer: Node) -> int:
    """Convs keep channels on axis 1, linear and matmul layers on the last."""
    return 1 if layer.op.startswith("conv") else -1


def channel_means(graph: Graph, layers: Sequence[Node],
                  samples: Sequence[tuple[np.ndarray, ...]]) -> tuple[list[np.ndarray], list[float]]:
    """Per-channel mean (and overall RMS) of each layer's output over every sample's elements."""
    runner = Runner(graph, [layer.result for layer in layers])
    sums: list[np.ndarray | float] = [0.0] * len(layers)
    squares, counts = [0.0] * len(layers), [0] * len(layers)
    for sample in samples:
        _, arrays = runner.run(*sample)
        for i, (a, layer) in enumerate(zip(arrays, layers)):
            a = np.moveaxis(np.asarray(a, np.float64), channel_axis(layer), -1)
            flat = a.reshape(-1, a.shape[-1])
            sums[i] = sums[i] + flat.sum(axis=0)
            squares[i] += float(np.square(flat).sum())
            counts[i] += flat.shape[0]
    means = [np.asarray(s) / c for s, c in zip(sums, counts)]
    return means, [float(np.sqrt(q / (c * m.size))) for q, c, m in zip(squares, counts, means)]


def correct_biases(evaluator: Evaluator, layers: Sequence[int]) -> list[BiasShift]:
    """Move the biases of the evaluator's graph's `layers` (positions in graph order) so that, with
    them quantized, each keeps its per-channel output mean on the evaluator's samples."""
    graph, samples = evaluator.graph, evaluator.samples
    nodes = list(graph)
    with_bias = [i for i in sorted(layers) if len(nodes[i].operands) > 2 and nodes[i].operands[2].data is not None]
    targets = [nodes[i] for i in with_bias]
    reference, rms = channel_means(graph, targets, samples)
    shifts = []
    for k, i in enumerate(progress(with_bias, len(with_bias), "bias correction")):
        clone, numbered = evaluator.quantized([j for j in layers if j <= i])
        (mean,), _ = channel_means(clone, [numbered[i]], samples)
        shift = mean - reference[k]
        bias = nodes[i].operands[2]
        bias.data = (bias.data - shift.astype(bias.data.dtype)).astype(bias.data.dtype)
        shifts.append(BiasShift(nodes[i].loc or f"{nodes[i].op}#{i}", float(np.abs(shift).max() / max(rms[k], 1e-12))))
    return shifts
