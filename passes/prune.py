"""prune: structural pruning of channels, attention heads and conv groups on the channel analysis.

The channel-groups analysis (graphopt.analysis.channels) finds the units that must go together;
this pass scores each unit (`criterion`), picks how many units each group keeps (`ratio` of each
group, or the `macs` fraction of the whole model, `uniform` per group or `global` across groups,
kept channel counts rounded up to `round-to`), and rewrites the graph: every parameter in a unit
loses those rows, every reshape target, conv group count and norm group count shrinks with them,
and every result type is re-inferred and checked against the expected one.

Contract: masked -- the pruned graph computes exactly what the original computes with the weight
columns that read the removed channels set to zero (PruneSummary.masked lists them);
graphopt.testing.pruning checks it on generated graphs and real models."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.analysis.channels import ChannelAnalysis, ChannelGroup, ChannelGroups, Key
from graphopt.analysis.cost import graph_cost
from graphopt.analysis.latency import LatencyTable, cpu_kind, layers_ms, model_ms, random_inputs
from graphopt.errors import InternalError, OptionError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.types import TensorType
from graphopt.ops import get_op
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.report import prune_section

CRITERIA = ("l1", "l2", "bn-scale", "activation", "taylor", "random", "auto")
DATA_CRITERIA = ("activation", "taylor")


@dataclass
class GroupReport:
    """One channel group: its layers, channels before and after, and mean importance, or why it
    was left alone."""

    name: str
    channels_before: int
    channels_after: int
    units: int
    importance: float | None = None
    left_alone: str | None = None


@dataclass
class PruneSummary:
    """What prune did: each group's report, the cost before and after, and `masked`, the weight
    columns (parameter index in the original graph, axis, indices) the masked model zeroes."""

    spec: str
    groups: list[GroupReport]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    masked: list[tuple[int, int, list[int]]] = field(default_factory=list)
    kept: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # parameter name -> axis -> kept indices
    latency_ms: tuple[float, float] | None = None  # latency=: the whole model measured before and after
    note: str = ""

    def section(self, report: Path) -> list[str]:
        return prune_section(report, self)

    def line(self) -> str:
        pruned = sum(1 for g in self.groups if g.channels_after < g.channels_before)
        alone = sum(1 for g in self.groups if g.left_alone)
        share = self.macs_after / max(self.macs_before, 1)
        latency = ""
        if self.latency_ms is not None:
            before, after = self.latency_ms
            latency = f"; latency {before:.2f} -> {after:.2f} ms ({after / before:.1%})"
        return (f"prune: MACs {self.macs_before:,} -> {self.macs_after:,} ({share:.1%}), "
                f"parameters {self.params_before:,} -> {self.params_after:,}{latency}; {pruned} group(s) pruned, "
                f"{alone} left alone" + (f"; {self.note}" if self.note else ""))


def default_round_to() -> int:
    """Channel counts the CPU's vector width runs without a remainder: 16 floats with AVX-512, else 8."""
    return 16 if cpu_kind().startswith("avx512") else 8


