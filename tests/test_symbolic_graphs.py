"""Generated graphs with symbolic H, W and L: every op's type inference on symbols agrees with its
static inference at the sizes the symbols stood for, and the graph runs at other sizes in the
interpreter, ONNX Runtime and torch alike."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from graphopt.backends.onnx import unsupported
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import graphopt as go
from graphopt.errors import GraphoptError
from graphopt.ir.types import bind_dims
from graphopt.testing.strategies import graphs, with_symbolic_sizes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(graphs(max_nodes=8), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_symbolic_inference_matches_static_inference_and_runs_at_other_sizes(graph: go.Graph, grow: int,
                                                                             seed: int) -> None:
    found = with_symbolic_sizes(graph)
    assume(found is not None)
    symbolic, sizes = found  # type: ignore[misc]
    binding = {**sizes, **{s: 2 for s in graph.symbols()}}  # the generated graph's own batch symbol too
    for static_node, node in zip(graph, symbolic):
        for static_value, value in zip(static_node.results, node.results):
            assert bind_dims(value.shape, binding) == bind_dims(static_value.shape, binding), \
                f"{node.op}: {value.type} at {binding} is not {static_value.type}"
    go.verify(symbolic)
    rng = np.random.default_rng(seed)
    bigger = {s: v + grow for s, v in binding.items()}
    arrays = [rng.standard_normal(bind_dims(v.shape, bigger)).astype(np.float32) for v in symbolic.inputs]
    try:
        want = go.interpret(symbolic, *arrays)
    except GraphoptError:
        assume(False)  # at the new size a window no longer fits, or a pinned size disagrees
        return
    if not unsupported(symbolic):
        session = ort.InferenceSession(go.to_onnx(symbolic).SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {v.name: a for v, a in zip(symbolic.inputs, arrays)})
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        outs = go.to_torch(symbolic)(*map(torch.from_numpy, arrays))
    for w, g in zip(want, outs if isinstance(outs, tuple | list) else [outs]):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4)
