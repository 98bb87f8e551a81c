"""SSA values. A value is defined once (graph input, parameter, or node result) and knows its uses,
so rewriting never needs a separate clean-up or re-indexing step."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from graphopt.errors import GraphoptError, IRError
from graphopt.ir.types import DType, TensorType

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph
    from graphopt.ir.node import Node


def check_finite(data: np.ndarray, what: str) -> None:
    """Refuse NaN weights (every result computed from them is meaningless); infinity stays legal,
    attention masks use it."""
    if data.dtype.kind == "f" and np.isnan(data).any():
        raise GraphoptError(f"{what} holds {int(np.isnan(data).sum())} NaN value(s); fix the model before "
                            "compressing it")


class Use(NamedTuple):
    """Operand `index` of `node` reads the value."""

    node: Node
    index: int


class Value:
    """A tensor in the graph. Compared by identity; `name` is only a hint for printing and for
    mapping back to the user's names (state-dict keys, ONNX tensor names)."""

    __slots__ = (
        "_data", "_output_count", "_uses", "graph", "index", "kind", "name", "producer", "type"
    )

    def __init__(
        self,
        type: TensorType,
        name: str = "",
        producer: Node | None = None,
        index: int = 0,
    ) -> None:
        self.type = type
        self.name = name
        self.producer = producer
        self.index = index
        self.graph: Graph | None = None
        self.kind = "result" if producer is not None else "detached"  # or "input", "parameter"
        self._data: np.ndarray | None = None
        self._uses: list[Use] = []
        self._output_count = 0

    # --- parameter data -------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray | None:
        """Numpy data of a parameter (read-only: passes replace data, they never edit it in place,
        so clones can share arrays safely)."""
        return self._data

    @data.setter
    def data(self, array: np.ndarray | None) -> None:
        if array is None:
            self._data = None
            return
        array = np.asarray(array)
        expected = TensorType.of_array(array)
        if expected != self.type:
            raise IRError(f"data of type {expected} does not fit parameter %{self.name}: {self.type}")
        if array.flags.writeable:  # a read-only view; one that is already read-only is kept, so clones
            array = array.view()  # share the very array (caches keyed by it then hit in every copy)
            array.flags.writeable = False
        self._data = array

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[int | str, ...]:
        return self.type.shape

    # --- uses -----------------------------------------------------------------------------------
    @property
    def uses(self) -> tuple[Use, ...]:
        return tuple(self._uses)

    @property
    def users(self) -> list[Node]:
        """Distinct nodes reading this value, in use order."""
        seen: dict[int, Node] = {}
        for use in self._uses:
            seen.setdefault(id(use.node), use.node)
        return list(seen.values())

    @property
    def is_graph_output(self) -> bool:
        return self._output_count > 0

    @property
    def is_used(self) -> bool:
        return bool(self._uses) or self._output_count > 0

    @property
    def is_parameter(self) -> bool:
        return self.kind == "parameter"

    @property
    def is_input(self) -> bool:
        return self.kind == "input"

    def replace_all_uses_with(self, other: Value) -> None:
        """Make every reader of this value (nodes and graph outputs) read `other` instead."""
        if other is self:
            return
        for node, index in list(self._uses):
            node.set_operand(index, other)
        if self._output_count:
            assert self.graph is not None
            self.graph.outputs = [other if v is self else v for v in self.graph.outputs]

    def _add_use(self, node: Node, index: int) -> None:
        self._uses.append(Use(node, index))

    def _remove_use(self, node: Node, index: int) -> None:
        for i, use in enumerate(self._uses):
            if use.node is node and use.index == index:
                del self._uses[i]
                return
        raise IRError(f"use list of %{self.name} lost operand {index} of {node.op}")

    def __repr__(self) -> str:
        return f"<Value %{self.name}: {self.type}>"
