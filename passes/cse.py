"""cse: common-subexpression elimination. Two nodes with the same op, the same operands and equal
attributes compute the same value (every op is pure); the later one is replaced by the earlier.
Scalar constants with equal values are merged first, so `x * 0.5` twice becomes one node (larger
parameters are weights: merging two equal biases would tie layers that pruning must keep apart).

Contract: exact and idempotent; one walk in order (a node's operands are numbered before it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphopt.ir.graph import Graph
from graphopt.ir.value import Value
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, register_pass
from graphopt.rewrite import Rewriter


def attr_key(value: Any) -> Any:
    return tuple(attr_key(v) for v in value) if isinstance(value, list | tuple) else (type(value).__name__, value)


@register_pass
@dataclass(frozen=True)
class CommonSubexpressionElimination(Pass):
    """Merge nodes (and scalar constants) that compute the same value."""

    name = "cse"
    contract = Contract("exact")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changed = self.merge_constants(graph, ctx)
        seen: dict[Any, list[Value]] = {}
        for node in graph.nodes:
            key = (node.op, tuple(id(v) for v in node.operands),
                   tuple(sorted((k, attr_key(v)) for k, v in node.attrs.items())))
            earlier = seen.get(key)
            if earlier is None:
                seen[key] = node.results
            elif ctx.allow(node):
                Rewriter(graph, node).replace(node, earlier)
                changed = True
        return PassResult(changed)

    def merge_constants(self, graph: Graph, ctx: PassContext) -> bool:
        first: dict[Any, Value] = {}
        duplicates = []
        for p in graph.parameters:
            if p.data is None or p.type.rank != 0:
                continue
            key = (p.type, p.data.tobytes())
            if key in first:
                duplicates.append((p, first[key]))
            else:
                first[key] = p
        merged = []
        for p, keep in duplicates:
            if ctx.allow(f"constant %{p.name}"):
                p.replace_all_uses_with(keep)
                merged.append(p)
        graph.remove_parameters(*merged)
        return bool(merged)
