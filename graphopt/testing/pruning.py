"""The masked-model contract of structural pruning, checked against the reference interpreter.

A pruned graph must compute exactly what the original computes with the weight columns that read
the removed channels set to zero (PruneSummary.masked names them). `masked_graph` builds that
model; `check_masked` compares the two on given inputs; `check_prune` asserts the contract over
hypothesis-generated graphs and returns how many of them the pass really pruned, so a test can
require that the property was exercised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import assume, given, settings

from graphopt.interp import interpret
from graphopt.ir.graph import Graph
from graphopt.pipeline import run_pipeline
from graphopt.testing.strategies import graphs_with_inputs


def masked_graph(original: Graph, summary: Any) -> Graph:
    """`original` with the weight columns that read removed channels set to zero."""
    masked = original.clone()
    for index, axis, removed in summary.masked:
        p = masked.parameters[index]
        data = np.array(p.data)
        where: list[Any] = [slice(None)] * data.ndim
        where[axis] = removed
        data[tuple(where)] = 0
        p.data = data
    return masked


def prune_summary(result: Any) -> Any:
    return next(r.details for r in result.records if r.spec.startswith("prune"))


def check_masked(original: Graph, pipeline: str, *inputs: np.ndarray, rtol: float = 1e-4,
                 atol: float = 1e-5, **options: Any) -> Any:
    """Run `pipeline` (a prune pass) on `original`; assert the pruned outputs equal the masked model's
    within tolerances relative to each output's scale. Returns the run's PipelineResult."""
    result = run_pipeline(original, pipeline, **options)
    summary = prune_summary(result)
    pruned = interpret(result.graph, *inputs)
    reference = interpret(masked_graph(original, summary), *inputs)
    for i, (a, b) in enumerate(zip(pruned, reference)):
        scale = float(np.abs(b).max()) if b.size else 0.0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(scale, 1e-30),
                                   err_msg=f"{pipeline}: output {i} differs from the masked model")
    return result


def check_prune(pipeline: str, *, max_nodes: int = 12, ops: Sequence[str] | None = None,
                **settings_overrides: Any) -> int:
    """Assert the masked contract of `pipeline` on generated graphs (of `ops` only, when given);
    the number of graphs it pruned."""
    pruned = [0]

    @settings(**settings_overrides)
    @given(graphs_with_inputs(max_nodes=max_nodes, ops=ops))
    def holds(case: tuple[Graph, list[np.ndarray]]) -> None:
        graph, inputs = case
        before = interpret(graph, *inputs)
        assume(all(np.isfinite(o).all() for o in before if o.dtype.kind == "f"))
        result = check_masked(graph, pipeline, *inputs)
        pruned[0] += any(r.changed for r in result.records)

    holds()
    return pruned[0]
