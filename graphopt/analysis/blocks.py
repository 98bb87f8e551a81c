"""Block analysis: the units a model can lose whole.

- A residual block is an `add` one of whose operands (the branch) is computed by nodes nothing else
  reads: removing the add's use of it leaves that whole cone dead. The other operand (the keep
  side: the identity, or a projection shortcut) must have the add's type, so removal never breaks a
  shape: a downsampling block falls back to its projection. When both sides are such cones (a
  projection block), the side with more MACs is the branch. Transformer layers are two such blocks,
  attention and FFN; pre-norm and post-norm alike, since the norm is outside the add.
- A plain layer (with `plain=True`) is a conv or linear whose output type equals its input's, with
  the same-type unary ops that only it feeds (batch norm, activation): a 3x3 conv in a same-width
  stack. Only layers outside every residual branch are units, so units never overlap.

Removing a unit makes its output read its replacement (the keep side, or the plain layer's input):
exactly the model with the branch set to zero, or the layer replaced by the identity. Each unit is
named the way the user knows it: the longest module path (or ONNX name prefix) its nodes share."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value
from graphopt.ops import get_op
from graphopt.pipeline.passes import Analysis

UNARY_FOLLOWERS = {"batch_norm", "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
                   "leaky_relu", "elu", "mish", "dropout", "identity", "layer_norm", "group_norm"}


@dataclass
class Block:
    """One removable unit. `output` is what the rest of the model reads; removal makes it read
    `replacement`. `merge` is the add (residual) or the last node of a plain layer; `branch` the
    operand of the add that goes (None for a plain layer)."""

    name: str
    kind: str  # residual | projection | plain
    merge: Node
    branch: Value | None
    replacement: Value
    nodes: list[Node]  # every node that removal leaves dead, the merge included
    macs: int
    input: Value  # where the block starts: the keep side, a projection's entry, a plain layer's input

    @property
    def output(self) -> Value:
        return self.merge.result


def _macs(node: Node) -> int:
    opdef = get_op(node.op, node.loc)
    if opdef.macs is None:
        return 0
    return int(opdef.macs([v.type for v in node.operands], [r.type for r in node.results], node.attrs))


def _exclusive_cone(value: Value, reader: Node, position: dict[int, int]) -> list[Node] | None:
    """The nodes that become dead when `reader` stops reading `value` (value's producer first, then
    every producer whose results only the cone reads), in graph order; None when nothing does."""
    producer = value.producer
    if producer is None or value.is_graph_output or any(u.node is not reader for u in value.uses):
        return None
    if any(r is not value and r.is_used for r in producer.results):
        return None
    cone = {id(producer): producer}
    frontier = [(-position[id(producer)], id(producer), producer)]
    while frontier:  # latest first: a node's readers are all decided before it is
        _, _, node = heapq.heappop(frontier)
        for operand in node.operands:
            p = operand.producer
            if p is None or id(p) in cone:
                continue
            if all(not r.is_graph_output and all(id(u.node) in cone for u in r.uses) for r in p.results):
                cone[id(p)] = p  # its last reader to be visited decides: the check runs from each
                heapq.heappush(frontier, (-position[id(p)], id(p), p))
    return sorted(cone.values(), key=lambda n: position[id(n)])


def _common_prefix(nodes: list[Node]) -> str:
    paths = [n.loc.split(".") for n in nodes if n.loc]
    if not paths:
        return ""
    prefix = paths[0]
    for path in paths[1:]:
        k = 0
        while k < min(len(prefix), len(path)) and prefix[k] == path[k]:
            k += 1
        prefix = prefix[:k]
    return ".".join(prefix)


def _name(nodes: list[Node]) -> str:
    return _common_prefix(nodes) or (nodes[0].loc or nodes[0].op)


def _entry(cone: list[Node], keep: Value, depth: int = 8) -> Value | None:
    """The value the branch and the keep side both start from: one the cone reads from outside
    that is `keep` itself or among keep's nearest ancestors (a projection shortcut). None when the
    two sides share nothing (an embedding plus a learned position table is no block)."""
    inside = {id(n) for n in cone}
    reads = {id(v): v for n in cone for v in n.operands
             if not v.is_parameter and (v.producer is None or id(v.producer) not in inside)}
    frontier, seen = [keep], set()
    for _ in range(depth):
        for v in frontier:
            if id(v) in reads:
                return v
        seen |= {id(v) for v in frontier}
        frontier = [w for v in frontier if v.producer is not None for w in v.producer.operands
                    if not w.is_parameter and id(w) not in seen]
    return None


def _residual(add: Node, position: dict[int, int]) -> Block | None:
    out = add.result
    if len(add.operands) != 2 or not out.dtype.is_float:
        return None
    sides = []
    for b in (0, 1):
        branch, keep = add.operands[b], add.operands[1 - b]
        if branch is keep or branch.type != out.type or keep.type != out.type or keep.is_parameter:
            continue
        cone = _exclusive_cone(branch, add, position)
        macs = sum(_macs(n) for n in cone) if cone is not None else 0
        if macs > 0:  # the branch holds a layer
            entry = _entry(cone, keep)  # type: ignore[arg-type]
            if entry is not None:
                sides.append((macs, b, cone, entry))
    if not sides:
        return None
    macs, b, cone, entry = max(sides, key=lambda s: s[0])
    keep = add.operands[1 - b]
    kind = "residual" if entry is keep else "projection"
    return Block(_name(cone), kind, add, add.operands[b], keep, [*cone, add], macs, entry)


def _plain(node: Node, inside: set[int], position: dict[int, int]) -> Block | None:
    macs = _macs(node)
    if macs == 0 or id(node) in inside or not node.operands or node.operands[0].type != node.result.type:
        return None
    chain, last = [node], node
    while True:
        users = last.result.users
        if len(users) != 1 or last.result.is_graph_output or len(last.result.uses) != 1:
            break
        nxt = users[0]
        if nxt.op not in UNARY_FOLLOWERS or nxt.operands[0] is not last.result or nxt.result.type != node.result.type \
                or any(not v.is_parameter for v in nxt.operands[1:]) or id(nxt) in inside:
            break
        chain.append(nxt)
        last = nxt
    return Block(_name(chain), "plain", last, None, node.operands[0], chain, macs, node.operands[0])


def find_blocks(graph: Graph, plain: bool = False) -> list[Block]:
    """The removable units of `graph`, in graph order of their outputs; names made unique."""
    position = {id(n): i for i, n in enumerate(graph)}
    blocks = [b for n in graph if n.op == "add" and (b := _residual(n, position)) is not None]
    if plain:
        inside = {id(n) for b in blocks for n in b.nodes}
        for n in graph:
            unit = _plain(n, inside, position)
            if unit is not None:
                blocks.append(unit)
                inside |= {id(m) for m in unit.nodes}
        blocks.sort(key=lambda b: position[id(b.merge)])
    counts: dict[str, int] = {}
    for b in blocks:
        counts[b.name] = counts.get(b.name, 0) + 1
    for b in blocks:  # a transformer layer's attention and FFN share a prefix: name their modules
        if counts[b.name] > 1:
            depth = len(b.name.split(".")) if b.name else 0
            parts = dict.fromkeys(n.loc.split(".")[depth] for n in b.nodes if n.loc and len(n.loc.split(".")) > depth)
            b.name = f"{b.name}[{'+'.join(parts)}]" if parts else b.name
    seen: dict[str, int] = {}
    for b in blocks:
        seen[b.name] = seen.get(b.name, 0) + 1
        if seen[b.name] > 1:
            b.name = f"{b.name}#{seen[b.name]}"
    return blocks


def next_block(blocks: list[Block], i: int) -> bool:
    """Whether block i + 1 starts from block i's output (directly or through the norms and
    activations between them): a contiguous run of the residual stream."""
    if i + 1 >= len(blocks):
        return False
    v, target = blocks[i].output, blocks[i + 1].input
    for _ in range(3):
        if v is target:
            return True
        followers = [u for u in v.users if u.op in UNARY_FOLLOWERS and u.result.type == v.type]
        if len(followers) != 1:
            return False
        v = followers[0].result
    return v is target


class Blocks(Analysis):
    """The cached block analysis (remove-blocks reads it)."""

    name = "blocks"

    @classmethod
    def compute(cls, graph: Graph, ctx: Any) -> list[Block]:
        return find_blocks(graph)
