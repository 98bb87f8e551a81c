"""remove-identity: drop nodes that return their operand unchanged: identity, clone, contiguous,
inference dropout, a reshape/expand/permute/slice/squeeze that changes nothing, a `to` of the same
dtype, a single-operand cat, and x*1, 1*x, x+0, 0+x, x-0, x/1 with constant 1 or 0.

Contract: exact (the replaced node computes its operand bit for bit) and idempotent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, register_pass
from graphopt.rewrite import Declined, Pattern, Rewriter, apply_patterns

ALWAYS = {"identity", "clone", "contiguous", "dropout"}
SAME_TYPE = {"reshape", "expand", "to", "squeeze", "flatten", "repeat"}
NEUTRAL = {"mul": (1.0, (0, 1)), "add": (0.0, (0, 1)), "sub": (0.0, (0,)), "div": (1.0, (0,))}


def is_constant(value: Value, number: float) -> bool:
    return value.data is not None and bool(np.all(value.data == number))


def kept_operand(node: Node) -> Value | None:
    """The operand `node` returns unchanged, if any."""
    x = node.operands[0] if node.operands else None
    if x is None:
        return None
    if node.op in ALWAYS or (node.op in SAME_TYPE and x.type == node.result.type):
        return x
    if node.op == "permute" and list(node.attrs["dims"]) == sorted(d % x.type.rank for d in node.attrs["dims"]):
        return x
    if node.op == "slice" and x.type == node.result.type and node.attrs["step"] == 1:
        return x
    if node.op == "cat" and len(node.operands) == 1:
        return x
    if node.op in NEUTRAL and not (node.op == "div" and node.attrs["rounding_mode"] != "none"):
        number, positions = NEUTRAL[node.op]
        for keep in positions:
            other = node.operands[1 - keep]
            if node.operands[keep].type == node.result.type and is_constant(other, number):
                return node.operands[keep]
    return None


class RemoveIdentity(Pattern[Value]):
    def check(self, node: Node) -> Value | Declined:
        kept = kept_operand(node)
        return Declined("not an identity") if kept is None else kept

    def rewrite(self, rw: Rewriter, node: Node, kept: Value) -> None:
        rw.replace(node, kept)


@register_pass
@dataclass(frozen=True)
class RemoveIdentities(Pass):
    """Remove nodes that return their operand unchanged (dropout, clone, no-op reshape, x*1, ...)."""

    name = "remove-identity"
    contract = Contract("exact")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(apply_patterns(graph, [RemoveIdentity()], ctx=ctx) > 0)
