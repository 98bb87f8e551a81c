"""quantize: calibrated int8 quantization in QDQ form, placed where the target runtime fuses it.

Weights become int8 (symmetric, per output channel by default) behind a dequantize node, biases
int32 on the input-times-weight scale, and activations get a quantize/dequantize pair (uint8
asymmetric by default) whose range a calibration observer picks from histograms. With
`activations=none` it is weight-only (int8, or int4 per group for linear and matmul layers, which
ONNX Runtime runs as MatMulNBits); `weight-bits=4` with activations stores 4-bit per-channel
weights (|q| <= 7, each channel's range clipped where that rounds better) in int8.

Weights round to nearest by default; `rounding=adaround` learns each layer's roundings on the
calibration samples (graphopt.quant.adaround), `rounding=gptq` compensates rounding errors across a
weight-only int4 layer's inputs (graphopt.quant.gptq).

Embedding tables are stored int8 per row; a lookup gathers int8 rows and scales only those back.
Weight-only int4 stores them int4 per group too (power-of-two groups >= 16), gathered by ONNX Runtime's
GatherBlockQuantized.

Linear layers that read a layer norm's output are smoothed first (`smooth`, SmoothQuant's alpha;
0 turns it off): an exact per-channel rescaling that moves outlier channels' range from the
per-tensor activation scale into the per-channel weight scales.

Mixed precision is the default: when the all-int8 model's output SQNR on the calibration samples is
below `budget` dB, the layers whose quantization alone hurts the output most stay float until the
budget holds (budget=0 turns this off). The layers kept float and the sensitivity of every layer
are in the pass's details (a QuantizeSummary), which the report draws. With a size budget
(`size=MB`) each layer's weight width (4 / 8 bits, or float) is chosen instead, to fit that size with
the least output noise (graphopt.quant.bit_widths); the report plots size against output SQNR.

With `bias-correction=true` each layer's bias is then moved, layer by layer on the calibration
samples, so that its quantized output keeps the float model's per-channel mean (empirical bias
correction; it pays most for depthwise convs with per-tensor weights).

Contract: bounded -- on the calibration samples the output SQNR is at least `budget` dB (with
`size=`: the parameters fit the size, and the SQNR reached is reported) -- and idempotent (a graph
that already holds dequantize nodes keeps its precision choices)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphopt.errors import GraphoptError, OptionError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ops.quant import DEQUANTIZE_OPS
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.quant.adaround import adaround
from graphopt.quant.bias_correction import BiasShift, correct_biases
from graphopt.quant.bit_widths import FLOAT, choose_bit_widths, fixed_bytes
from graphopt.quant.calibration import Calibration, Statistics
from graphopt.quant.gptq import input_hessians
from graphopt.quant.placement import TARGETS, candidate_layers, profile
from graphopt.quant.quantizer import Scheme, SchemeOptions, apply_widths
from graphopt.quant.sensitivity import Evaluator, LayerError, Sensitivity, layer_errors, mixed_precision
from graphopt.quant.smoothing import smooth


@dataclass
class QuantizeSummary:
    """What quantize decided: layers in int8, layers left float (with the reason), and the output
    SQNR on the calibration samples before and after the mixed-precision fallback."""

    spec: str
    target: str  # the profile placed for, and why it applies to this machine
    int8: list[str]  # layers quantized (at their `bits` where a size budget chose; lookup tables are in `tables`)
    float: dict[str, str]
    budget_db: float
    smoothed: list[str] = field(default_factory=list)
    bias_shifts: list[BiasShift] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    errors: list[LayerError] = field(default_factory=list)
    sqnr_all_int8: float | None = None
    sqnr: float | None = None
    sensitivity: list[Sensitivity] = field(default_factory=list)
    size_mb: float | None = None  # with a size budget: the parameters' size at the chosen widths
    bits: dict[str, int] = field(default_factory=dict)  # with a size budget: each quantized layer's weight bits
    frontier: list[tuple[float, float]] = field(default_factory=list)  # (MB, output SQNR dB) along the search


def _calibration(ctx: PassContext, why: str, otherwise: str) -> Calibration:
    calibration = ctx.get("calibration")
    if calibration is None:
        raise GraphoptError(f"quantize needs calibration data {why}: pass calibration=[input tuples] to "
                            f"run_pipeline (CLI: --calibration FILE.npz), {otherwise}")
    if not isinstance(calibration, Calibration):
        calibration = ctx.options["calibration"] = Calibration(calibration)
    return calibration


@register_pass
@dataclass(frozen=True)
class Quantize(Pass, SchemeOptions):
    """Calibrated int8 QDQ quantization with sensitivity-driven mixed precision."""

    name = "quantize"
    contract = Contract("bounded")
    skip: tuple[str, ...] = ()
    target: str = option("auto", choices=TARGETS)
    budget: float = option(20.0, low=0, high=120)  # dB; 0 turns mixed precision off
    smooth: float = option(0.5, low=0, high=1)
    samples: int = option(32, low=1)
    sensitivity: str = option("auto", choices=("auto", "always"))  # always: measured for the report
    bias_correction: bool = option(False)
    size: float = option(0.0, low=0)  # MB; per-layer widths (4 / 8 / float) chosen to fit it; 0: off

    def __post_init__(self) -> None:
        super().__post_init__()
        Scheme.of(self, 127)  # options that only clash together (weight-bits=4 with activations) fail here
        if self.bias_correction and self.activations == "none":
            raise OptionError("quantize: bias-correction measures the quantized model on calibration samples; "
                              "it applies with quantized activations (drop activations=none)")
        if self.size and self.weight_bits == 4 and self.activations != "none":
            raise OptionError("quantize: 4-bit weights with quantized activations are stored in int8 and save no "
                              "size; for size=, use activations=none,weight-bits=4 (int4 weight-only) or weight-bits=8")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        target, why = profile(self.target)
        chosen_target = f"{target.name}: {why}"
        scheme = Scheme.of(self, target.weight_max)
        if any(n.op in DEQUANTIZE_OPS for n in graph):  # quantized before: its choices stand
            return PassResult(False, details=QuantizeSummary(self.spec(), chosen_target, [], {}, self.budget))
        layers = candidate_layers(graph, target, self.skip)
        wanted = {id(n) for n in layers}
        summary = QuantizeSummary(self.spec(), chosen_target, [], {n.loc or n.op: "skip=" for n in graph
                                                    if n.op in target.layers | target.tables and id(n) not in wanted},
                                  self.budget)
        if not layers:
            return PassResult(False, details=summary)
        stats, weights = None, {}
        if not scheme.weight_only:
            calibration = _calibration(ctx, "for activations", "or use quantize{activations=none} for weight-only")
            stats = self._smoothed_statistics(graph, calibration, layers, summary)
        elif self.size:
            calibration = _calibration(ctx, "to measure each layer's bit widths for size=", "or drop size=")
            stats = calibration.statistics(graph)
        if scheme.rounding == "adaround":  # on the smoothed weights, before any search quantizes them
            adaround(graph, [n for n in layers if n.op not in target.tables], self._rounding_samples(graph, ctx),
                     scheme, weights)
        bits: dict[int, int] = {}  # id(layer) -> weight bits, where a size budget mixed them
        if stats is not None:
            evaluator = Evaluator(graph, calibration.samples[:self.samples], stats, scheme, target, weights)
            layers, bits = self._search(evaluator, layers, summary, ctx)
        chosen = [n for n in layers if ctx.allow(n)]
        summary.int8 = [n.loc or n.op for n in chosen if n.op not in target.tables]
        summary.tables = [n.loc or n.op for n in chosen if n.op in target.tables]
        if not scheme.grouped:
            summary.errors = layer_errors(chosen, scheme, stats)
        hessians = None
        if scheme.rounding == "gptq":
            hessians = input_hessians(graph, [n for n in chosen if n.op in ("linear", "matmul")],
                                      self._rounding_samples(graph, ctx))
        apply_widths(graph, chosen, bits, scheme, target, stats, hessians, cache=weights)
        return PassResult(bool(chosen), details=summary)

    def _smoothed_statistics(self, graph: Graph, calibration: Calibration, layers: list[Node],
                             summary: QuantizeSummary) -> Statistics:
        stats = calibration.statistics(graph)
        if self.smooth > 0:
            smoothed = smooth(graph, layers, stats.channel_absmax, self.smooth)
            if smoothed:
                summary.smoothed = [n.loc or n.op for n in smoothed]
                stats = calibration.statistics(graph, known=stats)  # the multiplies smoothing added
        return stats

    def _rounding_samples(self, graph: Graph, ctx: PassContext) -> list[tuple[np.ndarray, ...]]:
        calibration = _calibration(ctx, f"for rounding={self.rounding}", "or round to nearest")
        calibration.check(graph, f"{self.rounding} calibration")
        return calibration.samples[:self.samples]

    def _search(self, evaluator: Evaluator, layers: list[Node], summary: QuantizeSummary,
                ctx: PassContext) -> tuple[list[Node], dict[int, int]]:
        """Mixed precision (by the size budget or the SQNR budget; the layers that stay float into
        the summary) and bias correction: the layers left to quantize, and their weight bits by id
        where a size budget chose them."""
        nodes = list(evaluator.graph)
        index = {id(n): i for i, n in enumerate(nodes)}
        positions = [index[id(n)] for n in layers]
        widths: dict[int, int] = {}
        if self.size:
            tables = [n for n in layers if n.op in evaluator.target.tables]
            learned = [i for i in positions if nodes[i].op not in evaluator.target.tables]
            fixed = fixed_bytes(evaluator.graph, layers, tables, evaluator.scheme)
            chosen = choose_bit_widths(evaluator, learned, self.size, fixed,
                                       [i for i in positions if nodes[i].op in evaluator.target.tables])
            summary.size_mb, summary.sqnr, summary.frontier = chosen.size_mb, chosen.sqnr, chosen.frontier
            for i, width in chosen.bits.items():
                name = nodes[i].loc or nodes[i].op
                if width == FLOAT:
                    summary.float[name] = f"size={self.size:g} MB: float removes the most noise per byte"
                else:
                    summary.bits[name] = width
            positions = [i for i in positions if chosen.bits.get(i) != FLOAT]
            widths = {id(nodes[i]): width for i, width in chosen.bits.items()}
        elif self.budget > 0:
            mixed = mixed_precision(evaluator, positions, self.budget, always_measure=self.sensitivity == "always")
            summary.sqnr_all_int8, summary.sqnr, summary.sensitivity = mixed.sqnr_all_int8, mixed.sqnr, \
                mixed.sensitivity
            scores = {s.layer: s.sqnr_db for s in mixed.sensitivity}
            for i in mixed.float:
                name = nodes[i].loc or nodes[i].op
                summary.float[name] = f"sensitivity: {scores.get(name, 0.0):.1f} dB alone"
            positions = mixed.int8
        if self.bias_correction:
            summary.bias_shifts = correct_biases(evaluator, [i for i in positions if ctx.allow(nodes[i])])
        return [nodes[i] for i in positions], widths
