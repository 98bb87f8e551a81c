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
from hypothesis import given, settings

import graphopt
from graphopt.interp import interpret
from graphopt.testing import graphs_with_inputs
from tests.helpers import LAYER_OPS, trained_on_digits


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


@settings(max_examples=40, deadline=None)
@given(graphs_with_inputs(max_nodes=10, ops=LAYER_OPS))
def test_clustering_maps_each_weight_to_its_nearest_centroid_on_generated_graphs(
        case: tuple[graphopt.Graph, list[np.ndarray]]) -> None:
    """On any graph: every clustered weight becomes its nearest of at most `clusters` centroids,
    zeros stay zero, the outputs stay finite, and a second run changes nothing."""
    graph, inputs = case
    before = {p.name: p.data for p in graph.parameters}
    result = graphopt.run_pipeline(graph, "cluster{clusters=2}")  # 2: layers of 8 weights and up take part
    params = {p.name: p.data for p in result.graph.parameters}
    for name, weight in shared_weights(result.graph).items():
        original, codebook = before[name], params[f"{name}.codebook"].ravel()
        assert len(codebook) == 2 and np.array_equal(weight == 0, original == 0)
        live = original != 0
        nearest = np.abs(original[live][:, None] - codebook[None, :]).min(axis=1)
        np.testing.assert_allclose(np.abs(original[live] - weight[live]), nearest, atol=1e-6)
    assert all(np.isfinite(o).all() for o in interpret(result.graph, *inputs) if o.dtype.kind == "f")
    assert not graphopt.run_pipeline(result.graph, "cluster{clusters=2}").records[0].changed
