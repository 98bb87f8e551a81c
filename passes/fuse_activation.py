"""fuse-activation: record a conv/linear followed by relu, relu6, hardswish, silu, gelu or a clamp as
one node (`activation=` on the layer), the pair int8 backends run as a single kernel.

Declined with a reason when the layer output has another reader (the pre-activation value is still
needed) or the clamp is one-sided. The lowering emits the activation right after the layer, where
ONNX Runtime and TensorRT fuse it.

Contract: exact (the fused node applies the same activation) and idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, register_pass
from graphopt.rewrite import Declined, Pattern, Rewriter, apply_patterns

LAYERS = {"conv1d", "conv2d", "conv3d", "conv_transpose2d", "linear"}


def activation_attrs(node: Node) -> dict[str, Any] | Declined:
    """The layer attributes that reproduce activation `node`."""
    if node.op in ("relu", "relu6", "hardswish", "silu"):
        return {"activation": node.op, "activation_bounds": None}
    if node.op == "gelu":
        if node.attrs["approximate"] != "none":
            return Declined("tanh-approximated gelu has no fused form")
        return {"activation": "gelu", "activation_bounds": None}
    lo, hi = (node.attrs["min_val"], node.attrs["max_val"]) if node.op == "hardtanh" else (
        node.attrs["min"], node.attrs["max"])
    if lo is None or hi is None:
        return Declined("a one-sided clamp has no fused form")
    return {"activation": "clamp", "activation_bounds": (lo, hi)}


class FuseActivation(Pattern[tuple[Node, dict[str, Any]]]):
    def check(self, act: Node) -> tuple[Node, dict[str, Any]] | Declined:
        if act.op not in ("relu", "relu6", "hardswish", "silu", "gelu", "hardtanh", "clamp"):
            return Declined("not a fusable activation")
        layer = act.operands[0].producer
        if layer is None or layer.op not in LAYERS:
            return Declined("input is not produced by a conv or linear")
        if layer.attrs["activation"] != "none":
            return Declined(f"the {layer.op} already carries a {layer.attrs['activation']}")
        if layer.result.is_graph_output or len(layer.result.uses) > 1:
            return Declined(f"the {layer.op} output has another user")
        attrs = activation_attrs(act)
        return attrs if isinstance(attrs, Declined) else (layer, attrs)

    def rewrite(self, rw: Rewriter, act: Node, match: tuple[Node, dict[str, Any]]) -> None:
        layer, attrs = match
        fused = rw.create(layer.op, layer.operands, {**layer.attrs, **attrs}, loc=layer.loc,
                          names=[act.result.name or layer.result.name])
        rw.replace(act, fused.result)


@register_pass
@dataclass(frozen=True)
class FuseActivations(Pass):
    """Fuse relu/relu6/hardswish/silu/gelu/clamp into the conv or linear before it."""

    name = "fuse-activation"
    contract = Contract("exact")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(apply_patterns(graph, [FuseActivation()], ctx=ctx, trace=ctx.get("trace")) > 0)
