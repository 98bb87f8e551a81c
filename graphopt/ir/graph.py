"""The graph: inputs, parameters, nodes in topological order (an intrusive linked list, so inserting
and erasing anywhere is O(1)), and outputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.errors import IRError
from graphopt.ir.node import Node
from graphopt.ir.symbolic import symbols
from graphopt.ir.types import DType, TensorType
from graphopt.ir.value import Value


class Graph:
    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.parameters: list[Value] = []
        self._outputs: list[Value] = []
        self._first: Node | None = None
        self._last: Node | None = None
        self._size = 0

    # --- values ---------------------------------------------------------------------------------
    def add_input(self, type: TensorType, name: str = "") -> Value:
        value = Value(type, name)
        self._adopt(value, "input")
        self.inputs.append(value)
        return value

    def add_parameter(self, data: np.ndarray, name: str = "", dtype: DType | str | None = None) -> Value:
        """A new parameter holding `data` (cast to `dtype` when given)."""
        array = np.asarray(data, dtype=DType.of(dtype).numpy if dtype else None)
        value = Value(TensorType.of_array(array), name)
        value.data = array
        self._adopt(value, "parameter")
        self.parameters.append(value)
        return value

    def declare_parameter(self, type: TensorType, name: str = "") -> Value:
        """A parameter whose data is not loaded (yet); the interpreter refuses to read it."""
        value = Value(type, name)
        self._adopt(value, "parameter")
        self.parameters.append(value)
        return value

    def remove_parameters(self, *values: Value) -> None:
        """Remove unused parameters (one pass over the list however many are removed)."""
        for value in values:
            if value.is_used:
                raise IRError(f"cannot remove parameter %{value.name}: it still has {len(value.uses)} use(s)")
            if value.kind != "parameter" or value.graph is not self:
                raise IRError(f"%{value.name} is not a parameter of this graph")
        gone = {id(v) for v in values}
        self.parameters = [p for p in self.parameters if id(p) not in gone]
        for value in values:
            value.graph = None
            value.kind = "detached"

    def _adopt(self, value: Value, kind: str) -> None:
        if value.graph is not None:
            raise IRError(f"%{value.name} already belongs to a graph")
        value.graph = self
        value.kind = kind

    @property
    def outputs(self) -> list[Value]:
        return list(self._outputs)

    @outputs.setter
    def outputs(self, values: Iterable[Value]) -> None:
        values = list(values)
        for v in values:
            if not isinstance(v, Value):
                raise IRError(f"graph output {v!r} is not a Value")
        for v in self._outputs:
            v._output_count -= 1
        for v in values:
            v._output_count += 1
        self._outputs = values

    # --- nodes ----------------------------------------------------------------------------------
    def create(
        self,
        op: str,
        operands: Sequence[Value],
        attrs: Mapping[str, Any] | None = None,
        *,
        loc: str = "",
        names: Sequence[str] = (),
        types: Sequence[TensorType] | None = None,
        before: Node | None = None,
    ) -> Node:
        """Create a node of a registered op, infer its result types, insert it (at the end, or
        before `before`). Bad operands or attributes raise an error naming the op and `loc`."""
        from graphopt.ops import get_op

        where = f"{op} at {loc!r}" if loc else op
        opdef = get_op(op, where=loc)
        attrs = opdef.normalize_attrs(attrs or {}, where)
        opdef.check_arity(len(operands), where)
        if types is None:
            types = opdef.infer_types([v.type for v in operands], attrs, where)
        node = Node(op, operands, attrs, types, loc, names)
        return self.insert(node, before=before)

    def insert(self, node: Node, *, before: Node | None = None) -> Node:
        """Link an already-built node in (at the end, or before `before`)."""
        if node.graph is not None:
            raise IRError(f"{node.where} is already in a graph")
        if before is not None and before.graph is not self:
            raise IRError(f"cannot insert before {before.where}: it is not in this graph")
        node.graph = self
        for r in node.results:
            r.graph = self
        node._next = before
        node._prev = before._prev if before is not None else self._last
        if node._prev is None:
            self._first = node
        else:
            node._prev._next = node
        if before is None:
            self._last = node
        else:
            before._prev = node
        self._size += 1
        return node

    def erase(self, node: Node) -> None:
        """Remove a node whose results are unused; a used node is an error, never a dangling use."""
        if node.graph is not self:
            raise IRError(f"cannot erase {node.where}: it is not in this graph")
        for r in node.results:
            if r.is_used:
                readers = ", ".join(u.node.where for u in r.uses) or "graph output"
                raise IRError(f"cannot erase {node.where}: result %{r.name} is used by {readers}")
        node._drop_operands()
        self._unlink(node)

    def move_before(self, node: Node, before: Node) -> None:
        self._unlink(node)
        self.insert(node, before=before)

    def _unlink(self, node: Node) -> None:
        if node._prev is None:
            self._first = node._next
        else:
            node._prev._next = node._next
        if node._next is None:
            self._last = node._prev
        else:
            node._next._prev = node._prev
        node._prev = node._next = None
        node.graph = None
        for r in node.results:
            r.graph = None
        self._size -= 1

    def __iter__(self) -> Iterator[Node]:
        """Nodes in order. Erasing the node just yielded is safe; for other edits iterate `nodes`."""
        node = self._first
        while node is not None:
            following = node._next
            yield node
            node = following

    def __reversed__(self) -> Iterator[Node]:
        node = self._last
        while node is not None:
            preceding = node._prev
            yield node
            node = preceding

    def __len__(self) -> int:
        return self._size

    @property
    def nodes(self) -> list[Node]:
        """A snapshot list of the nodes, safe to iterate while editing the graph."""
        return list(self)

    def find(self, loc: str) -> list[Node]:
        """Nodes whose provenance is `loc` (a torch module path or ONNX node name)."""
        return [n for n in self if n.loc == loc]

    # --- whole-graph operations -----------------------------------------------------------------
    def clone(self) -> Graph:
        """An independent copy; parameter arrays are shared (they are read-only)."""
        return self.clone_with_mapping()[0]

    def clone_with_mapping(self) -> tuple[Graph, dict[int, Value]]:
        """A copy and, for every value of this graph (by id), its counterpart in the copy."""
        new = Graph(self.name)
        mapping: dict[int, Value] = {}
        for v in self.inputs:
            mapping[id(v)] = new.add_input(v.type, v.name)
        for p in self.parameters:
            q = new.declare_parameter(p.type, p.name)
            q.data = p.data
            mapping[id(p)] = q
        for node in self:
            copy = Node(
                node.op,
                [mapping[id(v)] for v in node.operands],
                node.attrs,
                [r.type for r in node.results],
                node.loc,
                [r.name for r in node.results],
            )
            new.insert(copy)
            for old, fresh in zip(node.results, copy.results):
                mapping[id(old)] = fresh
        new.outputs = [mapping[id(v)] for v in self.outputs]
        return new, mapping

    def take_contents(self, other: Graph) -> None:
        """Hold `other`'s inputs, parameters, nodes and outputs in place of this graph's own (a pass
        that builds its result as a new graph hands it back through the graph it was given); `other`
        is left empty."""
        self.inputs, self.parameters, self._outputs = other.inputs, other.parameters, other._outputs
        self._first, self._last, self._size = other._first, other._last, other._size
        for v in [*self.inputs, *self.parameters]:
            v.graph = self
        for node in self:
            node.graph = self
            for r in node.results:
                r.graph = self
        other.inputs, other.parameters, other._outputs = [], [], []
        other._first = other._last = None
        other._size = 0

    def symbols(self) -> list[str]:
        """Symbolic dims used by the inputs, in order of appearance."""
        seen: dict[str, None] = {}
        for v in self.inputs:
            for d in v.shape:
                for name in sorted(symbols(d)):
                    seen.setdefault(name)
        return list(seen)

    def __str__(self) -> str:
        from graphopt.ir.printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.parameters)} params, {len(self)} nodes>"

