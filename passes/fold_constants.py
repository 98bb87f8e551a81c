"""fold-constants: evaluate nodes whose operands are all constants (parameters with data), and the
zero-operand creation ops (full, arange), replacing them by parameters. This removes the shape
arithmetic, masks and position tables torch.export leaves behind in transformers.

Dequantize ops stay (they are the QDQ structure int8 backends fuse), and so does any result larger
than `max-elements`, which would grow the model file.

Contract: exact (the interpreter's own reference computes the folded value) and idempotent."""

from __future__ import annotations

from dataclasses import dataclass

from graphopt.interp import Interpreter
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ops.quant import DEQUANTIZE_OPS
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.rewrite import Rewriter


@register_pass
@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluate all-constant subgraphs into parameters."""

    name = "fold-constants"
    contract = Contract("exact")
    max_elements: int = option(1 << 22, low=0)

    def foldable(self, node: Node) -> bool:
        return (node.op not in DEQUANTIZE_OPS and all(v.data is not None for v in node.operands)
                and all(r.type.is_static and (r.type.numel or 0) <= self.max_elements for r in node.results))

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        interpreter = Interpreter(graph)
        changed = False
        for node in graph.nodes:
            if node.graph is not graph or not self.foldable(node) or not ctx.allow(node):
                continue
            arrays = interpreter.run_node(node, [v.data for v in node.operands])  # type: ignore[misc]
            rw = Rewriter(graph, node)
            rw.replace(node, [rw.parameter(a, r.name or node.op) for r, a in zip(node.results, arrays)])
            changed = True
        return PassResult(changed)
