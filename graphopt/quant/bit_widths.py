"""Per-layer bit widths under a size budget (`quantize{size=MB}`). Each layer can take the narrowest
width the options allow (4 bits for weight-only linear and matmul layers when weight-bits=4, else 8),
8 bits, or stay float. Every layer's output noise at each width is measured alone (output SQNR with
only that layer quantized, on the first RANKING_SAMPLES samples); the noise powers of different
layers add, to first order, so starting from the narrowest widths and widening, each time, the
layer that removes the most noise per byte added until the budget is spent walks the frontier of
size against noise (the greedy knapsack). Points along the walk are measured for the size / SQNR
plot, and the chosen mix is measured on every sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.progress import progress
from graphopt.quant.quantizer import Scheme, table_grouped
from graphopt.quant.sensitivity import RANKING_SAMPLES, Evaluator

FLOAT = 32
FRONTIER_POINTS = 6  # measured sizes along the walk, besides the chosen one
W = TypeVar("W")  # a width: bits, or qat's names


@dataclass(frozen=True)
class BitWidths:
    bits: dict[int, int]  # layer position -> 4, 8 or FLOAT
    size_mb: float  # the model's parameters at those widths
    sqnr: float  # output SQNR, worst calibration sample
    frontier: list[tuple[float, float]]  # (MB, output SQNR dB) measured along the walk; the last is the choice


def weight_bytes(layer: Node, bits: int, group: int) -> int:
    """The stored size of the layer's weight at `bits`: float32, or 8, 4 or 2 bits a value packed, with
    a float scale per group of `group` inputs (0: per output channel, or a lookup table's row)."""
    count = int(layer.operands[1].data.size)  # type: ignore[union-attr]
    if bits == FLOAT:
        return 4 * count
    scales = 4 * (count // group if group else int(layer.operands[1].shape[0]))  # type: ignore[arg-type]
    return -(-count * bits // 8) + scales


def widths(layer: Node, narrowest: int, weight_only: bool, group: int) -> tuple[int, ...]:
    """The widths a layer may take: 4 only for weight-only linear / matmul whose inputs split into groups."""
    inputs = int(layer.operands[1].shape[-1 if layer.op == "linear" else 0])  # type: ignore[arg-type]
    four = narrowest == 4 and weight_only and layer.op in ("linear", "matmul") and inputs % group == 0
    return (4, 8, FLOAT) if four else (8, FLOAT)


def choose_bit_widths(evaluator: Evaluator, layers: Sequence[int], size_mb: float, fixed_bytes: int,
                      tables: Sequence[int] = ()) -> BitWidths:
    """The widths of `layers` (positions) that fit `size_mb` with the least measured output noise;
    `fixed_bytes` is what the rest of the model takes, `tables` (positions) the lookups quantized at
    the scheme's width in every measured mix."""
    nodes, scheme = list(evaluator.graph), evaluator.scheme
    options = {i: widths(nodes[i], scheme.weight_bits, scheme.weight_only, scheme.group_size) for i in layers}
    group = scheme.group_size if scheme.grouped else 0
    cost = {(i, b): weight_bytes(nodes[i], b, group) for i in layers for b in options[i]}
    trials = [(i, b) for i in layers for b in options[i] if b != FLOAT]
    noise = {(i, FLOAT): 0.0 for i in layers}
    for i, b in progress(trials, len(trials), "bit-width sensitivity"):
        noise[i, b] = 10 ** (-evaluator.sqnr([i], range(RANKING_SAMPLES), {i: b}) / 10)
    bits = {i: options[i][0] for i in layers}
    budget = size_mb * 1e6
    used = fixed_bytes + sum(cost[i, b] for i, b in bits.items())
    if used > budget:
        hint = "" if scheme.grouped else ", or allow int4 weights (activations=none,weight-bits=4)"
        raise GraphoptError(f"quantize: size={size_mb:g} MB is below the {used / 1e6:.2f} MB the model takes with every "
                            f"layer at its narrowest width ({scheme.weight_bits} bits"
                            f"{', weight-only' if scheme.weight_only else ''}); raise size{hint}")
    walk = widen(options, cost, noise, bits, used, budget)
    used, bits = walk[-1]
    picks = sorted({round(k * (len(walk) - 1) / FRONTIER_POINTS) for k in range(FRONTIER_POINTS)})
    frontier = [(walk[k][0] / 1e6, _sqnr(evaluator, walk[k][1], tables))
                for k in progress(picks, len(picks), "size frontier")]
    frontier.append((used / 1e6, _sqnr(evaluator, bits, tables)))
    return BitWidths(bits, used / 1e6, frontier[-1][1], frontier)


def widen(options: Mapping[int, Sequence[W]], cost: Mapping[tuple[int, W], int], noise: Mapping[tuple[int, W], float],
          start: Mapping[int, W], used: int, budget: float) -> list[tuple[int, dict[int, W]]]:
    """The greedy walk from `start` (`used` bytes): widen, each time, the layer whose next width removes
    the most noise per byte added, while it fits `budget`; every (bytes, widths) along the way."""
    bits = dict(start)
    walk = [(used, dict(bits))]
    while True:
        moves = []
        for i, b in bits.items():
            k = options[i].index(b)
            if k + 1 < len(options[i]):
                wider = options[i][k + 1]
                extra = cost[i, wider] - cost[i, b]
                if used + extra <= budget:
                    moves.append(((noise[i, b] - noise[i, wider]) / max(extra, 1), i, wider, extra))
        if not moves:
            return walk
        _, i, bits[i], extra = max(moves, key=lambda m: (m[0], m[1]))
        used += extra
        walk.append((used, dict(bits)))


def _sqnr(evaluator: Evaluator, bits: dict[int, int], tables: Sequence[int]) -> float:
    quantized = sorted([*tables, *(i for i, b in bits.items() if b != FLOAT)])
    return evaluator.sqnr(quantized, bits=bits) if quantized else float("inf")


def fixed_bytes(graph: Graph, layers: Sequence[Node], tables: Sequence[Node], scheme: Scheme) -> int:
    """The parameter bytes outside the layers' weights, lookup tables counted as the scheme stores
    them: int4 per group (table_grouped), else int8 with a scale a row."""
    stored = {id(n.operands[1]): weight_bytes(n, 4, scheme.group_size) if table_grouped(n, scheme)
              else weight_bytes(n, 8, 0) for n in tables}
    own = {id(n.operands[1]) for n in layers}
    return sum(stored.values()) + sum(p.data.nbytes for p in graph.parameters
                                      if id(p) not in own and id(p) not in stored and p.data is not None)
