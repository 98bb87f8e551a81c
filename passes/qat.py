"""qat: quantization-aware training, through the shared training loop (graphopt.backends.torch_train).

The layers and tensors `quantize` would quantize get a fake-quantize node (quantize, then
dequantize, on float tensors) whose scale is a trainable parameter (its log2, as in TQT): weights
per output channel (or per tensor) at `weight-bits` 8, 4, ternary (levels -1, 0, 1 times the scale)
or binary (-1, 1: the sign, its gradient clipped to |w| <= scale), activations per tensor as the
target fuses them. Their scales start where post-training quantization puts them (calibrated
percentile ranges; weights at their maximum, MSE-clipped for 4 bits, 1.4 x mean |w| for ternary,
the ternary-weight-network threshold, mean |w| for binary); then the model trains against the float
model it received (the teacher) on `data=` with the rounding's gradient passed straight through and
the scales learned as in LSQ. The result is exported exactly as `quantize` exports: int8 weights behind
dequantize nodes, int32 biases, Q/DQ pairs with the learned scales, so the fusion check, the
report and the integer interpreter apply unchanged. Ternary and binary weights are int8 (|q| <= 1)
in the graph, which ONNX Runtime's int8 kernels run; `to_onnx(packed=True)` stores them in INT2 and
4-bit ones in INT4 behind a Cast that ONNX Runtime folds at load (a smaller file, the same int8
kernels; ONNX has no 1-bit type, so binary takes 2 bits).
`epochs=0` exports the starting point: post-training rounding at those bits.

`size=MB` mixes widths per layer: each layer may take weight-bits or any wider width up to float;
every (layer, width) is measured alone (output SQNR with only that weight rounded), and the greedy
walk of quantize's size budget (graphopt.quant.bit_widths.widen) widens the layer that removes the
most noise per byte until the packed parameters fill the budget; then all of them train together.

Batch norm must be folded first (`fold-bn`): the folded weights are what gets quantized.

Contract: trained -- the training loss falls, the export is quantize's form (with epochs=0 at 8 bits
it is quantize{budget=0}'s model, up to the rounding of 2^log2(scale)), and a graph that already
holds dequantize nodes keeps its precision choices (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from graphopt.passes.distill import TrainingOptions

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.types import DType
from graphopt.ir.value import Value
from graphopt.ops.quant import DEQUANTIZE_OPS, quant_range, quantize
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.progress import progress
from graphopt.quant.bit_widths import FLOAT, fixed_bytes, weight_bytes, widen
from graphopt.quant.calibration import Calibration
from graphopt.quant.observers import METHODS, QParams, clipped_scales, symmetric_scales
from graphopt.quant.placement import TARGETS, Plan, Profile, candidate_layers, plan, profile
from graphopt.quant.quantizer import (
    Scheme,
    SchemeOptions,
    WeightCache,
    apply_plan,
    channel_axis,
    channel_view,
    insert_after,
    weight_key,
)
from graphopt.quant.runner import Runner
from graphopt.quant.sensitivity import RANKING_SAMPLES, sqnr_db
from graphopt.report import training_section

BOUNDS = {"binary": 1, "ternary": 1, "4": 7, "8": 0}  # |q| of the weights (0: the target's int8 bound), narrow first
WIDTHS = (*BOUNDS, "float")
STORED_BITS = {"binary": 2, "ternary": 2, "4": 4, "8": 8, "float": FLOAT}  # to_onnx(packed=True): INT2, INT4, int8


@dataclass
class QatSummary:
    spec: str
    target: str
    layers: int = 0
    tensors: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0
    world_size: int = 1
    gradient_bytes: float = 0.0
    validation: list[float] = field(default_factory=list)
    stopped_early: bool = False
    widths: dict[str, str] = field(default_factory=dict)  # layer -> width, where size= chose them
    size_mb: float = 0.0  # the parameters at those widths, packed

    def width_mix(self) -> str:
        """How many layers took each width, e.g. '2 ternary, 1 8-bit, 1 float'."""
        counts = {w: sum(1 for v in self.widths.values() if v == w) for w in WIDTHS}
        return ", ".join(f"{n} {w}{'-bit' if w.isdigit() else ''}" for w, n in counts.items() if n)

    def width_line(self) -> str:
        return f"widths under the size budget: {self.width_mix()}; {self.size_mb:.4f} MB of parameters packed " \
               "(to_onnx(packed=True); int8 storage keeps 8 bits a weight)"

    def section(self, report: Path) -> list[str]:
        return training_section(report, self, "Quantization-aware training", "qat",
                                [f"quantized: {self.layers} layer(s), {self.tensors} activation tensor(s); "
                                 f"target {self.target}", *([self.width_line()] if self.widths else [])])

    def line(self) -> str:
        trained = f"; loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g} in {len(self.losses)} epoch(s) x " \
                  f"{self.world_size} process(es), {self.seconds:.1f} s" if self.losses else "; not trained (epochs=0)"
        widths = f"; {self.width_line()}" if self.widths else ""
        return f"qat: {self.layers} layer(s) and {self.tensors} activation(s) quantized on {self.target}{trained}{widths}"


@register_pass
@dataclass(frozen=True)
class Qat(Pass, TrainingOptions):
    """Quantization-aware training: fake-quantized fine-tuning, exported as quantize exports."""

    name = "qat"
    contract = Contract("trained")
    epochs: int = option(3, low=0)
    weight_bits: str = option("8", choices=tuple(BOUNDS))
    weights: str = option("per-channel", choices=("per-channel", "per-tensor"))
    activations: str = option("uint8", choices=("uint8", "int8", "none"))
    calib: str = option("percentile", choices=METHODS)
    percentile: float = option(99.999, low=50, high=100, low_open=True)
    skip: tuple[str, ...] = ()
    target: str = option("auto", choices=TARGETS)
    size: float = option(0.0, low=0)  # MB, packed; each layer's width, from weight-bits up to float, chosen to fit

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from graphopt.backends.torch_train import record_history, train

        target, why = profile(self.target)
        summary = QatSummary(self.spec(), f"{target.name}: {why}")
        if any(n.op in DEQUANTIZE_OPS for n in graph):  # quantized before: its choices stand
            return PassResult(False, details=summary)
        norms = [n.where for n in graph if n.op == "batch_norm"]
        if norms:
            raise GraphoptError(f"qat: {norms[0]} is a batch norm; fold it first (canonicalize,fold-bn,qat{{...}}): "
                                "the folded weights are what gets quantized")
        data = ctx.labeled("qat")
        calibration = Calibration([inputs for inputs, _ in data])
        calibration.check(graph, "qat data")
        options = SchemeOptions(weights=self.weights, activations=self.activations, calib=self.calib,
                                percentile=self.percentile)
        bound = BOUNDS[self.weight_bits] or target.weight_max
        scheme = Scheme.of(options, bound)  # 8-bit weights with |q| <= bound: int8 storage, the int8 kernels
        layers = [n for n in candidate_layers(graph, target, self.skip) if ctx.allow(n)]
        if not layers:
            return PassResult(False, details=summary)
        stats = None if scheme.weight_only else calibration.statistics(graph)
        widths = {id(n): self.weight_bits for n in layers}
        if self.size:
            widths = self._widths(graph, layers, calibration.samples, target, scheme, summary)
            layers = [n for n in layers if widths[id(n)] != "float"]
        chosen = plan(graph, layers, target)
        teacher = ctx.get("teacher") if ctx.get("teacher") is not None else graph.clone()
        student, mapping = graph.clone_with_mapping()
        weight_scales = _fake_quantize_weights(student, mapping, chosen, scheme, widths, target.weight_max)
        activation_scales = _fake_quantize_activations(student, mapping, chosen, scheme, stats)
        summary.layers, summary.tensors = len(weight_scales), len(activation_scales)
        if self.epochs:
            history = train(student, teacher, data, self.train_config(), label="qat")
            record_history(summary, history)
        for p in graph.parameters:  # the trained weights and biases
            p.data = mapping[id(p)].data
        cache: WeightCache = {}
        for layer, scale in weight_scales.items():  # apply_plan finds each under the scheme's key, at its own width
            cache[weight_key(layer, scheme)] = (layer.operands[1].data,  # type: ignore[assignment]
                                                *_rounded(layer, np.exp2(scale.data), scheme,  # type: ignore[arg-type]
                                                          widths[id(layer)], target.weight_max))
        fixed = {v: QParams(float(np.exp2(s.data)), zp, dtype)  # type: ignore[arg-type]
                 for v, (s, zp, dtype) in activation_scales.items()}
        apply_plan(graph, chosen, scheme, stats, cache=cache, fixed=fixed)
        return PassResult(True, details=summary)

    def _widths(self, graph: Graph, layers: list[Node], samples: list[tuple[np.ndarray, ...]], target: Profile,
                scheme: Scheme, summary: QatSummary) -> dict[int, str]:
        """Each layer's width (by id) under the size budget: every width's output noise measured with
        only that layer's weight rounded there (post-training, weights alone: activations are 8-bit at
        every width), then the greedy walk of bit_widths from the narrowest."""
        nodes = list(graph)
        index = {id(n): i for i, n in enumerate(nodes)}
        tables = [n for n in layers if n.op in target.tables]
        learned = [index[id(n)] for n in layers if n.op not in target.tables]
        options = {i: WIDTHS[WIDTHS.index(self.weight_bits):] for i in learned}
        cost = {(i, w): weight_bytes(nodes[i], STORED_BITS[w], 0) for i in learned for w in options[i]}
        runner = Runner(graph)
        picked = samples[:RANKING_SAMPLES]
        reference = [runner.run(*s)[0] for s in picked]
        noise = {(i, "float"): 0.0 for i in learned}
        trials = [(i, w) for i in learned for w in options[i] if w != "float"]
        per_channel = scheme.weights == "per-channel"
        for i, w in progress(trials, len(trials), "qat width sensitivity"):
            layer = nodes[i]
            data = layer.operands[1].data
            axis = channel_axis(layer) if per_channel else None
            start = _initial_weight_scales(data, axis, _bound(w, target.weight_max), w == "binary")  # type: ignore[arg-type]
            q, view = _rounded(layer, start, scheme, w, target.weight_max)
            rounded = {id(layer.operands[1]): q.astype(np.float32) * view}
            sqnr = min(sqnr_db(r, runner.run(*s, weights=rounded)[0]) for r, s in zip(reference, picked))
            noise[i, w] = 10 ** (-sqnr / 10)
        start = {i: options[i][0] for i in learned}
        used = fixed_bytes(graph, [nodes[i] for i in learned], tables, scheme) + \
            sum(cost[i, w] for i, w in start.items())
        if used > self.size * 1e6:
            raise GraphoptError(f"qat: size={self.size:g} MB is below the {used / 1e6:.4f} MB the model takes with every "
                                f"layer at weight-bits={self.weight_bits} (packed); raise size or narrow weight-bits")
        summary.size_mb, bits = widen(options, cost, noise, start, used, self.size * 1e6)[-1]
        summary.size_mb /= 1e6
        summary.widths = {nodes[i].loc or f"{nodes[i].op}#{i}": w for i, w in bits.items()}
        return {id(nodes[i]): w for i, w in bits.items()} | {id(n): self.weight_bits for n in tables}


def _bound(width: str, weight_max: int) -> int:
    """|q| of the weights at `width`: the target's int8 bound for 8 bits."""
    return BOUNDS[width] or weight_max


