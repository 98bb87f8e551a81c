"""cluster: weight clustering -- k-means weight sharing, the quantization of Deep Compression (Han et
al. 2016) and TensorFlow Model Optimization's cluster_weights.

Each conv / linear / matmul weight's values are replaced by the nearest of `clusters` shared
centroids (1-D k-means, centroids spread linearly over the weights' range to start, as Deep
Compression found best). The weight becomes a lookup: uint8 indices gathering from a float
codebook, reshaped to the weight; weights that are exactly zero (pruned) index a fixed zero entry,
so clustering keeps sparsity. With `epochs`, the model then fine-tunes on `data=` in the
shared training loop against the model the pipeline received (or `teacher=`), as distill does:
the gradients of every weight sharing a centroid add up on it, and only centroids (and biases)
move.

Where it pays: the ONNX model stores one byte a weight plus the codebook (about 4x smaller than
fp32); ONNX Runtime folds the lookup into float weights when it loads the model, so it saves size,
not time. Run it last (fold-constants would fold the lookups back to float weights).

Contract: trained -- each clustered layer holds at most `clusters` distinct non-zero weights, zeros
stay zero, and a clustered graph is left as it is (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from graphopt.passes.distill import TrainingOptions

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.types import DType
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.report import training_section

LAYERS = ("conv1d", "conv2d", "linear", "matmul")
ITERATIONS = 30  # Lloyd steps; 1-D k-means on sorted values settles well within them


@dataclass
class ClusterSummary:
    spec: str
    layers: list[str] = field(default_factory=list)
    weight_bytes: tuple[int, int] = (0, 0)  # the clustered weights as fp32, and as indices + codebooks
    losses: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0
    world_size: int = 1
    stopped_early: bool = False

    def section(self, report: Path) -> list[str]:
        before, after = self.weight_bytes
        return training_section(report, self, "Weight clustering", "cluster",
                                [f"{len(self.layers)} layer(s) clustered; their weights {before / 1e6:.2f} MB as fp32, "
                                 f"{after / 1e6:.2f} MB as uint8 indices + codebooks (ONNX Runtime folds them to float "
                                 "at load: smaller files, the same speed)"])

    def line(self) -> str:
        before, after = self.weight_bytes
        tuned = f"; fine-tuned, loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}" if self.losses else ""
        return (f"cluster: {len(self.layers)} layer(s), weights {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB "
                f"(uint8 indices + codebooks){tuned}")


def kmeans_1d(values: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (ascending) and each value's index: Lloyd's algorithm from a linear start; a
    centroid left with no values moves to the value farthest from its own centroid (else a gap in
    the weights' range would strand it there)."""
    centroids = np.linspace(values.min(), values.max(), clusters)
    distinct = len(np.unique(values))
    for _ in range(ITERATIONS):
        index = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
        counts = np.bincount(index, minlength=clusters)
        sums = np.bincount(index, weights=values, minlength=clusters)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        for empty in np.flatnonzero(counts == 0)[:distinct - int((counts > 0).sum())]:
            farthest = int(np.argmax(np.abs(values - moved[index])))
            moved[empty], index[farthest] = values[farthest], empty
        if np.array_equal(np.sort(moved), centroids):
            break
        centroids = np.sort(moved)
    return centroids.astype(np.float32), np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)


@register_pass
@dataclass(frozen=True)
class Cluster(Pass, TrainingOptions):
    """k-means weight sharing: `clusters` centroids a layer, optionally fine-tuned on data=."""

    name = "cluster"
    contract = Contract("trained")
    needs_received = True
    clusters: int = option(16, low=2, high=256)
    epochs: int = option(0, low=0)
    skip: tuple[str, ...] = ()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from graphopt.backends.torch_train import record_history, train

        summary = ClusterSummary(self.spec())
        teacher = ctx.get("teacher") if ctx.get("teacher") is not None else ctx.received
        done: set[int] = set()
        before = after = 0
        for layer in list(graph):
            weight = layer.operands[1] if layer.op in LAYERS and len(layer.operands) > 1 else None
            if weight is None or not weight.is_parameter or weight.data is None or id(weight) in done or \
                    weight.data.size < 4 * self.clusters or not ctx.allow(layer) or layer.named(self.skip):
                continue
            done.add(id(weight))
            before += weight.data.nbytes
            after += weight.data.size + 4 * self.clusters
            _share(graph, layer, self.clusters)
            summary.layers.append(layer.loc or layer.op)
        if not summary.layers:
            return PassResult(False, details=summary)
        summary.weight_bytes = (before, after)
        if self.epochs:
            history = train(graph, teacher, ctx.labeled("cluster"), self.train_config(), label="cluster")
            record_history(summary, history)
        return PassResult(True, details=summary)


def _share(graph: Graph, layer: Node, clusters: int) -> None:
    """Replace the layer's weight by codebook[indices]; zero weights index one more entry, a scalar 0
    (scalars are never trained), so they stay zero."""
    weight = layer.operands[1]
    data = weight.data
    assert data is not None
    live = data != 0
    if not live.any():
        raise GraphoptError(f"cluster: {layer.where} has only zero weights; skip it (skip=[{layer.loc}])")
    centroids, index = kmeans_1d(data[live].astype(np.float64), clusters)
    indices = np.full(data.shape, clusters, np.uint8)  # the zero entry
    indices[live] = index
    loc = layer.loc
    wide = graph.create("to", [graph.add_parameter(indices, f"{weight.name}.cluster_index")], {"dtype": DType.int64},
                        loc=loc, before=layer)
    codebook = graph.add_parameter(centroids.reshape(-1, 1), f"{weight.name}.codebook")
    zero = graph.create("reshape", [graph.add_parameter(np.float32(0), f"{weight.name}.zero")], {"shape": (1, 1)},
                        loc=loc, before=layer)
    table = graph.create("cat", [codebook, zero.result], {"dim": 0}, loc=loc, before=layer)
    shared = graph.create("embedding", [wide.result, table.result], loc=loc, before=layer)
    value = graph.create("reshape", [shared.result], {"shape": data.shape}, loc=loc, before=layer).result
    for node, i in list(weight.uses):
        node.set_operand(i, value)
    graph.remove_parameters(weight)
