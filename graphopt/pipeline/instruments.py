"""Instruments observe a pipeline run: progress and timing, printing or dumping the IR after passes.
Subclass Instrument and override the hooks you need."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from graphopt.ir.graph import Graph

if TYPE_CHECKING:
    from graphopt.pipeline.manager import PassContext, PassRecord
    from graphopt.pipeline.passes import Pass


class Instrument:
    def before_pipeline(self, graph: Graph, ctx: PassContext) -> None:
        """Called once before the first pass."""

    def before_pass(self, p: Pass, graph: Graph, index: int) -> None:
        """Called before each pass."""

    def after_pass(self, p: Pass, graph: Graph, record: PassRecord, index: int) -> None:
        """Called after each pass has run and been verified."""

    def after_pipeline(self, graph: Graph, ctx: PassContext) -> None:
        """Called once after the last pass."""


class Timing(Instrument):
    """Progress: one line a pass with its time and node counts, as the pipeline runs."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr

    def after_pass(self, p: Pass, graph: Graph, record: PassRecord, index: int) -> None:
        flag = f"{record.changes} change(s)" if record.changed else "unchanged"
        print(f"[{index + 1}] {record.spec}: {record.seconds * 1e3:.1f} ms, "
              f"{record.nodes_before} -> {record.nodes_after} nodes, {flag}", file=self.stream)


class PrintAfter(Instrument):
    """Print the IR after the named passes (every pass when `passes` is empty)."""

    def __init__(self, *passes: str, stream: IO[str] | None = None) -> None:
        self.passes = set(passes)
        self.stream = stream or sys.stderr

    def after_pass(self, p: Pass, graph: Graph, record: PassRecord, index: int) -> None:
        if not self.passes or p.name in self.passes:
            print(f"// IR after {record.spec} (#{index + 1})\n{graph}", file=self.stream)


class DumpToFolder(Instrument):
    """Save the IR before the pipeline and after every pass: 00-input.gir, 01-dce.gir, ..."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _save(self, graph: Graph, stem: str) -> None:
        from graphopt.ir.serialize import save

        save(graph, self.folder / f"{stem}.gir")

    def before_pipeline(self, graph: Graph, ctx: Any) -> None:
        self._save(graph, "00-input")

    def after_pass(self, p: Pass, graph: Graph, record: PassRecord, index: int) -> None:
        self._save(graph, f"{index + 1:02d}-{p.name}")
