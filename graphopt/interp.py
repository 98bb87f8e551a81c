"""The numpy reference interpreter: the semantic oracle every pass and backend is checked against.
Subclass `Interpreter` and override `run_node` to observe or replace values (calibration does)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphopt.errors import GraphoptError, InterpretError, ShapeError, expect_type
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.types import TensorType, bind_dims, fmt_shape
from graphopt.ir.value import Value
from graphopt.ops import AttrKind, get_op


class Interpreter:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.bindings: dict[str, int] = {}
        self.bound_by: dict[str, str] = {}  # symbol -> the input that bound it

    def run(self, *inputs: Any) -> list[np.ndarray]:
        graph = self.graph
        # Free each intermediate after its last reader so large models fit in memory.
        last_reader: dict[int, Node] = {id(v): node for node in graph for v in node.operands}
        if len(inputs) != len(graph.inputs):
            raise InterpretError(f"graph {graph.name} takes {len(graph.inputs)} input(s), got {len(inputs)}")
        env: dict[int, np.ndarray] = {}
        self.bindings, self.bound_by = {}, {}
        arrays = [np.asarray(a) for a in inputs]
        for value, array in zip(graph.inputs, arrays):
            env[id(value)] = self._bind_input(value, array)
        for value, array in zip(graph.inputs, arrays):  # dims that are expressions of the bound symbols
            if bind_dims(value.shape, self.bindings) != array.shape:
                raise InterpretError(f"input %{value.name} expects {value.type} = "
                                     f"{fmt_shape(bind_dims(value.shape, self.bindings))} at "
                                     f"{self._bound_text()}, got {fmt_shape(array.shape)}")
        for p in graph.parameters:
            if p.data is None:
                raise InterpretError(f"parameter %{p.name} has no data; load the graph with its weights")
            env[id(p)] = p.data
        keep = {id(v) for v in graph.outputs}
        with np.errstate(all="ignore"):
            for node in graph:
                results = self.run_node(node, [env[id(v)] for v in node.operands])
                for value, array in zip(node.results, results):
                    env[id(value)] = array
                for v in node.operands:
                    if last_reader.get(id(v)) is node and id(v) not in keep and v.producer is not None:
                        env.pop(id(v), None)
        return [env[id(v)] for v in graph.outputs]

    def run_node(self, node: Node, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Evaluate one node with its op's reference; results are checked against the node's types."""
        opdef = get_op(node.op, node.loc)
        attrs = {k: self._bound(opdef.attrs[k].kind, v) for k, v in node.attrs.items()}
        try:
            out = opdef.reference(*args, **attrs)
        except GraphoptError:
            raise
        except Exception as e:
            raise InterpretError(f"{node.where}: reference failed: {type(e).__name__}: {e}") from e
        arrays = list(out) if isinstance(out, tuple | list) else [out]
        if len(arrays) != len(node.results):
            raise InterpretError(f"{node.where}: reference gave {len(arrays)} results, expected {len(node.results)}")
        checked = []
        for value, array in zip(node.results, arrays):
            array = np.asarray(array, dtype=value.dtype.numpy)
            if array.shape != bind_dims(value.shape, self.bindings):
                raise InterpretError(
                    f"{node.where}: reference gave shape {fmt_shape(array.shape)}, type says {value.type}")
            checked.append(array)
        return checked

    def _bound(self, kind: AttrKind, value: Any) -> Any:
        if kind is AttrKind.DIMS:
            return bind_dims(value, self.bindings)
        if kind is AttrKind.DIM and value is not None:
            return bind_dims([value], self.bindings)[0]
        return value

    def _bind_input(self, value: Value, array: np.ndarray) -> np.ndarray:
        want: TensorType = value.type
        if array.dtype != want.dtype.numpy:
            raise InterpretError(f"input %{value.name} expects {want.dtype}, got {array.dtype}")
        if array.ndim != want.rank:
            raise InterpretError(f"input %{value.name} expects rank {want.rank} ({want}), got {fmt_shape(array.shape)}")
        for dim, size in zip(want.shape, array.shape):
            if isinstance(dim, str):
                if self.bindings.setdefault(dim, size) != size:
                    raise InterpretError(
                        f"inputs disagree on {dim}: %{self.bound_by[dim]} has {dim} = {self.bindings[dim]}, "
                        f"%{value.name} has {dim} = {size}")
                self.bound_by.setdefault(dim, value.name)
            elif isinstance(dim, int) and dim != size:
                raise InterpretError(f"input %{value.name} expects {want}, got {fmt_shape(array.shape)}")
        return array

    def _bound_text(self) -> str:
        return ", ".join(f"{k} = {v}" for k, v in self.bindings.items()) or "no symbols bound"


def interpret(graph: Graph, *inputs: Any) -> list[np.ndarray]:
    """Run `graph` on numpy arrays (or anything np.asarray takes); returns the outputs."""
    expect_type(graph, Graph, "interpret's graph")
    try:
        return Interpreter(graph).run(*inputs)
    except ShapeError as e:
        raise InterpretError(str(e)) from None