@register_pass
@dataclass(frozen=True)
class Prune(Pass):
    """Structural pruning: remove the least important channels, heads and conv groups."""

    name = "prune"
    contract = Contract("masked", idempotent=False)
    ratio: float | None = option(None, low=0, high=1, low_open=True)  # of each group's units
    macs: float | None = option(None, low=0, high=1, low_open=True)  # fraction of the model's MACs to keep
    macs_of: str = option("pass", choices=("pass", "pipeline"))  # of the model this pass or the pipeline received
    latency: float | None = option(None, low=0, high=1, low_open=True)  # fraction of its ONNX Runtime latency to keep
    threads: int = option(1, low=1)  # ONNX Runtime threads the latency table is measured with
    criterion: str = option("l1", choices=CRITERIA)
    allocation: str = option("uniform", choices=("uniform", "global"))
    round_to: int = option(0, low=0)  # 0: the machine's vector width (16 with AVX-512, else 8)
    min_channels: int = option(1, low=1)
    heads: bool = True  # whole attention heads (and conv groups) may go
    skip: tuple[str, ...] = ()
    seed: int = option(0, low=0)
    samples: int = option(8, low=1)  # calibration samples the data criteria and `auto` use

    def __post_init__(self) -> None:
        super().__post_init__()
        if sum(v is not None for v in (self.ratio, self.macs, self.latency)) != 1:
            raise OptionError("prune: give exactly one of ratio= (of each group), macs= or latency= (of the model "
                              "to keep)")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        analysis: ChannelAnalysis = ctx.analysis(ChannelGroups, graph)
        cost = graph_cost(graph)
        candidates, reports = self._candidates(analysis)
        samples = self._samples(ctx)
        criteria = [self.criterion] if self.criterion != "auto" else \
            [c for c in CRITERIA if c not in ("auto", "random") and (samples or c not in DATA_CRITERIA)]
        shapes = LayerShapes(graph, analysis) if self.ratio is None else None
        table = LatencyTable(self.threads) if self.latency is not None else None
        trials, measured = [], {}
        for criterion in criteria:
            evidence = Evidence.gather(graph, analysis, criterion, samples)
            scores = {id(g): self._scores(g, analysis, criterion, evidence) for g in candidates}
            if self.ratio is not None:
                removed = self._removal(candidates, scores, self.ratio)
            elif table is None:
                whole = cost.macs if self.macs_of == "pass" else ctx.initial_macs
                removed = self._fit(candidates, scores, shapes.macs, whole * self.macs)  # type: ignore[union-attr,operator]
            else:
                removed, measured[criterion] = self._fit_latency(graph, analysis, candidates, scores, shapes, table)  # type: ignore[arg-type]
            trials.append((criterion, scores, removed))
        if table is not None:
            table.save()
        choice = ""
        if len(trials) > 1:
            errors = [_output_error(graph, analysis, removed, samples) for _, _, removed in trials]
            best = int(np.argmin(errors))
            choice = "; auto chose " + trials[best][0] + " (relative output error: " + ", ".join(
                f"{c} {e:.3g}" for (c, _, _), e in zip(trials, errors)) + ")"
            trials = [trials[best]]
        _, scores, removed = trials[0]
        kept = _kept_indices(analysis, removed)
        summary = PruneSummary(self.spec() + choice, [], cost.macs, cost.macs, cost.params, cost.params,
                               _masked_columns(graph, analysis, kept), _kept_parameters(graph, kept))
        for g in candidates:
            gone = removed.get(id(g), [])
            n = g.size
            summary.groups.append(GroupReport(g.name, n * g.width, (n - len(gone)) * g.width, n,
                                              float(np.mean(scores[id(g)])) if n else None))
        summary.groups += reports
        if self.latency is not None and any(removed.values()):
            summary.latency_ms = measured[trials[0][0]]
            if summary.latency_ms[1] >= summary.latency_ms[0]:  # never slower than unpruned
                summary.note = "left unpruned: the pruned model measured no faster"
                return PassResult(False, details=summary)
        if not any(removed.values()) or not ctx.allow(f"prune {sum(map(bool, removed.values()))} group(s)"):
            return PassResult(False, details=summary)
        apply_pruning(graph, kept)
        after = graph_cost(graph)
        summary.macs_after, summary.params_after = after.macs, after.params
        return PassResult(True, details=summary)

    # --- which groups, how important ------------------------------------------------------------------
    def _candidates(self, analysis: ChannelAnalysis) -> tuple[list[ChannelGroup], list[GroupReport]]:
        candidates, reports = [], []
        for g in analysis.groups:
            if not g.producers:
                continue
            n = g.size
            why = g.frozen
            if why is None and any(p.named(self.skip) for p in g.producers):
                why = "skip="
            if why is None and g.width > 1 and not self.heads:
                why = "heads=false"
            if why is None and n <= 1:
                why = "a single unit"
            if why is None:
                candidates.append(g)
            else:
                reports.append(GroupReport(g.name, n * g.width, n * g.width, n, left_alone=why))
        return candidates, reports

    def _samples(self, ctx: PassContext) -> list[tuple[np.ndarray, ...]]:
        return ctx.samples(f"prune{{criterion={self.criterion}}}", self.samples,
                           required=self.criterion in DATA_CRITERIA)

    def _scores(self, group: ChannelGroup, analysis: ChannelAnalysis, criterion: str, evidence: Evidence) -> np.ndarray:
        """One score per unit (higher is more important)."""
        if criterion == "random":
            return np.random.default_rng([self.seed, group.size]).random(group.size)
        if criterion == "activation":
            keys = [k for k in group.keys if k in evidence.per_index]
        else:
            wanted = ("scale",) if criterion == "bn-scale" else ("produce", "consume")
            keys = [k for k in group.keys if analysis.roles.get(k) in wanted]
            if not keys and criterion == "bn-scale":  # no norm in the group: magnitude instead
                keys = [k for k in group.keys if analysis.roles.get(k) in ("produce", "consume")]
        scores = np.zeros(group.size)
        for key in keys:
            per_index = evidence.index_sums(key, analysis, criterion)
            if per_index is not None:
                scores += group.members[key].sums(per_index)
        return np.sqrt(scores) if criterion == "l2" else scores

    # --- how many units each group keeps --------------------------------------------------------------
    def _step(self, group: ChannelGroup) -> int:
        """The channel-count step of `group`: round-to, or by default the machine's vector width,
        halved for groups too small to lose one such step."""
        if self.round_to:
            return self.round_to
        step = default_round_to()
        while step > 1 and 2 * step > group.size:
            step //= 2
        return step

    def _keep_count(self, group: ChannelGroup, keep: int) -> int:
        n = group.size
        round_to = self._step(group)
        if group.width == 1 and round_to > 1:
            keep = math.ceil(keep / round_to) * round_to
        return max(1, min(n, max(keep, math.ceil(self.min_channels / group.width))))

    def _removal(self, groups: list[ChannelGroup], scores: dict[int, np.ndarray], ratio: float) -> dict[int, list[int]]:
        """For each group, the units to remove at `ratio` (the lowest scores)."""
        if self.allocation == "global":
            normalized = {k: s / max(float(s.mean()), 1e-12) for k, s in scores.items()}
            pooled = np.concatenate(list(normalized.values())) if normalized else np.zeros(0)
            threshold = np.quantile(pooled, ratio) if pooled.size else 0.0
            keeps = {id(g): int((normalized[id(g)] > threshold).sum()) for g in groups}
        else:
            keeps = {id(g): g.size - math.floor(ratio * g.size) for g in groups}
        removed = {}
        for g in groups:
            keep = self._keep_count(g, keeps[id(g)])
            order = np.argsort(scores[id(g)], kind="stable")
            removed[id(g)] = sorted(order[: g.size - keep].tolist())
        return removed

    def _fit(self, groups: list[ChannelGroup], scores: dict[int, np.ndarray],
             cost: Callable[[dict[int, list[int]]], float], budget: float, max_checks: int = 400) -> dict[int, list[int]]:
        """The smallest ratio whose pruned model's `cost` (MACs, estimated latency) fits `budget`
        (bisection: the cost falls with the ratio), then units given back while it still fits."""
        lo, hi = 0.0, 1.0
        best = self._removal(groups, scores, 1.0 - 1e-9)
        for _ in range(20):
            mid = (lo + hi) / 2
            removal = self._removal(groups, scores, mid)
            if cost(removal) <= budget:
                best, hi = removal, mid
            else:
                lo = mid
        return self._fill(groups, scores, best, cost, budget, max_checks)

    def _fit_latency(self, graph: Graph, analysis: ChannelAnalysis, groups: list[ChannelGroup],
                     scores: dict[int, np.ndarray], shapes: LayerShapes,
                     table: LatencyTable) -> tuple[dict[int, list[int]], tuple[float, float]]:
        """Fit the summed layer latencies, then measure the whole pruned model: the layers are not
        all of it (pooling, adds, memory traffic), so the table's budget is corrected by the
        measured ratio until the model lands within 2% of what was asked (three tries; the closest
        wins). Returns the removal and the measured milliseconds before and after."""
        estimate = partial(shapes.latency_ms, table)
        budget = estimate({}) * self.latency  # type: ignore[operator]
        inputs = random_inputs(graph)
        base_ms = model_ms(graph, inputs, self.threads)
        best: tuple[dict[int, list[int]], float] | None = None
        for _ in range(3):
            removed = self._fit(groups, scores, estimate, budget, max_checks=120)
            ms = model_ms(_pruned_clone(graph, _kept_indices(analysis, removed)), inputs, self.threads)
            miss = abs(ms / base_ms - self.latency)  # type: ignore[operator]
            if best is None or miss < abs(best[1] / base_ms - self.latency):  # type: ignore[operator]
                best = (removed, ms)
            if miss <= 0.02 * self.latency or not any(removed.values()):  # type: ignore[operator]
                break
            budget *= self.latency * base_ms / ms  # type: ignore[operator]
        return best[0], (base_ms, best[1])  # type: ignore[index]

    def _fill(self, groups: list[ChannelGroup], scores: dict[int, np.ndarray], removal: dict[int, list[int]],
              cost: Callable[[dict[int, list[int]]], float], budget: float, max_checks: int) -> dict[int, list[int]]:
        """Give units back, one rounding step of one group at a time (its most important removed
        units first), while the model still fits the budget: the ratio's steps land below it."""
        checks, improved = 0, True
        while improved and checks < max_checks:
            improved = False
            for g in groups:
                gone = removal[id(g)]
                step = self._step(g) if g.width == 1 else 1
                if len(gone) < step or checks >= max_checks:
                    continue
                back = set(sorted(gone, key=lambda u: -scores[id(g)][u])[:step])
                candidate = {**removal, id(g): [u for u in gone if u not in back]}
                checks += 1
                if cost(candidate) <= budget:
                    removal, improved = candidate, True
        return removal