def _initial_weight_scales(data: np.ndarray, axis: int | None, bound: int, binary: bool) -> np.ndarray:
    """Post-training ranges: the maximum (8 bits), MSE-clipped (4), 1.4 x mean |w| (ternary: rounding
    then zeroes the weights below 0.7 x mean |w|, the ternary-weight-network threshold), mean |w|
    (binary: the scale XNOR-Net shows closest to the weights)."""
    if bound == 1:
        reduce = None if axis is None else tuple(d for d in range(data.ndim) if d != axis)
        mean = np.abs(data).mean(axis=reduce)
        return np.where(mean > 0, (1.0 if binary else 1.4) * mean, 1.0).astype(np.float32)
    return (clipped_scales if bound <= 7 else symmetric_scales)(data, axis, bound)


def _fake_quantize_weights(student: Graph, mapping: dict[int, Value], chosen: Plan, scheme: Scheme,
                           widths: dict[int, str], weight_max: int) -> dict[Node, Value]:
    """A fake-quantize node on each planned layer's weight in `student`, at the layer's width (by id);
    the layers (of the original graph) and their scale parameters (of `student`)."""
    scales: dict[Node, Value] = {}
    done: dict[int, Value] = {}  # a shared weight fake-quantized once
    per_channel = scheme.weights == "per-channel"
    for layer in chosen.layers:
        weight = layer.operands[1]
        if not weight.is_parameter or weight.data is None or layer.op == "embedding":  # tables: int8 rows
            continue
        axis = channel_axis(layer) if per_channel else None
        node = mapping[id(layer.result)].producer
        assert node is not None
        if id(weight) not in done:
            binary, bound = widths[id(layer)] == "binary", _bound(widths[id(layer)], weight_max)
            start = _initial_weight_scales(weight.data, axis, bound, binary)
            scale = student.add_parameter(np.log2(start), f"{weight.name}_qat_log2_scale")
            op, attrs = ("fake_binarize", {"axis": axis}) if binary else \
                ("fake_quantize", {"quant_min": -bound, "quant_max": bound, "axis": axis})
            done[id(weight)] = student.create(op, [mapping[id(weight)], scale], attrs, loc=layer.loc,
                                              before=node).result
        node.set_operand(1, done[id(weight)])
        scales[layer] = done[id(weight)].producer.operands[1]  # type: ignore[union-attr]
    return scales


