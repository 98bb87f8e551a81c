"""Channel dependency analysis: which channels of which tensors must be removed together.

Every int-sized axis of every tensor is a row of elements, one per index. Each op's ChannelRule says
which elements of its operands and results are the same channel seen twice (a conv's output channel
c is row c of its weight, of its bias, of the batch norm after it, of the residual add ...); a
union-find joins them. A connected component is one removable *unit*: a channel, or a whole
attention head, conv group or norm group where the ops tie those channels together. Units that
touch the same tensors form a *group*, what a user sees ("the 64 output channels of layer1.0.conv1").

A unit can be removed when it holds a producer (an output row of a conv, linear or matmul weight)
and touches nothing frozen: graph inputs and outputs, axes an op reduces or normalizes over, axes a
reshape folds inside another, and every axis of an op whose rule is OPAQUE. Removing such a unit
removes each of its elements (weight rows and columns, bias entries, norm parameters) and leaves
every other computation as it was, which is what makes the masked-model contract hold.

Only axes whose size is an int are tracked: a symbolic dim (batch, sequence) never couples."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value
from graphopt.ops import ChannelRule, get_op
from graphopt.pipeline.passes import Analysis

Key = tuple[int, int]  # (id(value), axis)
MAX_RESHAPE_BLOCK = 1 << 24  # elements a merged/split reshape block may map one by one


@dataclass
class Members:
    """The indices each unit of a group holds on one (value, axis): unit u holds
    `flat[offsets[u]:offsets[u + 1]]`. One flat array per axis, since the pruning searches sum and
    gather over every unit hundreds of times."""

    flat: np.ndarray
    offsets: np.ndarray

    def of(self, unit: int) -> np.ndarray:
        return self.flat[self.offsets[unit]:self.offsets[unit + 1]]

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, units: Sequence[int]) -> np.ndarray:
        """The indices the given units hold, together."""
        if not len(units):
            return self.flat[:0]
        return np.concatenate([self.of(u) for u in units])

    def sums(self, per_index: np.ndarray) -> np.ndarray:
        """`per_index` summed over each unit's indices."""
        return np.add.reduceat(per_index[self.flat], self.offsets[:-1])


@dataclass
class ChannelGroup:
    """Units that touch the same tensors. `producers` are the layers whose output channels the
    group's units are; `frozen` says why the group cannot be pruned (None when it can)."""

    members: dict[Key, Members]  # every unit of a prunable group; the first only of a frozen one
    producers: list[Node]
    frozen: str | None
    width: int = 1  # channels of the producers' output axis in one unit (a head's size, a conv group's)
    size: int = 0  # how many units

    @property
    def keys(self) -> list[Key]:
        return list(self.members)

    @property
    def name(self) -> str:
        locs = list(dict.fromkeys(n.loc or n.op for n in self.producers))
        return ", ".join(locs[:3]) + (f" (+{len(locs) - 3})" if len(locs) > 3 else "") if locs else "(no producer)"

    @property
    def prunable(self) -> bool:
        return self.frozen is None and bool(self.producers)


@dataclass
class ChannelAnalysis:
    """The groups of `graph` and, for each parameter axis the units touch, its role: `produce`
    (output rows of a layer), `consume` (a layer's input columns: what the masked model zeroes),
    `scale` (a norm's multiplier), `follow` (biases, norm statistics)."""

    graph: Graph
    groups: list[ChannelGroup]
    roles: dict[Key, str] = field(default_factory=dict)
    values: dict[int, Value] = field(default_factory=dict)

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]