@dataclass
class Evidence:
    """What a criterion scores with beyond the weights: mean |activation| per index of each tensor
    axis a group touches (`activation`), or |weight x gradient| per parameter (`taylor`, through the
    torch backend's autograd, the loss being the outputs' mean square: no labels needed)."""

    per_index: dict[Key, np.ndarray] = field(default_factory=dict)
    weight_grad: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def gather(cls, graph: Graph, analysis: ChannelAnalysis, criterion: str,
               samples: list[tuple[np.ndarray, ...]]) -> Evidence:
        if criterion == "activation":
            return cls(per_index=_mean_abs_activations(graph, analysis, samples))
        if criterion == "taylor":
            return cls(weight_grad=_weight_times_gradient(graph, samples))
        return cls()

    def index_sums(self, key: Key, analysis: ChannelAnalysis, criterion: str) -> np.ndarray | None:
        """The criterion's quantity summed over every axis but `key`'s, one entry per index."""
        if criterion == "activation":
            return self.per_index.get(key)
        data = self.weight_grad.get(key[0]) if criterion == "taylor" else analysis.values[key[0]].data
        if data is None:
            return None
        data = np.abs(data.astype(np.float64))
        if criterion == "l2":
            data = data * data
        return data.sum(axis=tuple(a for a in range(data.ndim) if a != key[1]))


