"""The contract of block removal, checked against the reference interpreter.

remove-blocks promises exactly the model with each removed residual branch set to zero (a
projection block keeps its shortcut) and each removed plain layer replaced by the identity.
`branch_zeroed` builds that model from the original graph and BlockSummary.removed alone (it
multiplies the branch by a zero instead of deleting anything, so it shares no code with the pass);
`check_removal` compares the two."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphopt.interp import interpret
from graphopt.ir.graph import Graph
from graphopt.pipeline import run_pipeline


def removal_summary(result: Any) -> Any:
    return next(r.details for r in result.records if r.spec.startswith("remove-blocks"))


def branch_zeroed(original: Graph, summary: Any) -> Graph:
    model = original.clone()
    nodes = list(model)
    for unit in summary.removed:
        merge = nodes[unit.merge]
        if unit.branch is None:
            merge.result.replace_all_uses_with(nodes[unit.first].operands[0])
            continue
        branch = merge.operands[unit.branch]
        zero = model.add_parameter(np.zeros((), dtype=branch.dtype.numpy), f"zero_{unit.merge}")
        merge.set_operand(unit.branch, model.create("mul", [branch, zero], before=merge).result)
    return model


def check_removal(original: Graph, pipeline: str, *inputs: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5,
                  **options: Any) -> Any:
    """Run `pipeline` (with a remove-blocks pass) on `original`; assert its outputs equal the
    branch-zeroed model's, relative to each output's scale. Returns the PipelineResult."""
    result = run_pipeline(original, pipeline, **options)
    got = interpret(result.graph, *inputs)
    want = interpret(branch_zeroed(original, removal_summary(result)), *inputs)
    for i, (a, b) in enumerate(zip(got, want)):
        scale = float(np.abs(b).max()) if b.size else 0.0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(scale, 1e-30),
                                   err_msg=f"{pipeline}: output {i} differs from the branch-zeroed model")
    return result
