"""equalize: cross-layer equalization (Nagel et al., "Data-Free Quantization", section 4.1).

Per-tensor int8 weights give every output channel of a layer the same step, so a channel whose
weights are small next to its neighbours' is rounded to a few levels (depthwise convs suffer most).
For two layers in a row, A then B, with only a relu (or nothing) between them, scaling A's output
channel c by 1/s_c and B's input channel c by s_c leaves the model unchanged, since
relu(x / s) = relu(x) / s for s > 0. Choosing s_c = sqrt(r_A(c) / r_B(c)), where r is the largest
|weight| of the channel, gives both layers the same range on every channel. Chains (A, B, C) are
equalized pair by pair until the scales settle.

relu6 is not scale-invariant (relu6(x / s) != relu6(x) / s once x passes 6), so pairs through it
are left alone and listed: exactness is the contract. Run it after fold-bn (batch norms folded into
the convs) and before fuse-activation and quantize.

Contract: exact (up to float rounding). Idempotent: on an equalized graph every scale is 1."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass

LAYERS = ("conv1d", "conv2d", "linear")
# f(x / s) = f(x) / s for every per-channel s > 0: relu, and the poolings (a max or a mean per channel)
SCALE_FREE = ("relu", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
TOLERANCE = 1e-3  # |log s| below which a pair counts as equalized


@dataclass
class EqualizeSummary:
    spec: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    left_alone: dict[str, str] = field(default_factory=dict)  # "A -> B": why
    rounds: int = 0
    range_ratio_before: float = 1.0  # worst (largest / smallest) channel range of A's weights
    range_ratio_after: float = 1.0

    def line(self) -> str:
        return (f"equalize: {len(self.pairs)} pair(s) in {self.rounds} round(s), worst channel range ratio "
                f"{self.range_ratio_before:.1f} -> {self.range_ratio_after:.1f}; {len(self.left_alone)} left alone")


@dataclass(frozen=True)
class Pair:
    first: Node
    second: Node

    @property
    def name(self) -> str:
        return f"{self.first.loc or self.first.op} -> {self.second.loc or self.second.op}"


def _sole_reader(value: Value) -> Node | None:
    users = value.users
    return users[0] if len(users) == 1 and not value.is_graph_output else None


def _own_float_weight(layer: Node) -> bool:
    w = layer.operands[1]
    return w.is_parameter and w.data is not None and w.dtype.numpy.kind == "f" and len(w.users) == 1 and (
        len(layer.operands) < 3 or (layer.operands[2].data is not None and len(layer.operands[2].users) == 1))


def find_pairs(graph: Graph) -> tuple[list[Pair], dict[str, str]]:
    """Layers A -> [relu, pooling] -> B where A's output reaches only B and both own their float
    weights; a pair with anything else between them is listed with the reason."""
    pairs, left_alone = [], {}
    for a in graph:
        if a.op not in LAYERS or len(a.operands) < 2:
            continue
        value, reader, between = a.result, _sole_reader(a.result), []
        while reader is not None and reader.op not in LAYERS and len(reader.results) == 1:
            between.append(reader)
            value, reader = reader.result, _sole_reader(reader.result)
        if reader is None or reader.op not in LAYERS or reader.operands[0] is not value:
            continue
        pair = Pair(a, reader)
        blocking = [n.op for n in between if n.op not in SCALE_FREE]
        activation = a.attrs.get("activation", "none")
        if blocking or activation not in ("none", *SCALE_FREE):
            left_alone[pair.name] = f"{(blocking or [activation])[0]} between them is not scale-invariant"
        elif reader.op != a.op and "linear" in (a.op, reader.op):
            left_alone[pair.name] = "a conv and a linear: their channels do not line up one to one"
        elif not (_own_float_weight(a) and _own_float_weight(reader)):
            left_alone[pair.name] = "a weight or bias is shared, not a parameter, or not float"
        else:
            pairs.append(pair)
    return pairs, left_alone


def _groups(layer: Node) -> int:
    return int(layer.attrs.get("groups", 1))


def _input_ranges(layer: Node) -> np.ndarray:
    """max |w| over the weights reading each input channel (grouped convs: only their group's rows)."""
    w = np.abs(layer.operands[1].data)  # type: ignore[arg-type]
    g = _groups(layer)
    grouped = w.reshape(g, w.shape[0] // g, w.shape[1], -1)
    return grouped.max(axis=(1, 3)).reshape(-1)


def _scale_inputs(layer: Node, s: np.ndarray) -> None:
    w = layer.operands[1]
    g, data = _groups(layer), w.data
    grouped = data.reshape(g, data.shape[0] // g, data.shape[1], -1)  # type: ignore[union-attr]
    w.data = (grouped * s.reshape(g, 1, -1, 1)).reshape(data.shape).astype(data.dtype)  # type: ignore[union-attr]


def _output_ranges(layer: Node) -> np.ndarray:
    w = layer.operands[1].data
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1)  # type: ignore[union-attr]


def _scale_outputs(layer: Node, s: np.ndarray) -> None:
    for v in layer.operands[1:3]:
        v.data = (v.data / s.reshape(-1, *[1] * (v.data.ndim - 1))).astype(v.data.dtype)  # type: ignore[union-attr]


def channel_ranges(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Per channel between the two layers: the first's output range, the second's input range."""
    return _output_ranges(pair.first), _input_ranges(pair.second)


def _scales(pair: Pair) -> np.ndarray:
    r1, r2 = channel_ranges(pair)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(r1 / r2)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0)


def _worst_ratio(pairs: list[Pair]) -> float:
    ratios = [r.max() / max(r.min(), 1e-12) for r in (_output_ranges(p.first) for p in pairs)]
    return float(max(ratios, default=1.0))


@register_pass
@dataclass(frozen=True)
class Equalize(Pass):
    """Cross-layer equalization: rescale channels between consecutive layers so per-tensor int8 fits."""

    name = "equalize"
    contract = Contract("exact", idempotent=True, rtol=1e-4, atol=1e-5)
    rounds: int = option(100, low=1)  # chains settle geometrically; most take under 20

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        pairs, left_alone = find_pairs(graph)
        pairs = [p for p in pairs if ctx.allow(p.first) and ctx.allow(p.second)]
        summary = EqualizeSummary(self.spec(), [(p.first.loc or p.first.op, p.second.loc or p.second.op)
                                                for p in pairs], left_alone)
        summary.range_ratio_before = _worst_ratio(pairs)
        while summary.rounds < self.rounds:
            scales = [_scales(p) for p in pairs]
            if all(np.abs(np.log(s)).max(initial=0.0) < TOLERANCE for s in scales):
                break
            for pair, s in zip(pairs, scales):
                _scale_outputs(pair.first, s)
                _scale_inputs(pair.second, s)
            summary.rounds += 1
        summary.range_ratio_after = _worst_ratio(pairs)
        return PassResult(summary.rounds > 0, details=summary)
