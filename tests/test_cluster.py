"""cluster: k-means weight sharing. 1-D k-means finds the centres; a clustered MLP trained on
scikit-learn's digits holds at most `clusters` values a layer, fine-tunes back towards fp32, keeps
the zeros sparsify made, and writes an ONNX file about 4x smaller that ONNX Runtime runs as the
interpreter does."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphopt.passes.cluster import kmeans_1d

import graphopt
from graphopt.interp import interpret
from tests.helpers import trained_on_digits


def test_kmeans_finds_the_centres_and_assigns_each_value_its_nearest() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([-1.0, -0.2, 0.3, 2.0])
    values = np.concatenate([c + 0.01 * rng.standard_normal(500) for c in centres])
    found, index = kmeans_1d(values, 4)
    np.testing.assert_allclose(found, centres, atol=0.005)
    assert np.array_equal(index, np.abs(values[:, None] - found[None, :]).argmin(axis=1))


@pytest.fixture(scope="module")
def mlp() -> tuple[graphopt.Graph, list, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return trained_on_digits(net, images=False, epochs=30)


def accuracy(graph: graphopt.Graph, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(interpret(graph, x)[0].argmax(1) == y))


def shared_weights(graph: graphopt.Graph) -> dict[str, np.ndarray]:
    """Each clustered layer's weight as its lookup makes it: codebook (plus the zero entry)[indices]."""
    params = {p.name: p.data for p in graph.parameters}
    return {name[:-len(".codebook")]: np.append(params[name].ravel(), 0)[params[name[:-len("codebook")] +
                                                                               "cluster_index"]]
            for name in params if name.endswith(".codebook")}


TUNE = "cluster{clusters=8,epochs=%d,lr=0.002,batch-size=32,loss=kl}"


def test_clustered_layers_share_their_values_and_fine_tuning_recovers(mlp, tmp_path) -> None:
    graph, data, x, y = mlp
    fp32 = accuracy(graph, x, y)
    shared = graphopt.run_pipeline(graph, TUNE % 0, data=data)
    tuned = graphopt.run_pipeline(graph, TUNE % 4, data=data)
    weights = shared_weights(tuned.graph)
    assert len(weights) == 2 and all(len(np.unique(w)) <= 8 for w in weights.values())
    assert tuned.records[-1].details.losses[-1] < tuned.records[-1].details.losses[0]
    assert accuracy(tuned.graph, x, y) >= max(accuracy(shared.graph, x, y), fp32 - 0.02)
    fp32_file, clustered_file = tmp_path / "fp32.onnx", tmp_path / "clustered.onnx"
    graphopt.to_onnx(graph, fp32_file)
    graphopt.to_onnx(tuned.graph, clustered_file)
    assert clustered_file.stat().st_size < fp32_file.stat().st_size / 3
    session = ort.InferenceSession(str(clustered_file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x[:32]})[0],
                               interpret(tuned.graph, x[:32])[0], rtol=1e-5, atol=1e-5)
    again = graphopt.run_pipeline(tuned.graph, TUNE % 0, data=data)
    assert not again.records[-1].changed  # clustered weights are lookups now: left as they are


def test_clustering_keeps_the_zeros_of_a_sparsified_model(mlp) -> None:
    graph, data, _, _ = mlp
    sparse = graphopt.run_pipeline(graph, "sparsify{ratio=0.5}").graph
    zeros = {p.name: p.data == 0 for p in sparse.parameters if p.name.endswith("weight")}
    tuned = graphopt.run_pipeline(sparse, TUNE % 2, data=data).graph
    for name, weight in shared_weights(tuned).items():
        assert np.array_equal(weight == 0, zeros[name]), name


def test_cluster_fine_tuning_needs_data(mlp) -> None:
    with pytest.raises(graphopt.GraphoptError, match="cluster needs training data"):
        graphopt.run_pipeline(mlp[0], TUNE % 1)
