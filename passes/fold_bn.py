"""fold-bn: fold inference batch norm into the layer next to it.

After a layer (conv1d/conv2d, conv_transpose2d, linear): W' = W * s per output channel and
b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps). Before a conv without padding:
W'[o, c] = W[o, c] * s[c] and b' = b + sum over (c, k) of W[o, c, k] * (beta - mean * s)[c]. A conv
that pads is declined there: its zero border would no longer be batch-normalized.

Folded weights are new parameters, so a weight shared with another layer is never changed under
it. Declined with a reason: a layer output read by anything besides the batch norm, a fused
activation between them, non-constant weights or statistics, a batch norm whose channel axis is not
the linear's feature axis.

Contract: exact up to float rounding (rtol and atol 1e-4) and idempotent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, register_pass
from graphopt.rewrite import Declined, Pattern, Rewriter, apply_patterns

LAYERS = {"conv1d", "conv2d", "conv3d", "conv_transpose2d", "linear"}


def bn_scale_shift(bn: Node) -> tuple[np.ndarray, np.ndarray] | Declined:
    """Per-channel (scale, shift) with bn(x) = x * scale + shift, in float64."""
    params = bn.operands[1:]
    if any(p.data is None for p in params):
        return Declined("batch norm statistics or affine parameters are not constants")
    mean, var, gamma, beta = (p.data.astype(np.float64) for p in params)  # type: ignore[union-attr]
    scale = gamma / np.sqrt(var + bn.attrs["eps"])
    return scale, beta - mean * scale


@dataclass(frozen=True)
class Folding:
    """What a fold needs: the other node of the pair, the batch norm as x * scale + shift, and the
    layer's weight and bias (float64)."""

    partner: Node
    scale: np.ndarray
    shift: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None


def folding(partner: Node, bn: Node, layer: Node) -> Folding | Declined:
    """The Folding of `bn` with `layer`, or why their parameters cannot be folded."""
    folded = bn_scale_shift(bn)
    if isinstance(folded, Declined):
        return folded
    weight = layer.operands[1]
    bias = layer.operands[2] if len(layer.operands) == 3 else None
    if weight.data is None or (bias is not None and bias.data is None):
        return Declined(f"{layer.op} weight or bias is not a constant")
    return Folding(partner, *folded, weight.data.astype(np.float64),
                   None if bias is None else bias.data.astype(np.float64))  # type: ignore[union-attr]


def only_reader(value: Value, reader: Node) -> bool:
    return not value.is_graph_output and all(u.node is reader for u in value.uses) and len(value.uses) == 1


class FoldAfterLayer(Pattern[Folding]):
    """layer -> batch_norm  ==>  layer with scaled weights and shifted bias."""

    root = "batch_norm"

    def check(self, bn: Node) -> Folding | Declined:
        layer = bn.operands[0].producer
        if layer is None or layer.op not in LAYERS:
            return Declined("input is not produced by a conv or linear")
        if not only_reader(layer.result, bn):
            return Declined(f"the {layer.op} output has another user")
        if layer.attrs["activation"] != "none":
            return Declined(f"a fused {layer.attrs['activation']} sits between the {layer.op} and the batch norm")
        if layer.op == "linear" and layer.result.type.rank != 2:
            return Declined("batch norm normalizes axis 1, not the linear's feature axis")
        return folding(layer, bn, layer)

    def rewrite(self, rw: Rewriter, bn: Node, match: Folding) -> None:
        layer, scale, weight = match.partner, match.scale, match.weight
        if layer.op == "conv_transpose2d":  # weight [Cin, Cout/g, k, k]: output channels on dim 1, per group
            g = layer.attrs["groups"]
            cin_g, cout_g = weight.shape[0] // g, weight.shape[1]
            grouped = weight.reshape(g, cin_g, cout_g, *weight.shape[2:])
            weight = (grouped * scale.reshape(g, 1, cout_g, *([1] * (weight.ndim - 2)))).reshape(weight.shape)
        else:
            weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        bias = (match.bias if match.bias is not None else 0.0) * scale + match.shift
        replace_layer(rw, layer, weight, bias, bn)


class FoldBeforeConv(Pattern[Folding]):
    """batch_norm -> conv (no padding)  ==>  conv with weights scaled per input channel."""

    root = "conv2d"

    def check(self, conv: Node) -> Folding | Declined:
        bn = conv.operands[0].producer
        if bn is None or bn.op != "batch_norm":
            return Declined("input is not a batch norm")
        if not only_reader(bn.result, conv):
            return Declined("the batch norm output has another user")
        if any(conv.attrs["padding"]):
            return Declined("the conv pads with zeros: folding the batch norm before it would change the border")
        return folding(bn, bn, conv)

    def rewrite(self, rw: Rewriter, conv: Node, match: Folding) -> None:
        weight = match.weight
        out_channels, in_per_group = weight.shape[:2]
        groups = conv.attrs["groups"]
        # input channel read by weight[o, j]: the group of o, offset j
        channel = (np.arange(out_channels)[:, None] // (out_channels // groups)) * in_per_group + np.arange(in_per_group)
        spatial = (1,) * (weight.ndim - 2)
        new_weight = weight * match.scale[channel].reshape(*channel.shape, *spatial)
        shifted = weight * match.shift[channel].reshape(*channel.shape, *spatial)
        new_bias = (match.bias if match.bias is not None else 0.0) + shifted.sum(axis=tuple(range(1, weight.ndim)))
        replace_layer(rw, conv, new_weight, new_bias, conv, source=match.partner.operands[0])


def replace_layer(rw: Rewriter, layer: Node, weight: np.ndarray, bias: np.ndarray, replaced: Node,
                  source: Value | None = None) -> None:
    """A copy of `layer` with new weight and bias parameters (named after the old weight), standing in
    for `replaced`."""
    dtype = layer.operands[1].dtype.numpy
    name = layer.operands[1].name or "weight"
    if len(layer.operands) == 3 and layer.operands[2].name:
        bias_name = layer.operands[2].name
    else:
        bias_name = name.removesuffix(".weight") + ".bias" if name.endswith(".weight") else name + "_bias"
    w = rw.parameter(weight.astype(dtype), name)
    b = rw.parameter(np.asarray(bias, dtype=np.float64).astype(dtype), bias_name)
    x = source if source is not None else layer.operands[0]
    fused = rw.create(layer.op, [x, w, b], layer.attrs, loc=layer.loc, names=[layer.result.name])
    rw.replace(replaced, fused.result)


@register_pass
@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Fold inference batch norm into the conv or linear before it (or a padding-free conv after it)."""

    name = "fold-bn"
    contract = Contract("exact", rtol=1e-4, atol=1e-4)
    before_conv: bool = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        patterns: list[Pattern] = [FoldAfterLayer()] + ([FoldBeforeConv()] if self.before_conv else [])
        return PassResult(apply_patterns(graph, patterns, ctx=ctx, trace=ctx.get("trace")) > 0)
