"""Bisection over rewrites: find the first change a pipeline makes that breaks a model.

Every pass asks `ctx.allow(...)` before each change, so a run can be cut off after exactly N
changes; a binary search over N finds the first change after which `is_good` fails (a verifier
failure counts as not good)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from graphopt.errors import InternalError, PipelineError
from graphopt.ir.graph import Graph
from graphopt.pipeline.manager import PassContext, PassManager
from graphopt.pipeline.passes import Pass


@dataclass
class BisectResult:
    good_changes: int  # the most changes after which the graph is still good
    total_changes: int
    culprit: str | None  # the change that broke it ("pass: node"), None when nothing broke

    def __str__(self) -> str:
        if self.culprit is None:
            return f"all {self.total_changes} changes keep the graph good"
        return f"change #{self.good_changes + 1} of {self.total_changes} breaks the graph: {self.culprit}"


def bisect(graph: Graph, pipeline: str | Sequence[Pass], is_good: Callable[[Graph], bool],
           **options: Any) -> BisectResult:
    manager = PassManager(pipeline)
    unlimited = 1 << 62

    def attempt(limit: int) -> tuple[bool, PassContext]:
        target, ctx = graph.clone(), PassContext(options, limit)
        try:
            manager.run(target, ctx=ctx)
        except (PipelineError, InternalError):  # a failing or crashing pass: not good
            return False, ctx
        return is_good(target), ctx

    ok, ctx = attempt(unlimited)
    total = ctx.change_count
    if ok:
        return BisectResult(total, total, None)
    if not attempt(0)[0]:
        raise PipelineError("the graph is not good even before the pipeline changes anything")
    lo, hi = 0, total  # good after lo changes, bad after hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid)[0]:
            lo = mid
        else:
            hi = mid
    return BisectResult(lo, total, ctx.change_log[hi - 1])
