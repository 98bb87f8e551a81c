"""dce: dead-code elimination.

Contract: exact (outputs unchanged: only nodes and parameters that no output depends on go) and
idempotent. One reverse walk, so it is linear in the graph size."""

from __future__ import annotations

from dataclasses import dataclass

from graphopt.ir.graph import Graph
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove nodes whose results nobody reads, then parameters nobody reads."""

    name = "dce"
    contract = Contract("exact")
    keep_parameters: bool = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changed = False
        for node in reversed(graph):  # users come after producers: one walk finds whole dead chains
            if not node.is_used and ctx.allow(node):
                graph.erase(node)
                changed = True
        if not self.keep_parameters:
            dead = [p for p in graph.parameters if not p.is_used and ctx.allow(f"parameter %{p.name}")]
            graph.remove_parameters(*dead)
            changed = changed or bool(dead)
        return PassResult(changed)
