"""fold-constants: evaluate nodes whose operands are all constants (parameters with data), and the
zero-operand creation ops (full, arange), replacing them by parameters. This removes the shape
arithmetic, masks and position tables torch.export leaves behind in transformers.

Dequantize ops stay (they are the QDQ structure int8 backends fuse), and so does any result larger
than `max-elements`, or larger than what the node reads (an expand of a position table to the batch):
folding those would grow the model file and, measured on MiniLM, slow ONNX Runtime down.

Contract: exact (the interpreter's own reference computes the folded value) and idempotent."""

from __future__ import annotations

from dataclasses import dataclass

from graphopt.interp import Interpreter
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ops.quant import DEQUANTIZE_OPS
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.rewrite import Rewriter

GROWTH_FLOOR = 4096  # elements a fold may produce from fewer (small masks and shape tables still fold)


@register_pass
@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluate all-constant subgraphs into parameters."""

    name = "fold-constants"
    contract = Contract("exact")
    max_elements: int = option(1 << 22, low=0)

    def foldable(self, node: Node) -> bool:
        if node.op in DEQUANTIZE_OPS or not all(v.data is not None for v in node.operands):
            return False
        if not all(r.type.is_static and (r.type.numel or 0) <= self.max_elements for r in node.results):
            return False
        grown = sum(r.type.numel or 0 for r in node.results)
        read = sum(v.data.size for v in node.operands)  # type: ignore[union-attr]
        return not node.operands or grown <= max(read, GROWTH_FLOOR)  # a broadcast stays an op, not a bigger file

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
