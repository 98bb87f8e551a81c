"""Instruments observe a pipeline run: progress and timing, printing or dumping the IR after passes.
Subclass Instrument and override the hooks you need."""

from __future__ import annotations

import sys
from dataclasses import dataclass
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


@dataclass
class StepCost:
    """The model after one step: cost, ONNX size, measured latency and output cosine to the input."""

    step: str
    macs: int
    params: int
    onnx_bytes: int | None
    latency_ms: float | None
    cosine_mean: float | None
    cosine_min: float | None
    note: str = ""


class StepCosts(Instrument):
    """Measure the model before the pipeline and after each pass (or only after the last): MACs,
    parameters, ONNX size, ONNX Runtime latency on the first sample (batch as given, `threads`),
    and the cosine of its outputs to the input model's on every item of every sample (each text or
    image of a batch): an accuracy proxy that needs no labels. The samples should be held out from
    calibration and training."""

    def __init__(self, samples: list[tuple[Any, ...]], every_step: bool = True, threads: int = 1) -> None:
        self.samples, self.every_step, self.threads = samples, every_step, threads
        self.rows: list[StepCost] = []
        self._reference: list[list[Any]] = []

    def before_pipeline(self, graph: Graph, ctx: PassContext) -> None:
        self.rows.append(self._measure("input", graph, reference=True))

    def after_pass(self, p: Pass, graph: Graph, record: PassRecord, index: int) -> None:
        if self.every_step:
            self.rows.append(self._measure(record.spec, graph))

    def after_pipeline(self, graph: Graph, ctx: PassContext) -> None:
        if not self.every_step:
            self.rows.append(self._measure("output", graph))

    def _measure(self, step: str, graph: Graph, reference: bool = False) -> StepCost:
        import numpy as np

        from graphopt.analysis.cost import graph_cost
        from graphopt.analysis.latency import ort_session, session_ms

        cost = graph_cost(graph)
        try:
            session, size = ort_session(graph, self.threads)
        except Exception as e:  # a graph the ONNX backend or ONNX Runtime cannot take: say so in the row
            return StepCost(step, cost.macs, cost.params, None, None, None, None, f"not measured: {e}"[:160])
        names = [i.name for i in session.get_inputs()]
        outputs = [session.run(None, dict(zip(names, s))) for s in self.samples]
        if reference:
            self._reference = outputs
        cosines: list[float] = []
        for want, got in zip(self._reference, outputs):
            a, b = _rows(want), _rows(got)
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            cosines += np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1), 1.0).tolist()
        ms = session_ms(session, list(self.samples[0])) if self.samples else None
        return StepCost(step, cost.macs, cost.params, size, ms, float(np.mean(cosines)) if cosines else None,
                        min(cosines) if cosines else None)


def _rows(outputs: list[Any]) -> Any:
    """The outputs of one sample as rows to compare: one per item of the batch when every output
    leads with the same batch size (one text, one image), else the whole sample as one row."""
    import numpy as np

    arrays = [np.asarray(o, np.float64) for o in outputs]
    heads = {a.shape[0] if a.ndim >= 2 else None for a in arrays}
    if len(heads) == 1 and None not in heads:
        return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)
    return np.concatenate([a.ravel() for a in arrays])[None, :]
