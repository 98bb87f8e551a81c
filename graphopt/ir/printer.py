"""The text form of the IR. Example:

    graph main(%x: float32[N, 3, 8, 8]) {
      param %conv.weight: float32[4, 3, 3, 3] = npz("conv.weight")
      param %scale: float32[] = [0.5]
      %y: float32[N, 4, 6, 6] = conv2d(%x, %conv.weight) loc("conv")
      %z: float32[N, 4, 6, 6] = mul(%y, %scale)
      return %z
    }

Attributes equal to their default are left out. Parameters of up to `inline_limit` elements are
printed inline; larger ones by reference to a side .npz archive (see graphopt.ir.serialize).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.symbolic import Expr
from graphopt.ir.types import DType
from graphopt.ir.value import Value

INLINE_LIMIT = 16
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")


def format_name(name: str) -> str:
    return "%" + (name if _PLAIN_NAME.fullmatch(name) else json.dumps(name))


def format_scalar(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, DType):
        return v.value
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, np.floating):
        text = str(v)  # shortest text that reads back to the same value at this precision
    elif isinstance(v, float):
        text = repr(v)
    elif isinstance(v, str | Expr):
        return json.dumps(str(v))
    elif v is None:
        return "none"
    else:
        raise TypeError(f"cannot print {v!r}")
    return text if any(c in text for c in ".enia") else text + ".0"


def format_attr(v: Any, *, bare_strings: bool = False) -> str:
    if isinstance(v, tuple | list):
        return "[" + ", ".join(format_attr(x, bare_strings=bare_strings) for x in v) + "]"
    if bare_strings and isinstance(v, str):
        return v
    return format_scalar(v)


class Namer:
    """Unique printed names: a value's hint when free, else the hint with a suffix, else a number."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()
        self.counter = 0

    def __call__(self, value: Value) -> str:
        name = self.names.get(id(value))
        if name is None:
            name = self._fresh(value.name)
            self.names[id(value)] = name
            self.taken.add(name)
        return name

    def _fresh(self, hint: str) -> str:
        if hint and hint not in self.taken:
            return hint
        if hint:
            i = 1
            while f"{hint}_{i}" in self.taken:
                i += 1
            return f"{hint}_{i}"
        while str(self.counter) in self.taken:
            self.counter += 1
        self.counter += 1
        return str(self.counter - 1)


def _attrs_text(node: Node) -> str:
    from graphopt.ops import AttrKind, get_op

    try:
        schema = get_op(node.op).attrs
    except Exception:
        schema = {}
    parts = []
    for key, value in node.attrs.items():
        spec = schema.get(key)
        if spec is not None and _equal(value, spec.default):
            continue
        bare = spec is not None and spec.kind in (AttrKind.DIMS, AttrKind.DIM)
        parts.append(f"{key}={format_attr(value, bare_strings=bare)}")
    return " {" + ", ".join(parts) + "}" if parts else ""


def _equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def format_node(node: Node, name: Namer | None = None) -> str:
    """One node as a line of text (names from `name`, or the values' hints)."""
    def ref(v: Value) -> str:
        return format_name(name(v) if name else v.name or "_")

    results = ", ".join(f"{ref(r)}: {r.type}" for r in node.results)
    operands = ", ".join(ref(v) for v in node.operands)
    loc = f" loc({json.dumps(node.loc)})" if node.loc else ""
    return f"{results} = {node.op}({operands}){_attrs_text(node)}{loc}"


def format_data(array: np.ndarray) -> str:
    return "[" + ", ".join(format_scalar(x) for x in array.reshape(-1)) + "]"


def print_graph(graph: Graph, *, inline_limit: int = INLINE_LIMIT) -> str:
    name = Namer()
    lines = []
    header = ", ".join(f"{format_name(name(v))}: {v.type}" for v in graph.inputs)
    lines.append(f"graph {format_graph_name(graph.name)}({header}) {{")
    for p in graph.parameters:
        lines.append(f"  param {format_name(name(p))}: {p.type} = {_param_text(p, name(p), inline_limit)}")
    lines.extend(f"  {format_node(node, name)}" for node in graph)
    lines.append("  return " + ", ".join(format_name(name(v)) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_graph_name(name: str) -> str:
    return name if name.isidentifier() else json.dumps(name)


def _param_text(p: Value, key: str, inline_limit: int) -> str:
    if p.data is not None and p.data.size <= inline_limit:
        return format_data(p.data)
    return f"npz({json.dumps(key)})"


def external_parameters(graph: Graph, *, inline_limit: int = INLINE_LIMIT) -> Iterable[tuple[str, Value]]:
    """(printed name, parameter) for every parameter the text refers to by npz key."""
    name = Namer()
    for v in graph.inputs:
        name(v)
    for p in graph.parameters:
        key = name(p)
        if p.data is None or p.data.size > inline_limit:
            yield key, p
