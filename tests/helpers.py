"""Small graph builders shared by the tests."""

from __future__ import annotations

import numpy as np

import graphopt as go


def conv_relu_graph(batch: int | str = "N") -> go.Graph:
    """x -> conv(w, b) -> relu -> add(., conv) -> out, with a dead sigmoid branch."""
    rng = np.random.default_rng(0)
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", [batch, 3, 8, 8]), "x")
    w = g.add_parameter(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.weight")
    b = g.add_parameter(rng.standard_normal(4).astype(np.float32), "conv.bias")
    conv = g.create("conv2d", [x, w, b], {"padding": [1, 1]}, loc="conv", names=["conv"]).result
    act = g.create("relu", [conv], loc="act", names=["act"]).result
    g.create("sigmoid", [conv], loc="gate", names=["gate"])
    out = g.create("add", [act, conv], loc="residual", names=["out"]).result
    g.outputs = [out]
    return g


def sample_input(graph: go.Graph, batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal([batch if isinstance(d, str) else d for d in v.shape]).astype(np.float32)
            for v in graph.inputs]


def failing_factory() -> None:
    """A model factory that raises, as a user's factory with a bug does."""
    raise RuntimeError("checkpoint not found")
