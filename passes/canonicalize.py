"""canonicalize: the clean-up every pipeline starts with. Runs remove-identity, fold-constants, cse
and dce until none changes the graph (each can expose work for another), at most `max-rounds`.

Contract: exact and idempotent (it stops at a fixpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from graphopt.passes.cse import CommonSubexpressionElimination
from graphopt.passes.dce import DeadCodeElimination
from graphopt.passes.fold_constants import FoldConstants
from graphopt.passes.remove_identity import RemoveIdentities

from graphopt.ir.graph import Graph
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Remove identities, fold constants, merge duplicates and drop dead code, to a fixpoint."""

    name = "canonicalize"
    contract = Contract("exact")
    max_rounds: int = option(10, low=1)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        steps: list[Pass] = [RemoveIdentities(), FoldConstants(), CommonSubexpressionElimination(),
                             DeadCodeElimination()]
        changed = False
        for _ in range(self.max_rounds):
            round_changed = False
            for step in steps:
                round_changed |= step.run(graph, ctx).changed
            if not round_changed:
                break
            changed = True
        return PassResult(changed)
