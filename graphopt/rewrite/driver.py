"""The greedy driver: applies patterns until none fires (a fixpoint), revisiting only the nodes a
rewrite touched, with a cap that turns a non-converging pattern set into a clear error."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from graphopt.errors import PipelineError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.printer import format_node
from graphopt.pipeline.manager import PassContext
from graphopt.rewrite.pattern import Declined, Pattern, Rewriter


@dataclass(frozen=True)
class TraceEvent:
    pattern: str
    node: str
    applied: bool
    reason: str = ""


@dataclass
class Trace:
    """Why each pattern fired or declined, in order: the answer to 'why didn't my rewrite apply?'."""

    events: list[TraceEvent] = field(default_factory=list)

    def declined(self, pattern: str | None = None) -> list[TraceEvent]:
        return [e for e in self.events if not e.applied and pattern in (None, e.pattern)]

    def applied(self, pattern: str | None = None) -> list[TraceEvent]:
        return [e for e in self.events if e.applied and pattern in (None, e.pattern)]

    def __str__(self) -> str:
        return "\n".join(
            f"{e.pattern}: {'applied' if e.applied else 'declined (' + e.reason + ')'} at {e.node}"
            for e in self.events)


def apply_patterns(graph: Graph, patterns: Sequence[Pattern], *, ctx: PassContext | None = None,
                   trace: Trace | None = None, max_rewrites: int | None = None) -> int:
    """Rewrite `graph` in place to a fixpoint of `patterns`; returns the number of rewrites."""
    by_root: dict[str | None, list[Pattern]] = {}
    for p in patterns:
        by_root.setdefault(p.root, []).append(p)
    anywhere = by_root.get(None, [])
    cap = max_rewrites if max_rewrites is not None else 10 * len(graph) + 100
    worklist: deque[Node] = deque(graph)
    queued = {id(n) for n in worklist}
    rewrites = 0
    while worklist:
        node = worklist.popleft()
        queued.discard(id(node))
        if node.graph is not graph:
            continue
        for pattern in by_root.get(node.op, []) + anywhere:
            match = pattern.check(node)
            if isinstance(match, Declined):
                if trace is not None:
                    trace.events.append(TraceEvent(pattern.name, format_node(node), False, match.reason))
                continue
            if rewrites >= cap:
                raise PipelineError(f"patterns did not converge after {cap} rewrites "
                                    f"(last: {pattern.name} at {node.where})")
            if ctx is not None and not ctx.allow(f"{pattern.name} at {node.where}"):
                return rewrites
            if trace is not None:
                trace.events.append(TraceEvent(pattern.name, format_node(node), True))
            rw = Rewriter(graph, node)
            pattern.rewrite(rw, node, match)
            rewrites += 1
            for n in [*rw.created, *rw.touched, node]:
                if n.graph is graph and id(n) not in queued:
                    worklist.append(n)
                    queued.add(id(n))
            break
    return rewrites
