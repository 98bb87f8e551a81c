"""Nodes: one op application. Operands are set through the node so use lists stay exact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from graphopt.errors import IRError
from graphopt.ir.types import TensorType
from graphopt.ir.value import Value

if TYPE_CHECKING:
    from graphopt.ir.graph import Graph


class Node:
    """`op` names an OpDef in the registry; `loc` is provenance (torch module path, ONNX node name)."""

    __slots__ = ("_next", "_operands", "_prev", "attrs", "graph", "loc", "op", "results")

    def __init__(
        self,
        op: str,
        operands: Sequence[Value],
        attrs: Mapping[str, Any],
        result_types: Sequence[TensorType],
        loc: str = "",
        names: Sequence[str] = (),
    ) -> None:
        self.op = op
        self.attrs = dict(attrs)
        self.loc = loc
        self.graph: Graph | None = None
        self._prev: Node | None = None
        self._next: Node | None = None
        self._operands: list[Value] = []
        for value in operands:
            if not isinstance(value, Value):
                raise IRError(f"operand {len(self._operands)} of {op} is {value!r}, not a Value")
            value._add_use(self, len(self._operands))
            self._operands.append(value)
        names = list(names) + [""] * (len(result_types) - len(names))
        self.results = [Value(t, n, self, i) for i, (t, n) in enumerate(zip(result_types, names))]

    @property
    def operands(self) -> tuple[Value, ...]:
        return tuple(self._operands)

    def set_operand(self, index: int, value: Value) -> None:
        old = self._operands[index]
        if old is value:
            return
        old._remove_use(self, index)
        value._add_use(self, index)
        self._operands[index] = value

    def _drop_operands(self) -> None:
        for index, value in enumerate(self._operands):
            value._remove_use(self, index)
        self._operands = []

    @property
    def result(self) -> Value:
        """The single result; an error for multi-result nodes."""
        if len(self.results) != 1:
            raise IRError(f"{self.op} has {len(self.results)} results; use node.results")
        return self.results[0]

    @property
    def is_used(self) -> bool:
        return any(r.is_used for r in self.results)

    @property
    def next(self) -> Node | None:
        return self._next

    @property
    def prev(self) -> Node | None:
        return self._prev

    def named(self, names: Sequence[str]) -> bool:
        """True when one of `names` is this node's op kind, its `loc` (a torch module path or ONNX
        node name), or a prefix of its `loc` ending at a dot: how users name layers in `skip=[...]`."""
        return any(s == self.op or s == self.loc or self.loc.startswith(s + ".") for s in names)

    @property
    def where(self) -> str:
        """A short description for error messages: the op and its provenance."""
        return f"{self.op} at {self.loc!r}" if self.loc else self.op

    def __repr__(self) -> str:
        from graphopt.ir.printer import format_node

        return f"<Node {format_node(self)}>"