def _mean_abs_activations(graph: Graph, analysis: ChannelAnalysis,
                          samples: list[tuple[np.ndarray, ...]]) -> dict[Key, np.ndarray]:
    from graphopt.interp import Interpreter
    from graphopt.progress import progress

    wanted: dict[int, list[int]] = {}
    for g in analysis.prunable:
        for vid, axis in g.keys:
            if not analysis.values[vid].is_parameter:
                wanted.setdefault(vid, []).append(axis)
    sums: dict[Key, np.ndarray] = {}

    class Observing(Interpreter):
        def run_node(self, node: Node, args: Any) -> list[np.ndarray]:
            results = super().run_node(node, args)
            for value, array in zip(node.results, results):
                for axis in wanted.get(id(value), ()):
                    per = np.abs(array.astype(np.float64)).mean(axis=tuple(a for a in range(array.ndim) if a != axis))
                    sums[(id(value), axis)] = sums.get((id(value), axis), 0) + per
            return results

    observer = Observing(graph)
    for sample in progress(samples, len(samples), "prune: activations"):
        observer.run(*sample)
    return sums


def _weight_times_gradient(graph: Graph, samples: list[tuple[np.ndarray, ...]]) -> dict[int, np.ndarray]:
    import torch
    from graphopt.backends.torch import parameter_tensors, to_torch

    from graphopt.progress import progress

    module = to_torch(graph)
    tensors = parameter_tensors(graph, module)
    module.zero_grad()
    for sample in progress(samples, len(samples), "prune: taylor"):
        outputs = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in sample))
        outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
        loss = sum(o.float().pow(2).mean() for o in outputs if o.is_floating_point())
        loss.backward()  # type: ignore[union-attr]
    return {pid: (t.detach() * t.grad).numpy() for pid, t in tensors.items() if t.grad is not None}