def _fake_quantize_activations(student: Graph, mapping: dict[int, Value], chosen: Plan, scheme: Scheme,
                               stats: object) -> dict[int, tuple[Value, int, object]]:
    """A fake-quantize node after each planned activation tensor in `student` (tensors that share a
    scale share its parameter): by id of the original tensor, (scale parameter, zero point, dtype)."""
    if scheme.weight_only:
        return {}
    out: dict[int, tuple[Value, int, object]] = {}

    def scale_of(v: Value) -> tuple[Value, int, object]:
        if id(v) not in out:
            if id(v) in chosen.shares:
                out[id(v)] = scale_of(chosen.shares[id(v)])
            else:
                qp = scheme.activation_qparams(stats, v)  # type: ignore[arg-type]
                param = student.add_parameter(np.log2(np.float32(qp.scale)), f"{v.name}_qat_log2_scale")
                out[id(v)] = (param, qp.zero_point, qp.dtype)
        return out[id(v)]

    for v in chosen.tensors:
        param, zero_point, dtype = scale_of(v)
        lo, hi = quant_range(dtype, None, None)  # type: ignore[arg-type]
        attrs = {"zero_point": zero_point, "quant_min": lo, "quant_max": hi, "axis": None}
        sv = mapping[id(v)]
        insert_after(student, sv, lambda before, sv=sv, param=param, attrs=attrs: student.create(
            "fake_quantize", [sv, param], attrs, before=before).result)
    return out


def _rounded(layer: Node, scales: np.ndarray, options: SchemeOptions, width: str,
             weight_max: int) -> tuple[np.ndarray, np.ndarray]:
    """The layer's weight in int8 at `width` and `scales` (binary: the signs), and the scales shaped
    to broadcast against it."""
    data = layer.operands[1].data
    assert data is not None
    view = channel_view(layer, scales) if options.weights == "per-channel" else scales
    bound = _bound(width, weight_max)
    q = np.where(data >= 0, 1, -1).astype(np.int8) if width == "binary" else \
        quantize(data, view, 0, DType.int8, -bound, bound)
    return q, view
