"""Sensitivity and mixed precision. A layer's sensitivity is the output SQNR (signal to
quantization noise, dB, worst calibration sample) when only that layer is quantized; the mixed-
precision search keeps the most sensitive layers in float until the whole model meets a budget.
Each layer's own rounding error (its weight's and its input's SQNR) costs no model run and is
always reported."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.parallel import gather, ranks
from graphopt.progress import progress
from graphopt.quant.calibration import Statistics
from graphopt.quant.observers import expected_sqnr_db
from graphopt.quant.placement import Profile
from graphopt.quant.quantizer import Scheme, WeightCache, apply_widths, int8_weight
from graphopt.quant.runner import Runner


def sqnr_db(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    """10 log10(signal power / error power) over the float outputs; inf when they agree exactly."""
    signal = sum(float(np.sum(np.square(r, dtype=np.float64))) for r in reference if r.dtype.kind == "f")
    noise = sum(float(np.sum(np.square(r.astype(np.float64) - g))) for r, g in zip(reference, got)
                if r.dtype.kind == "f")
    if noise == 0:
        return float("inf")
    return 10 * float(np.log10(max(signal, 1e-30) / noise))


RANKING_SAMPLES = 2


@dataclass(frozen=True)
class Sensitivity:
    layer: str  # the layer's name as the user knows it (loc), or its op and position
    op: str
    sqnr_db: float
    rank: int = 0  # the torchrun process that measured it


class Evaluator:
    """Scores quantized copies of `graph` (a chosen subset of its layers, given by position) on the
    calibration samples against the float model's outputs."""

    def __init__(self, graph: Graph, samples: Sequence[tuple[np.ndarray, ...]], stats: Statistics,
                 scheme: Scheme, target: Profile, weights: WeightCache | None = None) -> None:
        self.graph, self.samples, self.stats = graph, list(samples), stats
        self.scheme, self.target = scheme, target
        self.weights: WeightCache = {} if weights is None else weights  # every copy quantizes the same weights

    def quantized(self, layers: Sequence[int], bits: Mapping[int, int] | None = None) -> tuple[Graph, list[Node]]:
        """A copy with `layers` quantized (at `bits[i]` weight bits where given, weight-only), and
        its nodes as they were numbered before."""
        clone = self.graph.clone()
        nodes = list(clone)
        apply_widths(clone, [nodes[i] for i in layers], {id(nodes[i]): b for i, b in (bits or {}).items()},
                     self.scheme, self.target, self.stats.rebind(clone), cache=self.weights)
        return clone, nodes

    def sqnrs(self, layers: Sequence[int], picked: Sequence[int] | None = None, bits: Mapping[int, int] | None = None,
              floor: float = -np.inf) -> list[float]:
        """The output SQNR on each `picked` sample (indices; all by default), stopping after the
        first below `floor` (all a threshold test needs)."""
        runner = Runner(self.quantized(layers, bits)[0])
        scores = []
        for k in range(len(self.samples)) if picked is None else picked:
            scores.append(sqnr_db(self.stats.outputs[k], runner.run(*self.samples[k])[0]))
            if scores[-1] < floor:
                break
        return scores

    def sqnr(self, layers: Sequence[int], picked: Sequence[int] | None = None, bits: Mapping[int, int] | None = None,
             floor: float = -np.inf) -> float:
        """The worst of sqnrs."""
        return min(self.sqnrs(layers, picked, bits, floor), default=float("inf"))

    def sensitivity(self, layers: Sequence[int], picked: Sequence[int]) -> list[Sensitivity]:
        """Each layer quantized alone, scored on the `picked` samples: the scores only order the
        layers, and the budget is then checked on every sample. Under torchrun the ranks split the
        layers (each measures every world-th) and every rank gets every score."""
        rank, world = ranks()
        nodes, mine = list(self.graph), list(layers)[rank::world]
        scores = {i: Sensitivity(nodes[i].loc or f"{nodes[i].op}#{i}", nodes[i].op, self.sqnr([i], picked), rank)
                  for i in progress(mine, len(mine), "layer sensitivity", hidden=rank != 0)}
        merged = {i: s for share in gather(scores, world) for i, s in share.items()}
        return [merged[i] for i in layers]


@dataclass(frozen=True)
class LayerError:
    layer: str
    op: str
    weight_db: float  # SQNR of the int8 weight against the float one
    input_db: float | None  # expected SQNR of the input's quantization (None: weight-only)


def layer_errors(layers: Sequence[Node], scheme: Scheme, stats: Statistics | None) -> list[LayerError]:
    """Every layer's weight SQNR and, from the calibration histogram, its input's expected SQNR
    (rounding and clipping), before any of them is quantized."""
    errors = []
    for i, layer in enumerate(layers):
        weight = layer.operands[1].data
        if weight is None:
            continue
        q, scales = int8_weight(layer, scheme.weights == "per-channel", scheme.weight_bound)
        input_db = None
        x = layer.operands[0]
        if stats is not None and not scheme.weight_only and x.dtype.is_float:
            input_db = expected_sqnr_db(stats.of(x), scheme.activation_qparams(stats, x))
        errors.append(LayerError(layer.loc or f"{layer.op}#{i}", layer.op,
                                 sqnr_db([weight], [q.astype(np.float32) * scales]), input_db))
    return errors


@dataclass
class MixedPrecision:
    int8: list[int]
    float: list[int]
    sensitivity: list[Sensitivity]
    sqnr_all_int8: float
    sqnr: float


def mixed_precision(evaluator: Evaluator, layers: Sequence[int], budget_db: float, *,
                    always_measure: bool = False) -> MixedPrecision:
    """All layers in int8 when that meets `budget_db`; otherwise the fewest most-sensitive layers in
    float that meet it, found by bisection over the sensitivity order (log2(n) model evaluations)."""
    each = evaluator.sqnrs(layers)
    full = min(each)
    if full >= budget_db and not always_measure:
        return MixedPrecision(list(layers), [], [], full, full)
    # ranked on the samples the all-int8 model does worst on: where a layer's error shows most
    # (on all-MiniLM-L6-v2, short replies make other layers sensitive than long sentences do)
    scores = evaluator.sensitivity(layers, sorted(np.argsort(each, kind="stable")[:RANKING_SAMPLES].tolist()))
    if full >= budget_db:
        return MixedPrecision(list(layers), [], scores, full, full)
    order = [i for _, i in sorted(zip((s.sqnr_db for s in scores), layers))]
    cache = {0: full, len(order): float("inf")}

    def score(k: int) -> float:  # exact where it meets the budget; below it, some sample's SQNR
        if k not in cache:
            cache[k] = evaluator.sqnr(sorted(order[k:]), floor=budget_db)
        return cache[k]

    lo, hi = 0, len(order)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if score(mid) >= budget_db else (mid, hi)
    return MixedPrecision(sorted(order[hi:]), sorted(order[:hi]), scores, full, score(hi))
