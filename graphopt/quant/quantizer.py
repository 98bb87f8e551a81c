"""Apply a Plan: Q/DQ pairs on the planned activation tensors (parameters from calibration), int8
weights behind a DequantizeLinear-style node (per channel or per tensor; int4 per group for
weight-only), and int32 biases on the input-times-weight scale, the layout int8 runtimes fuse."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from graphopt.errors import GraphoptError, OptionError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.types import DType
from graphopt.ir.value import Value
from graphopt.ops.quant import quantize
from graphopt.pipeline.passes import option
from graphopt.quant.calibration import Statistics
from graphopt.quant.gptq import gptq_round
from graphopt.quant.observers import METHODS, QParams, affine_qparams, clipped_scales, observe_range, symmetric_scales
from graphopt.quant.placement import Plan, Profile, plan

ACTIVATION_DTYPES = {"uint8": DType.uint8, "int8": DType.int8}


@dataclass(frozen=True)
class SchemeOptions:
    """How to quantize, as the user says it (the quantize pass takes these as its options):
    `weights` per-channel or per-tensor; `activations` uint8 (asymmetric), int8 (symmetric) or none
    (weight-only); `calib` the range observer; `weight_bits` 8 or 4 (weight-only: one scale per
    `group_size` inputs; with activations: per channel, stored in int8); `rounding` to nearest, by
    AdaRound (learned per layer) or by GPTQ (weight-only int4)."""

    weights: str = option("per-channel", choices=("per-channel", "per-tensor"))
    activations: str = option("uint8", choices=(*ACTIVATION_DTYPES, "none"))
    calib: str = option("percentile", choices=METHODS)
    percentile: float = option(99.999, low=50, high=100, low_open=True)
    weight_bits: int = option(8, choices=(4, 8))
    group_size: int = option(64, low=1)
    rounding: str = option("nearest", choices=("nearest", "adaround", "gptq"))


@dataclass(frozen=True)
class Scheme(SchemeOptions):
    """The options, checked, with the target profile's weight bound."""

    weight_max: int = 127  # |int8 weight| bound (the target profile's; 64 keeps x86 int16 pairs exact)
    # Weight-only weights in groups of `group_size` inputs, what MatMulNBits runs: int4, and the 8-bit
    # layers a size budget widens from it (kept grouped, so they run as 8-bit MatMulNBits).
    grouped: bool = False

    @classmethod
    def of(cls, options: SchemeOptions, weight_max: int) -> Scheme:
        return cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(SchemeOptions)},
                   weight_max=weight_max, grouped=options.activations == "none" and options.weight_bits == 4)

    def __post_init__(self) -> None:
        if self.rounding == "gptq" and not self.grouped:
            raise OptionError("quantize: rounding=gptq is for weight-only int4 (activations=none,weight-bits=4); "
                              "use rounding=adaround for per-channel weights")
        if self.rounding == "adaround" and self.grouped:
            raise OptionError("quantize: rounding=adaround learns per-channel roundings; weight-only int4 is "
                              "grouped: use rounding=gptq there")

    def at(self, bits: int) -> Scheme:
        """The scheme with `bits`-bit weights (grouped, and GPTQ's rounding, stay as they are)."""
        return dataclasses.replace(self, weight_bits=bits)

    @property
    def weight_only(self) -> bool:
        return self.activations == "none"

    @property
    def weight_bound(self) -> int:
        """|q| bound of per-channel and per-tensor weights: the target's for 8 bits, 7 for 4."""
        return 7 if self.weight_bits == 4 else self.weight_max

    def activation_qparams(self, stats: Statistics, value: Value) -> QParams:
        dtype = ACTIVATION_DTYPES[self.activations]
        levels = 255 if dtype is DType.uint8 else 254
        lo, hi = observe_range(stats.of(value), self.calib, levels, self.percentile)
        return affine_qparams(lo, hi, dtype, symmetric=dtype is DType.int8)