def _output_error(graph: Graph, analysis: ChannelAnalysis, removed: dict[int, list[int]],
                  samples: list[tuple[np.ndarray, ...]]) -> float:
    """Mean over samples of |pruned - original| / |original| on the outputs (how `auto` compares)."""
    from graphopt.interp import interpret

    trial = _pruned_clone(graph, _kept_indices(analysis, removed))
    errors = []
    for sample in samples:
        for a, b in zip(interpret(graph, *sample), interpret(trial, *sample)):
            errors.append(float(np.linalg.norm(b - a) / max(float(np.linalg.norm(a)), 1e-30)))
    return float(np.mean(errors)) if errors else 0.0


def _kept_indices(analysis: ChannelAnalysis, removed: dict[int, list[int]]) -> dict[Key, np.ndarray]:
    """For every (value, axis) that loses elements, the indices it keeps."""
    keep: dict[Key, np.ndarray] = {}
    for g in analysis.groups:
        units = removed.get(id(g), [])
        for key, members in g.members.items() if units else ():
            if key not in keep:
                keep[key] = np.ones(analysis.values[key[0]].shape[key[1]], dtype=bool)  # type: ignore[arg-type]
            keep[key][members.take(units)] = False
    return {key: np.flatnonzero(mask) for key, mask in keep.items()}


def _kept_parameters(graph: Graph, kept: dict[Key, np.ndarray]) -> dict[str, dict[int, list[int]]]:
    axes = _by_value(kept)
    return {p.name: {axis: keep.tolist() for axis, keep in sorted(axes[id(p)].items())}
            for p in graph.parameters if id(p) in axes}


def _masked_columns(graph: Graph, analysis: ChannelAnalysis,
                    kept: dict[Key, np.ndarray]) -> list[tuple[int, int, list[int]]]:
    index = {id(p): i for i, p in enumerate(graph.parameters)}
    out = []
    for key, keep in kept.items():
        if analysis.roles.get(key) == "consume" and key[0] in index:
            size = analysis.values[key[0]].shape[key[1]]
            out.append((index[key[0]], key[1], sorted(set(range(size)) - set(keep.tolist()))))  # type: ignore[arg-type]
    return out


def _by_value(kept: dict[Key, np.ndarray]) -> dict[int, dict[int, np.ndarray]]:
    out: dict[int, dict[int, np.ndarray]] = {}
    for (vid, axis), keep in kept.items():
        out.setdefault(vid, {})[axis] = keep
    return out


def _new_types(graph: Graph, kept: dict[Key, np.ndarray]) -> dict[int, TensorType]:
    """The type of every value that changes."""
    axes = _by_value(kept)
    values = [*graph.inputs, *graph.parameters, *(r for n in graph for r in n.results)]
    return {id(v): v.type.with_shape(tuple(len(axes[id(v)][a]) if a in axes[id(v)] else d
                                           for a, d in enumerate(v.shape)))
            for v in values if id(v) in axes}


def _new_attrs(node: Node, types: dict[int, TensorType]) -> dict[str, Any]:
    """Attributes that name sizes follow the new types: reshape targets, group counts, split sizes."""
    attrs = dict(node.attrs)
    def type_of(v: Any) -> TensorType:
        return types.get(id(v), v.type)

    if node.op in ("reshape", "expand"):
        out = type_of(node.result)
        attrs["shape"] = tuple(d if not isinstance(d, int) or d == -1 else out.shape[i]
                               for i, d in enumerate(node.attrs["shape"]))
    if "groups" in attrs and attrs["groups"] > 1:
        before, after = node.operands[0].shape[1], type_of(node.operands[0]).shape[1]
        attrs["groups"] = attrs["groups"] * after // before  # type: ignore[operator]
    if "num_groups" in attrs:
        before, after = node.operands[0].shape[1], type_of(node.operands[0]).shape[1]
        attrs["num_groups"] = attrs["num_groups"] * after // before  # type: ignore[operator]
    if node.op == "split":
        attrs["split_sizes"] = tuple(type_of(r).shape[attrs["dim"] % r.type.rank] for r in node.results)
    return attrs


