"""Hypothesis strategies that generate valid graphs from the op registry.

Every op with a `sample` hook can appear; the hooks pick operands among existing values, so graphs
get fan-out for free, and they lean toward the known bug classes: weights shared between convs,
a conv output with several users, outputs taken mid-chain, cat/split/reshape on the channel axis,
grouped and depthwise convs. An op registered from outside joins in by giving a `sample` hook."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.ir.types import Dim, DType, TensorType, bind_dims
from graphopt.ir.value import Value
from graphopt.ops import ChannelRule, registered_ops


class GraphSampler:
    """The Sampler that op `sample` hooks draw from (see graphopt.ops.registry.Sampler)."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any], graph: Graph, seed: int) -> None:
        self.draw = draw
        self.graph = graph
        self.rng = np.random.default_rng(seed)
        self.values: list[Value] = list(graph.inputs)
        self._positive: set[int] = set()

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(list(options)))

    def boolean(self) -> bool:
        return self.draw(st.booleans())

    def value(self, predicate: Callable[[Value], bool] = lambda v: True, dtype: str = "float32") -> Value | None:
        candidates = [v for v in self.values if v.dtype is DType(dtype) and predicate(v)]
        return self.choice(candidates) if candidates else None

    def weight(self, shape: Sequence[int], *, positive: bool = False) -> Value:
        """A parameter of `shape`: sometimes an existing one (shared weights), else a new one."""
        shape = tuple(shape)
        shared = [p for p in self.graph.parameters if p.shape == shape
                  and (not positive or id(p) in self._positive)]
        if shared and self.draw(st.booleans()):
            return self.choice(shared)
        data = self.rng.uniform(0.5, 1.5, shape) if positive else self.rng.standard_normal(shape) * 0.5
        p = self.graph.add_parameter(data.astype(np.float32), f"w{len(self.graph.parameters)}")
        if positive:
            self._positive.add(id(p))
        return p