# Quantized weights by their float array, (id(data), per-channel, bound) -> (data, q, scales): rounded to
# nearest on first use, or beforehand (AdaRound) so every copy a search quantizes uses those roundings.
WeightCache = dict[tuple[int, bool, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def weight_key(layer: Node, scheme: Scheme) -> tuple[int, bool, int]:
    data = layer.operands[1].data
    return id(data), scheme.weights == "per-channel", scheme.weight_bound


def apply_plan(graph: Graph, plan: Plan, scheme: Scheme, stats: Statistics | None,
               hessians: dict[int, np.ndarray] | None = None, cache: WeightCache | None = None,
               fixed: Mapping[int, QParams] | None = None) -> None:
    """Quantize `graph` in place as `plan` says (`hessians`, by id(layer): GPTQ's, for int4). `cache`
    keeps int8 weights by their float array, for searches that quantize copies of one graph;
    `fixed` holds activation parameters (by id(value)) chosen elsewhere (learned by qat)."""
    params: dict[int, QParams] = dict(fixed or {})
    cache = {} if cache is None else cache
    if not scheme.weight_only:
        if stats is None:
            raise GraphoptError("quantizing activations needs calibration statistics")

        def resolve(v: Value) -> QParams:
            if id(v) not in params:
                params[id(v)] = resolve(plan.shares[id(v)]) if id(v) in plan.shares else \
                    scheme.activation_qparams(stats, v)
            return params[id(v)]

        for v in plan.tensors:
            resolve(v)
    quantized: dict[int, tuple[Value, np.ndarray]] = {}
    for layer in plan.layers:
        weight = layer.operands[1]
        if not weight.is_parameter:
            continue
        input_scale = params[id(layer.operands[0])].scale if id(layer.operands[0]) in params else None
        if scheme.grouped:
            _quantize_weight_grouped(graph, layer, scheme, (hessians or {}).get(id(layer)))
            continue
        scales = _quantize_weight(graph, layer, scheme, quantized, cache)
        if len(layer.operands) == 3 and input_scale is not None and layer.operands[2].is_parameter:
            _quantize_bias(graph, layer, input_scale * scales)
    for table in plan.tables:
        if table_grouped(table, scheme):
            _quantize_weight_grouped(graph, table, scheme, None)
        else:
            _quantize_table(graph, table, cache)
    for v in plan.tensors:
        if id(v) in params:
            _insert_qdq(graph, v, params[id(v)])


def table_grouped(table: Node, scheme: Scheme) -> bool:
    """Whether a lookup table is stored per group, as weight-only int4 layers are: where its rows split
    into groups of a power of two >= 16, the layout ONNX Runtime's GatherBlockQuantized gathers
    packed (elsewhere the whole table would be dequantized each run: int8 rows instead)."""
    group = scheme.group_size
    return scheme.grouped and group >= 16 and not group & (group - 1) and \
        int(table.operands[1].shape[-1]) % group == 0  # type: ignore[arg-type]


def apply_widths(graph: Graph, layers: Sequence[Node], bits: Mapping[int, int], scheme: Scheme, target: Profile,
                 stats: Statistics | None, hessians: dict[int, np.ndarray] | None = None,
                 cache: WeightCache | None = None) -> None:
    """Quantize `layers` in place, each at `bits[id(layer)]` weight bits (the scheme's where absent):
    one plan a width, since a size budget mixes weight-only widths."""
    groups: dict[int, list[Node]] = {}
    for layer in layers:
        groups.setdefault(bits.get(id(layer), scheme.weight_bits), []).append(layer)
    for width, group in groups.items():
        apply_plan(graph, plan(graph, group, target), scheme.at(width), stats, hessians, cache)


def insert_after(graph: Graph, v: Value, build: Callable[[Node | None], Value]) -> None:
    """Put what `build(before)` makes from `v` (its nodes created before `before`, right after v's
    producer) in v's place: every reader of v, and the graph outputs, read the result instead."""
    readers = list(v.uses)
    result = build(v.producer.next if v.producer is not None else next(iter(graph), None))
    for node, index in readers:
        node.set_operand(index, result)
    if v.is_graph_output:
        graph.outputs = [result if o is v else o for o in graph.outputs]


def _insert_qdq(graph: Graph, v: Value, qp: QParams) -> None:
    loc = v.producer.loc if v.producer is not None else v.name

    def qdq(before: Node | None) -> Value:
        q = graph.create("quantize_per_tensor", [v], {"scale": qp.scale, "zero_point": qp.zero_point,
                                                       "dtype": qp.dtype}, loc=loc, before=before)
        return graph.create("dequantize_per_tensor", [q.result], {"scale": qp.scale, "zero_point": qp.zero_point},
                            loc=loc, before=before).result

    insert_after(graph, v, qdq)


def channel_axis(layer: Node) -> int:
    """The output-channel axis of the layer's weight: dim 0 for conv and linear, last for matmul."""
    return layer.operands[1].type.rank - 1 if layer.op == "matmul" else 0


def channel_view(layer: Node, scales: np.ndarray) -> np.ndarray:
    """Per-output-channel `scales` shaped to broadcast against the layer's weight."""
    axis = channel_axis(layer)
    return scales.reshape([-1 if d == axis else 1 for d in range(layer.operands[1].type.rank)])


def int8_weight(layer: Node, per_channel: bool, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """The layer's weight in symmetric int8 (|q| <= bound; 4-bit ranges clipped where that rounds
    better) and its scales, shaped to broadcast against it (per output channel, or one); the weight
    must hold data."""
    data = layer.operands[1].data
    assert data is not None
    pick = clipped_scales if bound <= 7 else symmetric_scales
    scales = pick(data, channel_axis(layer) if per_channel else None, bound)
    view = channel_view(layer, scales) if per_channel else scales
    return quantize(data, view, 0, DType.int8, -bound, bound), view


def _cached_int8(cache: WeightCache, layer: Node, per_channel: bool, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """int8_weight, once per float array (the entry holds the array, so its id is not reused)."""
    data = layer.operands[1].data
    key = (id(data), per_channel, bound)
    if key not in cache or cache[key][0] is not data:
        cache[key] = (data, *int8_weight(layer, per_channel, bound))  # type: ignore[arg-type]
    return cache[key][1], cache[key][2]


def _quantize_weight(graph: Graph, layer: Node, scheme: Scheme, done: dict[int, tuple[Value, np.ndarray]],
                     cache: WeightCache) -> np.ndarray:
    """Replace the weight operand with DQ(int8 weight); a weight shared by layers is quantized once.
    Returns the per-output-channel scales (the per-tensor scale repeated)."""
    weight = layer.operands[1]
    axis = channel_axis(layer)
    channels = int(weight.shape[axis])  # type: ignore[arg-type]
    per_channel = scheme.weights == "per-channel"
    if id(weight) not in done:
        data = weight.data
        if data is None:
            raise GraphoptError(f"{layer.where}: weight %{weight.name} has no data to quantize")
        q, view = _cached_int8(cache, layer, per_channel, scheme.weight_bound)
        done[id(weight)] = (graph.add_parameter(q, f"{weight.name}.int8"), view.reshape(-1) if per_channel else view)
    q_param, scales = done[id(weight)]
    if per_channel:
        s = graph.add_parameter(scales, f"{weight.name}.scale")
        z = graph.add_parameter(np.zeros(channels, np.int8), f"{weight.name}.zero_point")
        dq = graph.create("dequantize_per_channel", [q_param, s, z], {"axis": axis}, loc=layer.loc, before=layer)
    else:
        dq = graph.create("dequantize_per_tensor", [q_param], {"scale": float(scales), "zero_point": 0},
                          loc=layer.loc, before=layer)
    replace_operand(graph, layer, 1, dq.result)
    return np.broadcast_to(scales, (channels,)).astype(np.float32)


def _quantize_bias(graph: Graph, layer: Node, scales: np.ndarray) -> None:
    """int32 bias on scale input_scale * weight_scale[c], which int8 kernels add to the accumulator."""
    bias = layer.operands[2]
    assert bias.data is not None
    scales = scales.astype(np.float32)
    q = np.clip(np.rint(bias.data.astype(np.float64) / scales), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    qb = graph.add_parameter(q, f"{bias.name}.int32")
    s = graph.add_parameter(scales, f"{bias.name}.scale")
    z = graph.add_parameter(np.zeros(q.shape, np.int32), f"{bias.name}.zero_point")
    dq = graph.create("dequantize_per_channel", [qb, s, z], {"axis": 0}, loc=layer.loc, before=layer)
    replace_operand(graph, layer, 2, dq.result)


def _quantize_table(graph: Graph, lookup: Node, cache: WeightCache) -> None:
    """A lookup table in int8 with one scale per row: the lookup gathers int8 rows and their scales,
    and only the gathered rows are scaled back to float (the table is never dequantized whole)."""
    indices, table = lookup.operands
    q, scales = _cached_int8(cache, lookup, True, 127)
    loc, dtype = lookup.loc, lookup.result.dtype
    rows = graph.create(lookup.op, [indices, graph.add_parameter(q, f"{table.name}.int8")], loc=loc, before=lookup)
    row_scales = graph.create(lookup.op, [indices, graph.add_parameter(scales, f"{table.name}.scale")], loc=loc,
                              before=lookup)
    as_float = graph.create("to", [rows.result], {"dtype": dtype}, loc=loc, before=lookup)
    scaled = graph.create("mul", [as_float.result, row_scales.result], loc=loc, before=lookup)
    lookup.result.replace_all_uses_with(scaled.result)
    graph.erase(lookup)
    if not table.is_used and not table.is_graph_output:
        graph.remove_parameters(table)


def _quantize_weight_grouped(graph: Graph, layer: Node, scheme: Scheme, hessian: np.ndarray | None) -> None:
    """Weight-only per group: one scale per `group_size` consecutive input features of an output
    channel (or of a lookup table's row), stored as int8 (|q| <= 7 for 4 bits) and viewed as
    [channels * groups, group] for a per-row dequantize; rounded to nearest, or by GPTQ given the
    layer's input Hessian."""
    weight, group, bound = layer.operands[1], scheme.group_size, scheme.weight_bound
    data = weight.data
    if data is None or data.ndim != 2:
        raise GraphoptError(f"{layer.where}: per-group weights need a 2-d weight (linear, matmul or a lookup table)")
    rows = data if layer.op != "matmul" else data.T  # [out, in]
    if rows.shape[1] % group:
        raise GraphoptError(f"{layer.where}: {rows.shape[1]} input features are not a multiple of "
                            f"group-size={group}; pick a group size that divides it")
    grouped = rows.reshape(-1, group)
    if hessian is None:
        scales = symmetric_scales(grouped, 0, bound)
        values = quantize(grouped, scales[:, None], 0, DType.int8, -bound, bound)
    else:
        values, scales = gptq_round(rows, hessian, group, bound)
        values, scales = values.reshape(grouped.shape), scales.reshape(-1)
    q = graph.add_parameter(values, f"{weight.name}.int{scheme.weight_bits}")
    s = graph.add_parameter(scales, f"{weight.name}.scale")
    z = graph.add_parameter(np.zeros(scales.shape, np.int8), f"{weight.name}.zero_point")
    dq = graph.create("dequantize_per_channel", [q, s, z], {"axis": 0}, loc=layer.loc, before=layer)
    w = graph.create("reshape", [dq.result], {"shape": rows.shape}, loc=layer.loc, before=layer)
    if layer.op == "matmul":
        w = graph.create("permute", [w.result], {"dims": (1, 0)}, loc=layer.loc, before=layer)
    replace_operand(graph, layer, 1, w.result)


def replace_operand(graph: Graph, layer: Node, index: int, value: Value) -> None:
    """Point the layer's operand at `value`, dropping the old parameter when nothing else reads it."""
    old = layer.operands[index]
    layer.set_operand(index, value)
    if not old.is_used and not old.is_graph_output:
        graph.remove_parameters(old)
