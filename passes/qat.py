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
report and the integer interpreter apply unchanged. Ternary and binary weights are stored int8
(|q| <= 1), with the size of int8: ONNX has no packed 2-bit or 1-bit type ONNX Runtime's int8
kernels read. `epochs=0` exports the starting point: post-training rounding at those bits.

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
from graphopt.quant.calibration import Calibration
from graphopt.quant.observers import METHODS, QParams, clipped_scales, symmetric_scales
from graphopt.quant.placement import TARGETS, Plan, candidate_layers, plan, profile
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
from graphopt.report import training_section

BOUNDS = {"8": 0, "4": 7, "ternary": 1, "binary": 1}  # |q| of the weights (0: the target's int8 bound)


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

    def section(self, report: Path) -> list[str]:
        return training_section(report, self, "Quantization-aware training", "qat",
                                [f"quantized: {self.layers} layer(s), {self.tensors} activation tensor(s); "
                                 f"target {self.target}"])

    def line(self) -> str:
        trained = f"; loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g} in {len(self.losses)} epoch(s) x " \
                  f"{self.world_size} process(es), {self.seconds:.1f} s" if self.losses else "; not trained (epochs=0)"
        return f"qat: {self.layers} layer(s) and {self.tensors} activation(s) quantized on {self.target}{trained}"


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
        chosen = plan(graph, layers, target)
        teacher = ctx.get("teacher") if ctx.get("teacher") is not None else graph.clone()
        student, mapping = graph.clone_with_mapping()
        weight_scales = _fake_quantize_weights(student, mapping, chosen, scheme, self.weight_bits == "binary")
        activation_scales = _fake_quantize_activations(student, mapping, chosen, scheme, stats)
        summary.layers, summary.tensors = len(weight_scales), len(activation_scales)
        if self.epochs:
            history = train(student, teacher, data, self.train_config(), label="qat")
            record_history(summary, history)
        for p in graph.parameters:  # the trained weights and biases
            p.data = mapping[id(p)].data
        cache: WeightCache = {}
        for layer, scale in weight_scales.items():
            cache_learned_weight(cache, layer, np.exp2(scale.data), scheme,  # type: ignore[arg-type]
                                 self.weight_bits == "binary")
        fixed = {v: QParams(float(np.exp2(s.data)), zp, dtype)  # type: ignore[arg-type]
                 for v, (s, zp, dtype) in activation_scales.items()}
        apply_plan(graph, chosen, scheme, stats, cache=cache, fixed=fixed)
        return PassResult(True, details=summary)


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
                           binary: bool) -> dict[Node, Value]:
    """A fake-quantize node on each planned layer's weight in `student`; the layers (of the original
    graph) and their scale parameters (of `student`)."""
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
            start = _initial_weight_scales(weight.data, axis, scheme.weight_bound, binary)
            scale = student.add_parameter(np.log2(start), f"{weight.name}_qat_log2_scale")
            op, attrs = ("fake_binarize", {"axis": axis}) if binary else \
                ("fake_quantize", {"quant_min": -scheme.weight_bound, "quant_max": scheme.weight_bound, "axis": axis})
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


def cache_learned_weight(cache: WeightCache, layer: Node, scales: np.ndarray, scheme: Scheme, binary: bool) -> None:
    """The layer's int8 weight at its learned scales (binary: the signs), where apply_plan looks
    weights up."""
    data = layer.operands[1].data
    assert data is not None
    view = channel_view(layer, scales) if scheme.weights == "per-channel" else scales
    q = np.where(data >= 0, 1, -1).astype(np.int8) if binary else \
        quantize(data, view, 0, DType.int8, -scheme.weight_bound, scheme.weight_bound)
    cache[weight_key(layer, scheme)] = (data, q, view)
