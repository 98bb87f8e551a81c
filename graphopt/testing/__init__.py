"""Property-based verification of passes: `check_pass` asserts a pass's stated contract over
hypothesis-generated graphs, using the reference interpreter as the oracle.

Profiles: `graphopt-quick` (CI) and `graphopt-long` (on demand, e.g.
`pytest --hypothesis-profile=graphopt-long`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings

from graphopt.interp import interpret
from graphopt.ir.graph import Graph
from graphopt.ir.printer import print_graph
from graphopt.pipeline import Pass, run_pipeline
from graphopt.pipeline.spec import parse_pipeline
from graphopt.testing.strategies import graphs, graphs_with_inputs, inputs_for

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("graphopt-quick", max_examples=40, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("graphopt-long", max_examples=2000, deadline=None, suppress_health_check=_SLOW_OK)


def assert_outputs_close(before: list[np.ndarray], after: list[np.ndarray], *, rtol: float,
                         atol: float, what: str = "") -> None:
    assert len(before) == len(after), f"{what}: {len(before)} outputs before, {len(after)} after"
    for i, (a, b) in enumerate(zip(before, after)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: output {i} changed type"
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=f"{what}: output {i}")


def check_pass(pipeline: str | Pass, *, max_nodes: int = 12, **settings_overrides: Any) -> None:
    """Assert the contract of `pipeline` (a pass name with options, or a Pass) on generated graphs:
    the result verifies (the pass manager checks), outputs agree with the interpreter's before the
    pass within the contract's tolerance, and a second run changes nothing (idempotence)."""
    passes = [pipeline] if isinstance(pipeline, Pass) else parse_pipeline(pipeline)
    for p in passes:
        if p.contract.semantics in ("masked", "trained"):
            raise ValueError(f"{p.name}: {p.contract.semantics} contracts are checked by their own test helpers "
                             "(graphopt.testing.pruning, graphopt.testing.blocks, the distill tests), not check_pass")
    bounded = [p for p in passes if p.contract.semantics == "bounded"]
    budget = min((getattr(p, "budget", 0.0) for p in bounded), default=None)
    rtol = max(p.contract.rtol for p in passes)
    atol = max(p.contract.atol for p in passes)
    idempotent = all(p.contract.idempotent for p in passes)
    label = ",".join(p.spec() for p in passes)

    @settings(**settings_overrides)
    @given(graphs_with_inputs(max_nodes=max_nodes))
    def holds(case: tuple[Any, list[np.ndarray]]) -> None:
        graph, inputs = case
        before = interpret(graph, *inputs)
        assume(all(np.isfinite(o).all() for o in before if o.dtype.kind == "f"))
        # Bounded passes (quantization) calibrate on the inputs and promise an output SQNR there.
        options = {"calibration": [tuple(inputs)]} if bounded else {}
        result = run_pipeline(graph, passes, **options)
        after = interpret(result.graph, *inputs)
        if budget is None:
            assert_outputs_close(before, after, rtol=rtol, atol=atol, what=label)
        else:
            from graphopt.quant.sensitivity import sqnr_db

            assert sqnr_db(before, after) >= budget, f"{label}: output SQNR {sqnr_db(before, after):.1f} dB " \
                f"is below the budget {budget} dB"
        if idempotent:
            again = run_pipeline(result.graph, passes, **options)
            assert not any(r.changed for r in again.records), f"{label} is not idempotent"
            assert print_graph(again.graph) == print_graph(result.graph), f"{label} is not idempotent"

    holds()


@dataclass
class GoldenCase:
    """A golden test case: `# pipeline: P`, optionally `# calibration: inputs` (the pipeline gets the
    case's own inputs as its one calibration and training sample, for passes that score or train on
    data), the input graph, a `# expected` line, the expected graph."""

    pipeline: str
    source: str
    expected: str
    calibrated: bool

    def inputs(self, graph: Graph) -> list[np.ndarray]:
        """The case's inputs: seeded normal values, symbolic dims at 2."""
        rng = np.random.default_rng(0)
        return [rng.standard_normal([d if isinstance(d, int) else 2 for d in v.shape]).astype(np.float32)
                for v in graph.inputs]

    def options(self, graph: Graph) -> dict[str, Any]:
        sample = [tuple(self.inputs(graph))]
        return {"calibration": sample, "data": sample} if self.calibrated else {}


def parse_golden(text: str) -> GoldenCase:
    head, sep, expected = text.partition("\n# expected\n")
    if not sep or not head.startswith("# pipeline:"):
        raise ValueError("a golden case starts with '# pipeline: ...' and has an '# expected' line")
    pipeline, _, source = head.partition("\n")
    calibrated = source.startswith("# calibration: inputs\n")
    return GoldenCase(pipeline.removeprefix("# pipeline:").strip(), source, expected, calibrated)


def run_golden(text: str) -> tuple[str, str]:
    """Run a golden case (see GoldenCase). Returns (actual, expected) texts, both normalized
    through parse and print."""
    from graphopt.ir.parser import parse

    case = parse_golden(text)
    graph = parse(case.source)
    result = run_pipeline(graph, case.pipeline, **case.options(graph))
    return print_graph(result.graph), print_graph(parse(case.expected))


__all__ = ["GoldenCase", "assert_outputs_close", "check_pass", "graphs", "graphs_with_inputs", "inputs_for",
           "parse_golden", "run_golden"]
