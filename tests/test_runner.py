"""The fast runner behind calibration and the sensitivity search: ONNX Runtime with its
optimizations off agrees with the numpy interpreter (the oracle) on every tensor, float and
fake-quantized, and calibration statistics taken through it match the interpreter's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings

import graphopt as go
from graphopt.quant import sqnr_db
from graphopt.quant.calibration import Calibration, tracked_values
from graphopt.quant.runner import Runner
from graphopt.testing.strategies import graphs_with_inputs


def interpreter_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Runner) -> None:
        raise go.GraphoptError("interpreter requested")

    monkeypatch.setattr(Runner, "_start_session", refuse)


def node_results(graph: go.Graph) -> list[go.Value]:
    inputs = {id(v) for v in graph.inputs}
    return [v for v in tracked_values(graph) if id(v) not in inputs]


@settings(max_examples=40, deadline=None)
@given(graphs_with_inputs(max_nodes=10))
def test_every_tensor_agrees_with_the_interpreter_on_generated_graphs(case: tuple) -> None:
    graph, inputs = case
    observed = node_results(graph)
    runner = Runner(graph, observed)
    assert runner.backend == "onnxruntime" or "cannot lower" in runner.backend
    outputs, arrays = runner.run(*inputs)
    want_outputs, want_arrays = Runner(graph, observed, oracle=True).run(*inputs)
    for got, want in zip([*outputs, *arrays], [*want_outputs, *want_arrays]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def resnet() -> tuple[go.Graph, list[tuple[np.ndarray]]]:
    torch.manual_seed(0)
    graph = go.from_torch(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 64, 64),))
    rng = np.random.default_rng(0)
    return graph, [(rng.standard_normal((1, 3, 64, 64)).astype(np.float32),) for _ in range(3)]


def test_calibration_statistics_match_the_interpreters(resnet: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    graph, samples = resnet
    fast = Calibration(samples).statistics(graph)
    interpreter_only(monkeypatch)
    slow = Calibration(samples).statistics(graph)
    for value in tracked_values(graph):
        a, b = fast.of(value), slow.of(value)
        assert a.min == pytest.approx(b.min, rel=1e-4, abs=1e-5) and a.max == pytest.approx(b.max, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(a.counts, b.counts, atol=0.002 * a.counts.sum())  # a value on a bin edge moves
        np.testing.assert_allclose(fast.channel_absmax(value), slow.channel_absmax(value), rtol=1e-4, atol=1e-5)
    for a, b in zip(fast.outputs, slow.outputs):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-4)


def test_a_fake_quantized_model_agrees_with_the_interpreter(resnet: tuple) -> None:
    graph, samples = resnet
    int8 = go.run_pipeline(graph, "canonicalize,fold-bn,fuse-activation,quantize{budget=0}", calibration=samples).graph
    for sample in samples:
        got = Runner(int8).run(*sample)[0]
        want = go.interpret(int8, *sample)
        reference = go.interpret(graph, *sample)
        # The same float ops, summed in another order: a value that lands on the other side of a
        # rounding step moves one step, and later layers carry that on. It stays far below the
        # quantization error itself, which is what the sensitivity search measures.
        assert sqnr_db(want, got) > 25  # 36-38 dB on this model, against 30-34 dB of quantization error
        assert sqnr_db(reference, got) == pytest.approx(sqnr_db(reference, want), abs=1.0)


def test_a_graph_onnx_cannot_take_runs_on_the_interpreter_and_says_why(resnet: tuple,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    graph, samples = resnet
    interpreter_only(monkeypatch)
    runner = Runner(graph)
    assert runner.backend == "interpreter (GraphoptError: interpreter requested)"
    np.testing.assert_allclose(runner.run(*samples[0])[0][0], go.interpret(graph, *samples[0])[0])
