"""The verifier: a set of rules over the whole graph. It reports every problem it finds, each with
the offending node printed, rather than stopping at the first."""

from __future__ import annotations

from collections import Counter

from graphopt.errors import GraphoptError, VerifyError, expect_type
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.printer import format_node
from graphopt.ir.types import TensorType
from graphopt.ir.value import Value


def verify(graph: Graph) -> None:
    """Raise VerifyError listing every broken invariant of `graph`."""
    expect_type(graph, Graph, "verify's graph")
    problems = find_problems(graph)
    if problems:
        raise VerifyError(problems)


def find_problems(graph: Graph) -> list[str]:
    problems: list[str] = []
    defined: set[int] = set()
    for kind, values in (("input", graph.inputs), ("parameter", graph.parameters)):
        for v in values:
            problems += _check_root(graph, v, kind)
            defined.add(id(v))
    nodes = _walk(graph, problems)
    for node in nodes:
        problems += [f"{p}\n      in: {_show(node)}" for p in _check_node(graph, node, defined)]
        defined.update(id(r) for r in node.results)
    for value in list(graph.inputs) + list(graph.parameters) + [r for n in nodes for r in n.results]:
        problems += _check_uses(graph, value)
    outputs = Counter(id(v) for v in graph.outputs)
    for v in graph.outputs:
        if id(v) not in defined:
            problems.append(f"graph output %{v.name} is not defined in the graph")
        elif v._output_count != outputs[id(v)]:
            problems.append(f"graph output %{v.name} has a stale output count")
    return problems


def _show(node: Node) -> str:
    try:
        return format_node(node)
    except GraphoptError:
        return f"{node.op} (unprintable)"


def _check_root(graph: Graph, v: Value, kind: str) -> list[str]:
    out = []
    if v.graph is not graph or v.kind != kind or v.producer is not None:
        out.append(f"{kind} %{v.name} is not owned by this graph as a {kind}")
    if v.data is not None and TensorType.of_array(v.data) != v.type:
        out.append(f"parameter %{v.name} holds data of type {TensorType.of_array(v.data)}, not {v.type}")
    if kind == "parameter" and not v.type.is_static:
        out.append(f"parameter %{v.name} has a symbolic shape {v.type}")
    return out


def _walk(graph: Graph, problems: list[str]) -> list[Node]:
    nodes, prev = [], None
    for node in graph:
        if node.graph is not graph:
            problems.append(f"{_show(node)} is linked into the graph but does not belong to it")
        if node.prev is not prev:
            problems.append(f"{_show(node)} has a broken back link")
        nodes.append(node)
        prev = node
    if len(nodes) != len(graph):
        problems.append(f"graph counts {len(graph)} nodes but links {len(nodes)}")
    return nodes


def _check_node(graph: Graph, node: Node, defined: set[int]) -> list[str]:
    from graphopt.ops import find_op

    out = []
    for i, v in enumerate(node.operands):
        if id(v) not in defined:
            where = "another graph" if v.graph is not graph else "later in the graph"
            out.append(f"operand {i} %{v.name} is not defined before its use (it comes from {where})")
        if not any(u.node is node and u.index == i for u in v.uses):
            out.append(f"operand {i} %{v.name} is missing this node from its use list")
    for i, r in enumerate(node.results):
        if r.producer is not node or r.index != i or r.graph is not graph:
            out.append(f"result {i} %{r.name} does not point back to its node")
    opdef = find_op(node.op)
    if opdef is None:
        return [*out, f"unknown op {node.op!r}; register it with graphopt.register_op"]
    where = node.where
    try:
        attrs = opdef.normalize_attrs(node.attrs, where)
        opdef.check_arity(len(node.operands), where)
        inferred = opdef.infer_types([v.type for v in node.operands], attrs, where)
    except GraphoptError as e:
        return [*out, str(e)]
    if attrs != node.attrs:
        out.append(f"{where}: attributes are not in canonical form (expected {attrs})")
    actual = [r.type for r in node.results]
    if inferred != actual:
        out.append(f"{where}: result types {', '.join(map(str, actual))} differ from inferred "
                   f"{', '.join(map(str, inferred))}")
    if opdef.verify is not None:
        out += [f"{where}: {msg}" for msg in opdef.verify([v.type for v in node.operands], attrs)]
    return out


def _check_uses(graph: Graph, value: Value) -> list[str]:
    out = []
    for use in value.uses:
        node = use.node
        if node.graph is not graph:
            out.append(f"%{value.name} lists a use by {node.where}, which is not in the graph")
        elif use.index >= len(node.operands) or node.operands[use.index] is not value:
            out.append(f"%{value.name} lists a stale use as operand {use.index} of {_show(node)}")
    return out

