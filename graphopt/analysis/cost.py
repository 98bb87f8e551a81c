"""Cost analysis: parameter count, parameter bytes and multiply-accumulates, per op and in total.
MACs are per batch element (symbolic dims count as 1)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from graphopt.ir.graph import Graph
from graphopt.ops import get_op
from graphopt.pipeline.passes import Analysis


@dataclass
class Cost:
    params: int = 0
    param_bytes: int = 0
    macs: int = 0
    macs_by_op: Counter[str] = field(default_factory=Counter)
    nodes_by_op: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        ops = ", ".join(f"{op} x{n}" for op, n in self.nodes_by_op.most_common())
        return (f"{sum(self.nodes_by_op.values())} nodes, {self.params:,} parameters "
                f"({self.param_bytes / 2**20:.2f} MiB), {self.macs:,} MACs\n  ops: {ops}")


def graph_cost(graph: Graph) -> Cost:
    cost = Cost()
    for p in graph.parameters:
        cost.params += p.type.numel or 0
        cost.param_bytes += (p.type.numel or 0) * p.dtype.numpy.itemsize
    for node in graph:
        cost.nodes_by_op[node.op] += 1
        opdef = get_op(node.op, node.loc)
        if opdef.macs is not None:
            macs = opdef.macs([v.type for v in node.operands], [r.type for r in node.results], node.attrs)
            cost.macs += macs
            cost.macs_by_op[node.op] += macs
    return cost


class CostAnalysis(Analysis):
    name = "cost"

    @classmethod
    def compute(cls, graph: Graph, ctx: Any) -> Cost:
        return graph_cost(graph)
