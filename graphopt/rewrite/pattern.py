"""Pattern rewriting: one API for every local transformation.

A Pattern names the op it is anchored on (`root`), `check`s a candidate node and returns either a
match (any object the rewrite needs) or `Declined(reason)`, and `rewrite`s through the Rewriter,
the only way patterns mutate the graph. The Rewriter copies the root's `loc` to new nodes and
removes whatever the rewrite left dead (nodes and parameters)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from graphopt.errors import IRError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value

M = TypeVar("M")


@dataclass(frozen=True)
class Declined:
    """A pattern's reason for not firing on a node, kept in the trace."""

    reason: str


class Pattern(ABC, Generic[M]):
    root: ClassVar[str | None] = None  # op name the pattern is anchored on; None tries every node

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def check(self, node: Node) -> M | Declined:
        """The match data for `node`, or Declined(reason)."""

    @abstractmethod
    def rewrite(self, rw: Rewriter, node: Node, match: M) -> None:
        """Change the graph through `rw` (which inserts new nodes before `node`)."""


class Rewriter:
    """Mutations on behalf of a pattern anchored at `root`. Records what it touched so the greedy
    driver knows which nodes to revisit."""

    def __init__(self, graph: Graph, root: Node) -> None:
        self.graph = graph
        self.root = root
        self.created: list[Node] = []
        self.touched: list[Node] = []  # nodes whose operands changed or that lost a user

    def create(self, op: str, operands: Sequence[Value], attrs: Mapping[str, Any] | None = None, *,
               loc: str | None = None, names: Sequence[str] = ()) -> Node:
        """A new node before the root, with the root's provenance unless `loc` is given."""
        node = self.graph.create(op, operands, attrs, loc=self.root.loc if loc is None else loc,
                                 names=names, before=self.root)
        self.created.append(node)
        return node

    def parameter(self, data: np.ndarray, name: str = "", dtype: str | None = None) -> Value:
        return self.graph.add_parameter(data, name, dtype)

    def set_operand(self, node: Node, index: int, value: Value) -> None:
        old = node.operands[index]
        node.set_operand(index, value)
        self.touched.append(node)
        self._erase_if_dead(old)

    def replace_value(self, old: Value, new: Value) -> None:
        self.touched.extend(old.users)
        old.replace_all_uses_with(new)
        self._erase_if_dead(old)

    def replace(self, node: Node, new: Value | Sequence[Value]) -> None:
        """Replace every result of `node` by `new` (one value per result) and erase it."""
        values = [new] if isinstance(new, Value) else list(new)
        if len(values) != len(node.results):
            raise IRError(f"{node.where} has {len(node.results)} results, got {len(values)} replacements")
        for old, fresh in zip(node.results, values):
            self.touched.extend(old.users)
            old.replace_all_uses_with(fresh)
        self.erase(node)

    def erase(self, node: Node) -> None:
        """Erase an unused node, then whatever became dead because of it."""
        operands = node.operands
        self.graph.erase(node)
        for v in operands:
            self._erase_if_dead(v)

    def _erase_if_dead(self, value: Value) -> None:
        if value.is_used:
            if value.producer is not None:
                self.touched.append(value.producer)
            return
        if value.producer is not None and value.producer.graph is self.graph:
            if not value.producer.is_used:
                self.erase(value.producer)
        elif value.is_parameter:
            self.graph.remove_parameters(value)
