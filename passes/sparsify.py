"""sparsify: unstructured and N:M weight sparsity by magnitude.

`sparsify{ratio=0.5}` zeroes that fraction of each layer's weights (`scope=layer`) or of all layers'
weights ranked together (`scope=global`), smallest magnitudes first. `sparsify{pattern=2:4}` keeps
the 2 largest of every 4 consecutive weights along the input axis, the layout NVIDIA's sparse
tensor cores and torch's semi-structured kernels take. Shapes do not change, so the CPU runtimes
here run the result no faster; what it saves is size once the file is compressed
(benchmarks/bench_prune.py measures both).

Contract: masked -- the result is exactly the model with the weights that SparsifySummary counts
set to zero; every other number is unchanged. Idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphopt.errors import OptionError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass

LAYERS = {"conv1d": 1, "conv2d": 1, "linear": 1, "conv_transpose2d": 0, "matmul": 0}  # op -> input axis of operand 1


@dataclass
class SparsifySummary:
    """Per layer: (weights, zeros after); what was left alone and why."""

    spec: str
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    left_alone: dict[str, str] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        total = sum(n for n, _ in self.layers.values())
        return sum(z for _, z in self.layers.values()) / max(total, 1)

    def line(self) -> str:
        return (f"sparsify: {len(self.layers)} layer(s), {self.sparsity:.1%} of their weights are zero; "
                f"{len(self.left_alone)} left alone")


def nm_mask(weight: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """True where `weight` keeps its value: the `n` largest |w| of every `m` consecutive along `axis`."""
    moved = np.moveaxis(np.abs(weight), axis, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def magnitude_mask(weights: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """Masks keeping all but the `ratio` smallest |w| over every array together (ties broken by order)."""
    flat = np.concatenate([np.abs(w).reshape(-1) for w in weights])
    drop = round(ratio * flat.size)
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:drop]] = False
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start:start + w.size].reshape(w.shape))
        start += w.size
    return masks


@register_pass
@dataclass(frozen=True)
class Sparsify(Pass):
    """Zero the smallest weights: a fraction of them, or N of every M along the input axis."""

    name = "sparsify"
    contract = Contract("masked", idempotent=True)
    ratio: float | None = option(None, low=0, high=1, low_open=True, high_open=True)
    pattern: str | None = None  # "2:4", or any "N:M" with 0 < N < M
    scope: str = option("layer", choices=("layer", "global"))
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.ratio is None) == (self.pattern is None):
            raise OptionError("sparsify: give exactly one of ratio= (a fraction of the weights) or pattern=2:4")
        if self.pattern is not None:
            n, _, m = self.pattern.partition(":")
            if not (n.isdigit() and m.isdigit() and 0 < int(n) < int(m)):
                raise OptionError(f"sparsify: option pattern={self.pattern} is not N:M with 0 < N < M (e.g. 2:4)")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        summary = SparsifySummary(self.spec())
        layers: dict[int, tuple[Node, Value, int]] = {}
        for node in graph:
            if node.op not in LAYERS or len(node.operands) < 2:
                continue
            weight = node.operands[1]
            name = node.loc or node.op
            if node.named(self.skip):
                summary.left_alone[name] = "skip="
            elif not weight.is_parameter or weight.data is None or weight.dtype.numpy.kind != "f":
                summary.left_alone[name] = "its weight is not a float parameter"
            elif id(weight) not in layers:
                layers[id(weight)] = (node, weight, LAYERS[node.op])
        chosen = list(layers.values())
        if self.pattern is not None:
            n, m = (int(v) for v in self.pattern.split(":"))
            masks = []
            for node, weight, axis in list(chosen):
                if weight.shape[axis] % m:
                    summary.left_alone[node.loc or node.op] = f"{weight.shape[axis]} inputs are not a multiple of {m}"
                    chosen.remove((node, weight, axis))
                else:
                    masks.append(nm_mask(weight.data, axis, n, m))  # type: ignore[arg-type]
        elif self.scope == "global":
            masks = magnitude_mask([w.data for _, w, _ in chosen], self.ratio)  # type: ignore[arg-type,misc]
        else:
            masks = [magnitude_mask([w.data], self.ratio)[0] for _, w, _ in chosen]  # type: ignore[arg-type,list-item]
        changed = False
        for (node, weight, _), keep in zip(chosen, masks):
            data = weight.data
            sparse = np.where(keep, data, np.zeros_like(data))  # type: ignore[arg-type]
            if not np.array_equal(sparse, data) and ctx.allow(node):
                weight.data = sparse
                changed = True
            summary.layers[node.loc or node.op] = (weight.data.size, int((weight.data == 0).sum()))  # type: ignore[union-attr]
        return PassResult(changed, details=summary)
