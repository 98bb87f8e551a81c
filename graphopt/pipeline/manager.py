"""The pass manager: runs a pipeline, verifies after each pass, caches analyses, drives
instruments, and reports per-pass time, node counts and whether the pass changed anything."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.analysis.cost import graph_cost
from graphopt.errors import GraphoptError, InternalError, PipelineError, VerifyError, expect_type
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.symbolic import cost_sizes
from graphopt.ir.verifier import verify as verify_graph
from graphopt.pipeline.instruments import Instrument
from graphopt.pipeline.passes import ALL, Analysis, Pass
from graphopt.pipeline.spec import parse_pipeline


class PassContext:
    """What a pass sees besides the graph: user options (calibration data, ...), the analysis
    cache, and the change gate that bisection uses to stop after N changes."""

    def __init__(self, options: dict[str, Any], change_limit: int | None = None) -> None:
        self.options = options
        self.change_limit = change_limit
        self.change_count = 0
        self.change_log: list[str] = []
        self.current_pass = ""
        self.graph: Graph | None = None  # the graph the pipeline runs on
        self.received: Graph | None = None  # a copy of it as the pipeline received it (for teachers)
        self.initial_macs = 0  # the MACs of the graph as the pipeline received it
        self.pipeline: list[Pass] = []  # the passes of this run, and the index of the one running
        self.index = 0
        self._analyses: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def samples(self, needed_by: str, limit: int | None = None, required: bool = True) -> list[tuple[Any, ...]]:
        """The input samples the user gave (`calibration=`, else `data=`), as tuples of arrays, at
        most `limit`; a missing set is an error naming the pass that needs it (or [] when not
        `required`). A trailing label in `data=` tuples is for training, not here: see `labeled`."""
        from graphopt.quant.calibration import Calibration

        data = self.options.get("calibration")
        if data is None and self.options.get("data") is not None:
            data = [sample[0] for sample in self.labeled(needed_by)]
        if data is None:
            if not required:
                return []
            raise GraphoptError(f"{needed_by} needs input samples: pass calibration=[input tuples] (or data=) to "
                                "run_pipeline (CLI: --calibration FILE.npz)")
        return (data if isinstance(data, Calibration) else Calibration(data)).samples[:limit]

    def labeled(self, needed_by: str) -> list[tuple[tuple[Any, ...], Any]]:
        """`data=` as (inputs, label or None) pairs: a sample with one array more than the graph
        has inputs carries its label last."""
        data = self.options.get("data")
        if data is None:
            raise GraphoptError(f"{needed_by} needs training data: pass data=[input tuples, optionally with a label "
                                "last] to run_pipeline (CLI: --data FILE.npz)")
        inputs = len(self.graph.inputs) if self.graph is not None else None
        out = []
        for sample in data:
            items = tuple(sample) if isinstance(sample, tuple | list) else (sample,)
            if inputs is not None and len(items) == inputs + 1:
                out.append((items[:-1], items[-1]))
            else:
                out.append((items, None))
        return out

    def analysis(self, kind: type[Analysis], graph: Graph) -> Any:
        """The cached result of `kind` on `graph`, computed on first request."""
        if kind.name not in self._analyses:
            self._analyses[kind.name] = kind.compute(graph, self)
        return self._analyses[kind.name]

    @property
    def cached_analyses(self) -> list[str]:
        return list(self._analyses)

    def invalidate(self, preserved: frozenset[str] | str) -> None:
        if preserved != ALL:
            self._analyses = {k: v for k, v in self._analyses.items() if k in preserved}

    def allow(self, what: str | Node) -> bool:
        """Ask before each change. False once the bisection limit is reached; the pass must then
        leave the graph as it is. `what` describes the change for the bisection report."""
        if self.change_limit is not None:
            if self.change_count >= self.change_limit:
                return False
            label = what.where if isinstance(what, Node) else what
            self.change_log.append(f"{self.current_pass}: {label}" if self.current_pass else label)
        self.change_count += 1
        return True


@dataclass
class PassRecord:
    spec: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    changes: int = 0  # rewrites the pass made (each one it asked ctx.allow for)
    details: Any = None  # what the pass reports beyond the graph (e.g. quantize's QuantizeSummary)


@dataclass
class PipelineResult:
    graph: Graph
    records: list[PassRecord] = field(default_factory=list)
    changes: int = 0

    def report(self) -> str:
        """A table: one row a pass."""
        rows = [("pass", "time ms", "nodes before", "nodes after", "changes")]
        rows += [(r.spec, f"{r.seconds * 1e3:.2f}", str(r.nodes_before), str(r.nodes_after),
                  str(r.changes) if r.changed else "none") for r in self.records]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


class PassManager:
    def __init__(self, passes: Sequence[Pass] | str, *, verify: bool = True,
                 instruments: Sequence[Instrument] = ()) -> None:
        if not isinstance(passes, str):
            expect_type(passes, (list, tuple), "a pipeline (a string, or a list of Pass objects)")
            for p in passes:
                expect_type(p, Pass, "each pipeline step")
        self.passes = parse_pipeline(passes) if isinstance(passes, str) else list(passes)
        self.verify = verify
        self.instruments = list(instruments)

    @property
    def spec(self) -> str:
        return ",".join(p.spec() for p in self.passes)

    def run(self, graph: Graph, *, change_limit: int | None = None, ctx: PassContext | None = None,
            **options: Any) -> PipelineResult:
        """Run the passes on `graph` in place (in `ctx` when given, e.g. to read its change log
        after a failure)."""
        ctx = ctx or PassContext(options, change_limit)
        ctx.graph = graph
        with cost_sizes(_sample_sizes(graph, ctx)):
            return self._run(graph, ctx)

    def _run(self, graph: Graph, ctx: PassContext) -> PipelineResult:
        ctx.initial_macs = graph_cost(graph).macs
        if any(p.needs_received for p in self.passes):
            ctx.received = graph.clone()
        result = PipelineResult(graph)
        for inst in self.instruments:
            inst.before_pipeline(graph, ctx)
        ctx.pipeline = list(self.passes)
        for index, p in enumerate(self.passes):
            ctx.current_pass, ctx.index = p.name, index
            for inst in self.instruments:
                inst.before_pass(p, graph, index)
            before, changes_before = len(graph), ctx.change_count
            start = time.perf_counter()
            try:
                outcome = p.run(graph, ctx)
            except GraphoptError as e:
                if isinstance(e, InternalError):
                    raise InternalError(f"{self._where(index)}: {e}") from e
                raise PipelineError(f"{self._where(index)} failed: {e}", e.exit_code) from e
            except Exception as e:
                raise InternalError(f"{self._where(index)} crashed ({type(e).__name__}: {e}); "
                                    "this is a bug in the pass") from e
            seconds = time.perf_counter() - start
            if self.verify:
                try:
                    verify_graph(graph)
                except VerifyError as e:
                    raise InternalError(f"{self._where(index)} produced an invalid graph (a bug in the pass): "
                                        f"{e}") from e
            if outcome.changed:
                ctx.invalidate(outcome.preserved)
            record = PassRecord(p.spec(), seconds, before, len(graph), outcome.changed,
                                ctx.change_count - changes_before, outcome.details)
            result.records.append(record)
            for inst in self.instruments:
                inst.after_pass(p, graph, record, index)
        result.changes = ctx.change_count
        for inst in self.instruments:
            inst.after_pipeline(graph, ctx)
        return result

    def _where(self, index: int) -> str:
        before = ", ".join(p.spec() for p in self.passes[:index]) or "none"
        return (f"pass {self.passes[index].spec()!r} (#{index + 1} of pipeline {self.spec!r}; "
                f"passes before it: {before})")


def _sample_sizes(graph: Graph, ctx: PassContext) -> dict[str, int]:
    """The sizes the graph inputs' symbols take in the first input sample (none without samples;
    samples that do not fit are the error of the pass that reads them)."""
    if not graph.symbols():
        return {}
    try:
        samples = ctx.samples("costs", 1, required=False)
    except GraphoptError:
        return {}
    sizes: dict[str, int] = {}
    for value, array in zip(graph.inputs, samples[0] if samples else ()):
        for d, size in zip(value.shape, np.shape(array)):
            if isinstance(d, str):
                sizes.setdefault(d, int(size))
    return sizes


def run_pipeline(graph: Graph, pipeline: str | Sequence[Pass], *, verify: bool = True,
                 instruments: Sequence[Instrument] = (), in_place: bool = False,
                 change_limit: int | None = None, **options: Any) -> PipelineResult:
    """Run `pipeline` on a copy of `graph` (or on `graph` itself with in_place=True).
    Keyword options reach the passes through ctx.get (e.g. calibration=...)."""
    expect_type(graph, Graph, "run_pipeline's graph")
    manager = PassManager(pipeline, verify=verify, instruments=instruments)
    target = graph if in_place else graph.clone()
    return manager.run(target, change_limit=change_limit, **options)