def _pruned_clone(graph: Graph, kept: dict[Key, np.ndarray]) -> Graph:
    """A pruned copy; `graph` stays as it is."""
    trial, mapping = graph.clone_with_mapping()
    apply_pruning(trial, {(id(mapping[vid]), axis): keep for (vid, axis), keep in kept.items()})
    return trial


class LayerShapes:
    """How a removal would retype the layers (the nodes that have MACs), from index counts alone:
    the macs= and latency= searches evaluate hundreds of candidate removals."""

    def __init__(self, graph: Graph, analysis: ChannelAnalysis) -> None:
        self.graph = graph
        self.layers = [n for n in graph if get_op(n.op, n.loc).macs is not None]
        self.values = {id(v): v for n in self.layers for v in (*n.operands, *n.results)}
        self.keys: dict[int, list[Key]] = {}
        self.counts: dict[int, np.ndarray] = {}  # per group: key x unit -> indices the unit holds there
        for g in analysis.groups:
            if g.frozen is None:
                keys = self.keys[id(g)] = [k for k in g.members if k[0] in self.values]
                self.counts[id(g)] = np.array([g.members[k].counts for k in keys]).reshape(len(keys), g.size)

    def types(self, removal: dict[int, list[int]]) -> dict[int, TensorType]:
        gone: dict[int, dict[int, int]] = {}
        for gid, units in removal.items():
            if not units or not self.keys[gid]:
                continue
            for (vid, axis), n in zip(self.keys[gid], self.counts[gid][:, units].sum(axis=1).tolist()):
                axes = gone.setdefault(vid, {})
                axes[axis] = axes.get(axis, 0) + n
        return {vid: self.values[vid].type.with_shape(tuple(d - axes.get(a, 0) if isinstance(d, int) else d
                                                            for a, d in enumerate(self.values[vid].shape)))
                for vid, axes in gone.items()}

    def macs(self, removal: dict[int, list[int]]) -> int:
        types = self.types(removal)
        return sum(get_op(n.op, n.loc).macs([types.get(id(v), v.type) for v in n.operands],  # type: ignore[misc]
                                            [types.get(id(r), r.type) for r in n.results], _new_attrs(n, types))
                   for n in self.layers)

    def latency_ms(self, table: LatencyTable, removal: dict[int, list[int]]) -> float:
        types = self.types(removal)
        return layers_ms(self.graph, table, types, {id(n): _new_attrs(n, types) for n in self.layers})


def apply_pruning(graph: Graph, kept: dict[Key, np.ndarray]) -> None:
    """Slice every parameter and retype every value; each node's re-inferred types must match."""
    types = _new_types(graph, kept)
    axes = _by_value(kept)
    touched = [n for n in graph if any(id(v) in types for v in (*n.operands, *n.results))]
    attrs_of = {id(n): _new_attrs(n, types) for n in touched}  # from the old types, before any changes
    for p in graph.parameters:
        if id(p) in types and p.data is not None:
            data = p.data
            for axis, keep in axes[id(p)].items():
                data = np.take(data, keep, axis=axis)
            p.type = types[id(p)]
            p.data = np.ascontiguousarray(data)
    for node in touched:
        attrs = attrs_of[id(node)]
        opdef = get_op(node.op, node.loc)
        inferred = opdef.infer_types([v.type for v in node.operands], attrs, node.where)
        expected = [types.get(id(r), r.type) for r in node.results]
        if inferred != expected:
            raise InternalError(f"{node.where}: pruning expected {', '.join(map(str, expected))}, the op infers "
                                f"{', '.join(map(str, inferred))}; this is a bug in the channel analysis")
        node.attrs = attrs
        for r, t in zip(node.results, expected):
            r.type = t