class _Elements:
    """The elements of every tracked (value, axis) and the edges between them; `roots()` joins them
    at the end (connected components in numpy, since big models have millions of elements)."""

    def __init__(self) -> None:
        self.count = 0
        self.base: dict[Key, int] = {}
        self.keys: list[Key] = []
        self.sizes: list[int] = []
        self.edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.frozen: list[tuple[range, str]] = []
        self.values: dict[int, Value] = {}

    def row(self, value: Value, axis: int) -> range | None:
        """The element ids of `value`'s `axis`, or None when its size is not an int."""
        if not -value.type.rank <= axis < value.type.rank:
            return None
        axis %= value.type.rank
        size = value.shape[axis]
        if not isinstance(size, int):
            return None
        key = (id(value), axis)
        if key not in self.base:
            self.base[key] = self.count
            self.values[id(value)] = value
            self.count += size
            self.keys.append(key)
            self.sizes.append(size)
        start = self.base[key]
        return range(start, start + size)

    def union(self, a: np.ndarray | range, b: np.ndarray | range) -> None:
        """Element a[i] is element b[i]."""
        self.edges.append((np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)))

    def tie(self, a: Value, axis_a: int, b: Value, axis_b: int) -> None:
        """Index i of one axis is index i of the other (sizes must match; else both freeze)."""
        ra, rb = self.row(a, axis_a), self.row(b, axis_b)
        if ra is None or rb is None:
            return
        if len(ra) != len(rb):
            self.freeze(a, [axis_a], "axes of different sizes meet")
            self.freeze(b, [axis_b], "axes of different sizes meet")
            return
        self.union(ra, rb)

    def tie_blocks(self, a: Value, axis_a: int, b: Value, axis_b: int, blocks: int) -> None:
        """Both axes split into `blocks` equal blocks; block k of each is one unit (conv and norm groups)."""
        firsts = []
        for value, axis in ((a, axis_a), (b, axis_b)):
            row = self.row(value, axis)
            if row is None or len(row) % blocks:
                continue
            size = len(row) // blocks
            self.union(row, row.start + np.arange(len(row)) // size * size)
            firsts.append(row.start + np.arange(blocks) * size)
        if len(firsts) == 2:
            self.union(*firsts)

    def freeze(self, value: Value, axes: Sequence[int] | None, why: str) -> None:
        for axis in range(value.type.rank) if axes is None else axes:
            row = self.row(value, axis)
            if row:
                self.frozen.append((row, why))

    def roots(self) -> np.ndarray:
        """Each element's component, named by its smallest element: roots hook onto the smaller
        root across every edge that still joins two components, then pointer jumping flattens."""
        parent = np.arange(self.count, dtype=np.int64)
        a = np.concatenate([e[0] for e in self.edges]) if self.edges else parent[:0]
        b = np.concatenate([e[1] for e in self.edges]) if self.edges else parent[:0]
        while a.size:
            ra, rb = parent[a], parent[b]
            apart = ra != rb
            if not apart.any():
                break
            a, b, ra, rb = a[apart], b[apart], ra[apart], rb[apart]
            np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
            while True:
                jumped = parent[parent]
                if np.array_equal(jumped, parent):
                    break
                parent = jumped
        return parent


# --- how each ChannelRule couples an op's tensors -------------------------------------------------------------
Coupler = Callable[[_Elements, Node], None]


def _broadcast(el: _Elements, out: Value, operand: Value) -> None:
    """Right-aligned axes: equal sizes are the same elements; a size-1 operand axis broadcasts."""
    for k in range(1, min(out.type.rank, operand.type.rank) + 1):
        if operand.shape[-k] == 1 and out.shape[-k] != 1:
            continue
        el.tie(out, -k, operand, -k)


def _elementwise(el: _Elements, node: Node) -> None:
    for out in node.results:
        for v in node.operands:
            _broadcast(el, out, v)


def _conv(el: _Elements, node: Node) -> None:
    x, w, *bias = node.operands
    out = node.result
    groups = node.attrs.get("groups", 1)
    transposed = "transpose" in node.op
    out_axis = 1 if transposed else 0
    el.tie(out, 0, x, 0)
    el.tie(out, 1, w, out_axis)
    for b in bias:
        el.tie(out, 1, b, 0)
    el.freeze(w, range(2, w.type.rank), "kernel axes")
    if groups == 1:
        el.tie(x, 1, w, 1 - out_axis)
    elif transposed:
        el.freeze(x, [1], "grouped transposed conv")
        el.freeze(out, [1], "grouped transposed conv")
    else:
        el.tie_blocks(x, 1, out, 1, groups)  # a whole group is the unit; `groups` shrinks with it
        el.freeze(w, [1], "a grouped conv's input axis is shared by its groups")
    el.freeze(x, range(2, x.type.rank), "spatial axes")
    el.freeze(out, range(2, out.type.rank), "spatial axes")


def _linear(el: _Elements, node: Node) -> None:
    x, w, *bias = node.operands
    out = node.result
    el.tie(out, -1, w, 0)
    for b in bias:
        el.tie(out, -1, b, 0)
    el.tie(x, -1, w, 1)
    for k in range(2, out.type.rank + 1):
        el.tie(out, -k, x, -k)


def _norm(el: _Elements, node: Node) -> None:
    x, *params = node.operands
    out = node.result
    for axis in range(out.type.rank):
        el.tie(out, axis, x, axis)
    for p in params:
        el.tie(x, 1, p, 0)
    if "num_groups" in node.attrs and x.type.rank > 1:
        el.tie_blocks(x, 1, out, 1, node.attrs["num_groups"])  # statistics per group: whole groups go


def _segments(el: _Elements, whole: Value, parts: Sequence[Value], dim: int, what: str) -> None:
    """`whole` is `parts` laid end to end along `dim` (concat's result, split's operand): each part's
    channel i is `whole`'s channel offset + i, and the other axes are the same elements."""
    for part in parts:
        for axis in range(whole.type.rank):
            if axis != dim:
                el.tie(whole, axis, part, axis)
    whole_row, rows = el.row(whole, dim), [el.row(part, dim) for part in parts]
    if whole_row is None or any(row is None for row in rows):
        for v in (whole, *parts):
            el.freeze(v, [dim], f"{what} along a symbolic axis")
        return
    offset = 0
    for row in rows:
        el.union(row, whole_row[offset:offset + len(row)])  # type: ignore[arg-type]
        offset += len(row)  # type: ignore[arg-type]


def _concat(el: _Elements, node: Node) -> None:
    _segments(el, node.result, node.operands, node.attrs["dim"] % node.result.type.rank, "concat")


def _split(el: _Elements, node: Node) -> None:
    (x,) = node.operands
    _segments(el, x, node.results, node.attrs["dim"] % x.type.rank, "split")


def reshape_blocks(src: Sequence[Any], dst: Sequence[Any]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of source axes with runs of result axes of equal size (None when they do not line
    up); size-1 axes that appear or vanish come as blocks with one side empty."""
    blocks: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) or j < len(dst):
        if i < len(src) and j < len(dst) and src[i] == dst[j]:
            blocks.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if i < len(src) and src[i] == 1:
            blocks.append(([i], []))
            i += 1
            continue
        if j < len(dst) and dst[j] == 1:
            blocks.append(([], [j]))
            j += 1
            continue
        ins, outs, a, b = [i], [j], src[i] if i < len(src) else None, dst[j] if j < len(dst) else None
        if not isinstance(a, int) or not isinstance(b, int):
            return None
        i, j = i + 1, j + 1
        while a != b:
            if a < b and i < len(src) and isinstance(src[i], int):
                a *= src[i]
                ins.append(i)
                i += 1
            elif b < a and j < len(dst) and isinstance(dst[j], int):
                b *= dst[j]
                outs.append(j)
                j += 1
            else:
                return None
        blocks.append((ins, outs))
    return blocks


def _reshape(el: _Elements, node: Node) -> None:
    (x,) = node.operands
    out = node.result
    blocks = reshape_blocks(x.shape, out.shape)
    if blocks is None:
        el.freeze(x, None, f"{node.op} whose axes do not line up")
        el.freeze(out, None, f"{node.op} whose axes do not line up")
        return
    for ins, outs in blocks:
        if len(ins) == 1 and len(outs) == 1:
            el.tie(x, ins[0], out, outs[0])
        elif len(ins) > 1 and len(outs) > 1:  # [2, 3] -> [3, 2]: no axis survives whole
            el.freeze(x, ins, f"{node.op} regroups these axes")
            el.freeze(out, outs, f"{node.op} regroups these axes")
        elif ins and outs:
            _fold(el, node, x, ins, out, outs)


def _fold(el: _Elements, node: Node, x: Value, ins: list[int], out: Value, outs: list[int]) -> None:
    """Axes merged into one (a flatten's C, H, W) or one split into several (C into heads and head
    dims): channel i of the chosen axis of the many-axes side is the strided set of flat indices
    with that coordinate; the side's other axes are barriers. The outermost axis is chosen (a
    flatten's C, a split's heads) unless it is lost later (indexed away like the q/k/v selector of
    a packed attention projection, or folded inside another axis like the group axis of a channel
    shuffle), then the next one."""
    many, many_axes, one, one_axis = (x, ins, out, outs[0]) if len(ins) > 1 else (out, outs, x, ins[0])
    sizes = [many.shape[a] for a in many_axes]
    pos = 0
    if many is out:
        while pos + 1 < len(many_axes) and (sizes[pos] == 1 or _lost_later(out, many_axes[pos])):
            pos += 1
    el.freeze(many, [a for i, a in enumerate(many_axes) if i != pos], f"an axis {node.op} folds inside another")
    total = math.prod(sizes)  # type: ignore[arg-type]
    row_many, row_one = el.row(many, many_axes[pos]), el.row(one, one_axis)
    if row_many is None or row_one is None or total > MAX_RESHAPE_BLOCK:
        el.freeze(many, many_axes, f"{node.op} of a block too large to map")
        el.freeze(one, [one_axis], f"{node.op} of a block too large to map")
        return
    inner = math.prod(sizes[pos + 1:])  # type: ignore[arg-type]
    coordinate = (np.arange(total) // inner) % sizes[pos]  # type: ignore[operator]
    el.union(row_one, row_many.start + coordinate)


def _lost_later(value: Value, axis: int, depth: int = 8) -> bool:
    """True when every path from `value` loses `axis` as a channel axis: an op indexes it away (the
    q/k/v selector of a packed projection) or a later reshape folds it inside another axis (the
    group axis of a channel shuffle), passing only through ops that move axes around."""
    users = value.users
    if depth == 0 or not users or value.is_graph_output:
        return False
    for user in users:
        rule = get_op(user.op, user.loc).channel
        if rule is ChannelRule.REDUCE and "dim" in user.attrs and user.attrs["dim"] % value.type.rank == axis:
            continue
        if rule is ChannelRule.PERMUTE:
            moved = [d % value.type.rank for d in user.attrs["dims"]].index(axis)
        elif rule in (ChannelRule.RESHAPE, ChannelRule.ELEMENTWISE) and len(user.operands) == 1:
            blocks = reshape_blocks(value.shape, user.result.shape) or []
            block = next(((i, o) for i, o in blocks if axis in i), None)
            if block is not None and len(block[0]) > 1 and len(block[1]) == 1:  # merged here
                if block[0][0] == axis:
                    return False
                continue
            moved = block[1][0] if block is not None and block[0] == [axis] and len(block[1]) == 1 else -1
            if moved < 0:
                return False
        else:
            return False
        if not _lost_later(user.result, moved, depth - 1):
            return False
    return True


def _permute(el: _Elements, node: Node) -> None:
    for i, d in enumerate(node.attrs["dims"]):
        el.tie(node.result, i, node.operands[0], d)


def _reduce(el: _Elements, node: Node) -> None:
    (x,) = node.operands
    dims = node.attrs.get("dims", [node.attrs["dim"]] if "dim" in node.attrs else None)
    reduced = set(range(x.type.rank)) if dims is None else {d % x.type.rank for d in dims}
    el.freeze(x, sorted(reduced), f"{node.op} reduces it")
    kept = [a for a in range(x.type.rank) if a not in reduced or node.attrs.get("keepdim")]
    for out_axis, axis in enumerate(kept):
        if axis not in reduced:
            el.tie(node.result, out_axis, x, axis)


def _normalize(el: _Elements, node: Node) -> None:
    x, *params = node.operands
    rank = x.type.rank
    if "normalized_shape" in node.attrs:
        axes = list(range(rank - len(node.attrs["normalized_shape"]), rank))
    else:
        axes = [d % rank for d in node.attrs["dims"]] if "dims" in node.attrs else [node.attrs["dim"] % rank]
    why = f"{node.op} normalizes over it"
    for v in [x, *node.results]:
        el.freeze(v, axes, why)
    for p in params:
        el.freeze(p, None, why)
    for axis in range(rank):
        if axis not in axes:
            el.tie(node.result, axis, x, axis)


def _batch_axes(el: _Elements, out: Value, operands: Sequence[Value], trailing: int) -> None:
    for v in operands:
        for k in range(trailing + 1, min(out.type.rank, v.type.rank) + 1):
            if v.shape[-k] == 1 and out.shape[-k] != 1:
                continue
            el.tie(out, -k, v, -k)


def _matmul(el: _Elements, node: Node) -> None:
    a, b = node.operands
    out = node.result
    if a.type.rank < 2 or b.type.rank < 2:
        for v in (a, b, out):
            el.freeze(v, None, "matmul of a vector")
        return
    _batch_axes(el, out, [a, b], 2)
    el.tie(out, -2, a, -2)
    el.tie(out, -1, b, -1)
    el.tie(a, -1, b, -2)


def _attention(el: _Elements, node: Node) -> None:
    q, k, v, *mask = node.operands
    out = node.result
    _batch_axes(el, out, [q, k, v, *mask], 2)  # a mask or position bias with a head axis loses heads too
    el.tie(out, -2, q, -2)
    el.tie(k, -2, v, -2)
    el.tie(out, -1, v, -1)
    for m in mask:
        if m.type.rank >= 2:
            for axis, source in ((-2, q), (-1, k)):
                if m.shape[axis] != 1:
                    el.tie(m, axis, source, -2)
    el.freeze(q, [-1], "the attention scale depends on it")
    el.freeze(k, [-1], "the attention scale depends on it")


def _embedding(el: _Elements, node: Node) -> None:
    idx, table = node.operands
    out = node.result
    el.tie(out, -1, table, 1)
    for axis in range(idx.type.rank):
        el.tie(out, axis, idx, axis)


def _opaque(el: _Elements, node: Node) -> None:
    for v in [*node.operands, *node.results]:
        el.freeze(v, None, f"{node.op} is opaque to pruning")


COUPLERS: dict[ChannelRule, Coupler] = {
    ChannelRule.ELEMENTWISE: _elementwise, ChannelRule.CONV: _conv, ChannelRule.LINEAR: _linear,
    ChannelRule.NORM: _norm, ChannelRule.CONCAT: _concat, ChannelRule.SPLIT: _split,
    ChannelRule.RESHAPE: _reshape, ChannelRule.PERMUTE: _permute, ChannelRule.REDUCE: _reduce,
    ChannelRule.NORMALIZE: _normalize, ChannelRule.MATMUL: _matmul, ChannelRule.ATTENTION: _attention,
    ChannelRule.EMBEDDING: _embedding, ChannelRule.OPAQUE: _opaque,
}


def _parameter_roles(node: Node, rule: ChannelRule) -> list[tuple[Value, int, str]]:
    """(parameter, axis, role) for the weights whose rows a unit removes."""
    params = [(i, v) for i, v in enumerate(node.operands) if v.is_parameter]
    roles = []
    for i, v in params:
        if rule is ChannelRule.CONV and i == 1:
            out_axis = 1 if "transpose" in node.op else 0
            roles += [(v, out_axis, "produce"), (v, 1 - out_axis, "consume")]
        elif rule is ChannelRule.LINEAR and i == 1:
            roles += [(v, 0, "produce"), (v, 1, "consume")]
        elif rule is ChannelRule.MATMUL and i == 1 and v.type.rank >= 2:
            roles += [(v, v.type.rank - 1, "produce"), (v, v.type.rank - 2, "consume")]
        elif rule is ChannelRule.MATMUL and i == 0 and v.type.rank >= 2:
            roles += [(v, v.type.rank - 2, "produce"), (v, v.type.rank - 1, "consume")]
        elif rule is ChannelRule.EMBEDDING and i == 1:
            roles.append((v, 1, "produce"))
        elif rule is ChannelRule.NORM and i == {"batch_norm": 3, "group_norm": 1}.get(node.op):
            roles.append((v, 0, "scale"))
        elif v.type.rank:
            roles += [(v, axis, "follow") for axis in range(v.type.rank)]
    return roles


def analyze_channels(graph: Graph) -> ChannelAnalysis:
    """The channel groups of `graph` (see the module docstring)."""
    el = _Elements()
    roles: dict[Key, str] = {}
    producers: dict[Key, tuple[range, Node]] = {}  # a producing weight row -> its elements, its layer
    for v in graph.inputs:
        el.freeze(v, None, "graph input")
    for node in graph:
        rule = get_op(node.op, node.loc).channel
        COUPLERS[rule](el, node)
        for p, axis, role in _parameter_roles(node, rule):
            row = el.row(p, axis)
            if row is None:
                continue
            key = (id(p), axis % p.type.rank)
            if roles.get(key) not in ("produce", "consume"):
                roles[key] = role
            if role == "produce":
                producers.setdefault(key, (row, node))
    for v in graph.outputs:
        el.freeze(v, None, "graph output")
    return ChannelAnalysis(graph, _groups(el, producers), roles, el.values)


def _elements_of(rows: Sequence[range]) -> tuple[np.ndarray, np.ndarray]:
    """Every element of `rows`, and which row it came from."""
    elements = np.concatenate([np.arange(r.start, r.stop) for r in rows])
    return elements, np.repeat(np.arange(len(rows)), [len(r) for r in rows])


def _groups(el: _Elements, producers: dict[Key, tuple[range, Node]]) -> list[ChannelGroup]:
    """Components that hold a producer, grouped by the tensors they touch (components without one
    can never be removed: batch, spatial and sequence axes, input channels). Only groups that can be
    pruned keep the indices of each unit; frozen ones keep their size for the report. Everything
    here is array work over the elements: big models have millions of them."""
    if not producers:
        return []
    roots = el.roots()
    produced, maker = _elements_of([row for row, _ in producers.values()])
    kinds = np.unique(roots[produced])  # the components that hold a producer, by root
    owner = np.repeat(np.arange(len(el.keys)), el.sizes)
    local = np.arange(len(roots)) - np.asarray([el.base[k] for k in el.keys], dtype=np.int64)[owner]
    chosen = np.flatnonzero(np.isin(roots, kinds))
    order = chosen[np.lexsort((local[chosen], owner[chosen], roots[chosen]))]  # by root, then key, then index
    pair = roots[order] * len(el.keys) + owner[order]
    pair_starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    pair_ends = np.r_[pair_starts[1:], len(order)]
    pair_owners = owner[order[pair_starts]]
    root_starts = np.flatnonzero(np.r_[True, np.diff(roots[order[pair_starts]]) != 0])  # component i's pairs
    root_ends = np.r_[root_starts[1:], len(pair_starts)]
    salt = np.random.default_rng(0).integers(0, 2**63, len(el.keys), dtype=np.uint64)
    with np.errstate(over="ignore"):
        signature = np.add.reduceat(salt[pair_owners], root_starts)  # the set of tensors a component touches
    _, first_seen, group_of = np.unique(signature, return_index=True, return_inverse=True)
    group_of = np.argsort(np.argsort(first_seen))[group_of]  # groups numbered in order of appearance
    n_groups = len(first_seen)

    layers = np.unique(group_of[np.searchsorted(kinds, roots[produced])] * len(producers) + maker)
    nodes = [node for _, node in producers.values()]
    layers_of: list[list[Node]] = [[] for _ in range(n_groups)]
    for code in layers.tolist():
        layers_of[code // len(producers)].append(nodes[code % len(producers)])
    first_freeze = np.full(n_groups, len(el.frozen))  # the first freeze that touches each group
    if el.frozen:
        frozen, why = _elements_of([row for row, _ in el.frozen])
        hit = np.isin(roots[frozen], kinds)
        np.minimum.at(first_freeze, group_of[np.searchsorted(kinds, roots[frozen[hit]])], why[hit])

    def members(components: np.ndarray) -> dict[Key, Members]:
        """Each key's indices, unit by unit: components with one signature list the same keys in
        the same order, so key k of component i is pair root_starts[i] + k."""
        first = root_starts[components[0]]
        n_keys, n_units = root_ends[components[0]] - first, len(components)
        pairs = (root_starts[components][None, :] + np.arange(n_keys)[:, None]).ravel()  # key-major
        starts, lengths = pair_starts[pairs], pair_ends[pairs] - pair_starts[pairs]
        offsets = np.r_[0, np.cumsum(lengths)]
        flat = local[order[np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])]]
        out = {}
        for k in range(n_keys):
            span = offsets[k * n_units:(k + 1) * n_units + 1]
            out[el.keys[pair_owners[first + k]]] = Members(flat[span[0]:span[-1]], span - span[0])
        return out

    by_group = np.argsort(group_of, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(group_of, minlength=n_groups))]
    groups = []
    for g in range(n_groups):
        components = by_group[bounds[g]:bounds[g + 1]]
        why = el.frozen[first_freeze[g]][1] if first_freeze[g] < len(el.frozen) else None
        held = members(components if why is None else components[:1])
        width = max(int(m.offsets[1]) for m in held.values())
        groups.append(ChannelGroup(held, layers_of[g], why, width, len(components)))
    return groups


class ChannelGroups(Analysis):
    """The cached channel analysis (structural pruning reads it)."""

    name = "channel-groups"

    @classmethod
    def compute(cls, graph: Graph, ctx: Any) -> ChannelAnalysis:
        return analyze_channels(graph)