def _input_types(draw: Callable[[st.SearchStrategy[Any]], Any]) -> list[TensorType]:
    batch: Dim = draw(st.sampled_from([1, 2, "N"]))
    if draw(st.integers(0, 3)):  # mostly image-like NCHW inputs, sometimes sequences
        c, h, w = draw(st.integers(1, 8)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
        shapes = [(batch, c, h, w)]
        if draw(st.booleans()):
            shapes.append((batch, draw(st.integers(1, 8)), h, w))
    else:
        shapes = [(batch, draw(st.integers(1, 6)), draw(st.integers(1, 16)))]
    return [TensorType("float32", s) for s in shapes]


# Drawn more often: the ops around which pass bugs cluster (conv + BN chains, channel cat/split).
_EMPHASIS = {"conv2d": 4, "batch_norm": 2, "cat": 2, "split": 2}


def _is_activation(name: str) -> bool:
    opdef = registered_ops()[name]
    return opdef.arity == (1, 1) and opdef.channel is ChannelRule.ELEMENTWISE and "pool" not in name


@st.composite
def graphs(draw: Callable[[st.SearchStrategy[Any]], Any], *, max_nodes: int = 12,
           ops: Sequence[str] | None = None) -> Graph:
    """A verified graph of up to `max_nodes` nodes built from the registry (or only `ops`)."""
    graph = Graph("generated")
    for i, t in enumerate(_input_types(draw)):
        graph.add_input(t, f"x{i}")
    sampler = GraphSampler(draw, graph, draw(st.integers(0, 2**32 - 1)))
    candidates = [name for name, opdef in sorted(registered_ops().items())
                  if opdef.sample is not None and (ops is None or name in ops)]
    # The many elementwise activations share one slot so structural ops are drawn as often.
    unary = [n for n in candidates if _is_activation(n)]
    slots = [n for n in candidates if n not in unary for _ in range(_EMPHASIS.get(n, 1))]
    slots += ["<activation>"] if unary else []
    for _ in range(draw(st.integers(1, max_nodes))):
        name = draw(st.sampled_from(slots))
        if name == "<activation>":
            name = draw(st.sampled_from(unary))
        picked = registered_ops()[name].sample(sampler)  # type: ignore[misc]
        if picked is None:
            continue
        operands, attrs = picked
        try:
            node = graph.create(name, operands, attrs)
        except GraphoptError:
            continue  # e.g. a window larger than the feature map: draw another op
        sampler.values.extend(node.results)
        if draw(st.integers(0, 5)) == 0:  # an output taken mid-chain
            graph.outputs = [*graph.outputs, node.results[0]]
    last = sampler.values[-1]
    graph.outputs = list({id(v): v for v in [*graph.outputs, last]}.values())
    return graph


@st.composite
def inputs_for(draw: Callable[[st.SearchStrategy[Any]], Any], graph: Graph) -> list[np.ndarray]:
    """Random inputs for `graph`, binding each symbolic dim to a small size."""
    bindings = {s: draw(st.integers(1, 3)) for s in graph.symbols()}
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [rng.standard_normal(bind_dims(v.shape, bindings)).astype(v.dtype.numpy) for v in graph.inputs]


@st.composite
def graphs_with_inputs(draw: Callable[[st.SearchStrategy[Any]], Any], **kwargs: Any) -> tuple[Graph, list[np.ndarray]]:
    graph = draw(graphs(**kwargs))
    return graph, draw(inputs_for(graph))


@st.composite
def residual_graphs(draw: Callable[[st.SearchStrategy[Any]], Any], *, max_blocks: int = 4) -> Graph:
    """A stack of residual blocks, the units block removal works on: conv blocks (identity or
    projection shortcut, activation after the add or not, a plain same-width conv between them) on
    an image, or pre-norm transformer-style FFN blocks on a sequence; branches sometimes also
    produce a graph output mid-stack, which makes them not removable."""
    graph = Graph("residual")
    sampler = GraphSampler(draw, graph, draw(st.integers(0, 2**32 - 1)))
    channels = draw(st.integers(2, 5))
    if draw(st.booleans()):
        x = graph.add_input(TensorType("float32", [1, channels, 5, 5]), "x")
        for _ in range(draw(st.integers(1, max_blocks))):
            out_channels = draw(st.sampled_from([channels, channels, channels + 1]))
            w1 = sampler.weight((out_channels, channels, 3, 3))
            h = graph.create("relu", [graph.create("conv2d", [x, w1], {"padding": [1, 1]}).result]).result
            w2 = sampler.weight((out_channels, out_channels, 3, 3))
            h = graph.create("conv2d", [h, w2], {"padding": [1, 1]}).result
            shortcut = x if out_channels == channels else \
                graph.create("conv2d", [x, sampler.weight((out_channels, channels, 1, 1))]).result
            if draw(st.integers(0, 6)) == 0:
                graph.outputs = [*graph.outputs, h]
            x = graph.create("add", [h, shortcut] if draw(st.booleans()) else [shortcut, h]).result
            if draw(st.booleans()):
                x = graph.create("relu", [x]).result
            channels = out_channels
            if draw(st.integers(0, 3)) == 0:  # a plain same-width layer
                x = graph.create("relu", [graph.create("conv2d", [x, sampler.weight((channels, channels, 1, 1))])
                                          .result]).result
    else:
        x = graph.add_input(TensorType("float32", [1, 3, channels * 2]), "x")
        width = channels * 2
        for _ in range(draw(st.integers(1, max_blocks))):
            h = graph.create("layer_norm", [x, sampler.weight((width,), positive=True)],
                             {"normalized_shape": [width]}).result
            h = graph.create("gelu", [graph.create("linear", [h, sampler.weight((2 * width, width))]).result]).result
            h = graph.create("linear", [h, sampler.weight((width, 2 * width))]).result
            x = graph.create("add", [x, h]).result
    graph.outputs = [*graph.outputs, x]
    return graph


def with_symbolic_sizes(graph: Graph) -> tuple[Graph, dict[str, int]] | None:
    """`graph` rebuilt with its image inputs' H and W (and a sequence's length) made the symbols H,
    W and L, every type inferred again; with the sizes they stood for. None when an op's attributes
    pin a size (a reshape to static numbers, a split of a spatial axis): the graph only fits that size."""
    out, sizes, mapping = Graph(graph.name), {}, {}
    for v in graph.inputs:
        names = ("H", "W") if v.type.rank == 4 else ("L",) if v.type.rank == 3 else ()
        shape = list(v.shape)
        for axis, name in zip(range(v.type.rank - len(names), v.type.rank), names):
            if sizes.setdefault(name, shape[axis]) != shape[axis]:  # type: ignore[arg-type]
                return None
            shape[axis] = name
        mapping[id(v)] = out.add_input(v.type.with_shape(shape), v.name)
    for p in graph.parameters:
        mapping[id(p)] = out.add_parameter(p.data, p.name) if p.data is not None else out.declare_parameter(p.type, p.name)
    for node in graph:
        try:
            created = out.create(node.op, [mapping[id(v)] for v in node.operands], node.attrs, loc=node.loc)
        except GraphoptError:
            return None
        mapping.update((id(old), new) for old, new in zip(node.results, created.results))
    out.outputs = [mapping[id(v)] for v in graph.outputs]
    return out, sizes
