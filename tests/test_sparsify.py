"""sparsify: unstructured and N:M magnitude sparsity; the result is exactly the model with the
counted weights zeroed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings

import graphopt as go
from graphopt.ir.printer import print_graph
from graphopt.testing.strategies import graphs_with_inputs
from tests.helpers import conv_relu_graph


def assert_only_zeroed(before: go.Graph, after: go.Graph) -> int:
    """Every parameter of `after` equals `before`'s or is zero there; the graphs are otherwise equal."""
    assert print_graph(before, inline_limit=0) == print_graph(after, inline_limit=0)
    zeroed = 0
    for p, q in zip(before.parameters, after.parameters):
        same = q.data == p.data
        assert np.all(same | (q.data == 0)), f"%{p.name} changed beyond zeroing"
        zeroed += int((~same).sum())
    return zeroed


def resnet18() -> tuple[go.Graph, np.ndarray]:
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    return go.from_torch(torchvision.models.resnet18().eval(), (torch.from_numpy(x),)), x


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_ratio_zeroes_that_share_of_the_weights(scope: str) -> None:
    graph, x = resnet18()
    result = go.run_pipeline(graph, f"sparsify{{ratio=0.5,scope={scope}}}")
    summary = result.records[0].details
    assert assert_only_zeroed(graph, result.graph) > 0
    assert summary.sparsity == pytest.approx(0.5, abs=0.01)
    if scope == "layer":
        assert all(abs(z / n - 0.5) < 0.01 for n, z in summary.layers.values())
    again = go.run_pipeline(result.graph, f"sparsify{{ratio=0.5,scope={scope}}}")
    assert not again.records[0].changed  # idempotent
    assert np.isfinite(go.interpret(result.graph, x)[0]).all()


def test_two_of_four_along_the_input_axis() -> None:
    graph, _ = resnet18()
    result = go.run_pipeline(graph, "sparsify{pattern=2:4}")
    summary = result.records[0].details
    assert summary.left_alone == {"conv1": "3 inputs are not a multiple of 4"}
    assert_only_zeroed(graph, result.graph)
    w = result.graph.find("layer1.0.conv1")[0].operands[1].data
    groups = np.moveaxis(w, 1, -1).reshape(*w.shape[:1], *w.shape[2:], -1, 4)
    assert ((groups != 0).sum(axis=-1) <= 2).all()
    fc = result.graph.find("fc")[0].operands[1].data
    assert ((fc.reshape(fc.shape[0], -1, 4) != 0).sum(axis=-1) <= 2).all()
    assert summary.sparsity == pytest.approx(0.5, abs=0.01)


@settings(max_examples=40)
@given(graphs_with_inputs(max_nodes=10))
def test_sparsify_only_zeroes_weights_on_generated_graphs(case: tuple[go.Graph, list[np.ndarray]]) -> None:
    graph, _ = case
    for pipeline in ("sparsify{ratio=0.3}", "sparsify{pattern=1:2}"):
        result = go.run_pipeline(graph, pipeline)
        assert_only_zeroed(graph, result.graph)
        assert not go.run_pipeline(result.graph, pipeline).records[0].changed


@pytest.mark.parametrize(("pipeline", "message"), [
    ("sparsify", "give exactly one of ratio="),
    ("sparsify{ratio=1}", "ratio=1.0 is out of range"),
    ("sparsify{pattern=4:2}", "is not N:M"),
    ("sparsify{pattern=2-4}", "is not N:M"),
    ("sparsify{ratio=0.5,scope=row}", "scope=row is not a choice"),
])
def test_bad_sparsify_options(pipeline: str, message: str) -> None:
    with pytest.raises(go.OptionError, match=message):
        go.run_pipeline(conv_relu_graph(), pipeline)


def test_semi_structured_plan_picks_the_2_4_linear_weights() -> None:
    from graphopt.backends.torch_sparse import semi_structured_plan, to_semi_structured

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 10))
    graph = go.from_torch(mlp.eval(), (torch.randn(2, 128),))
    sparse = go.run_pipeline(graph, "sparsify{pattern=2:4}").graph
    plan = semi_structured_plan(go.to_torch(sparse))
    assert list(plan.values()) == [None, None, "shape 10x64: the kernels need multiples of 16x16"]
    dense_plan = semi_structured_plan(go.to_torch(graph))
    assert all(why and "not 2:4" in why for why in list(dense_plan.values())[:2])
    if not torch.cuda.is_available():
        with pytest.raises(go.UnsupportedError, match="no CUDA device"):
            to_semi_structured(go.to_torch(sparse))
