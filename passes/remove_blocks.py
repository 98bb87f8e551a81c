"""remove-blocks: drop whole residual blocks (and, with plain=true, same-type layers) that change
their input least on the calibration samples.

Scores (lower goes first):
- `influence`: 1 - cos(block input, block output), ShortGPT's block influence;
- `norm`: |branch| / |keep side|, how much the branch adds to the stream;
- `output`: 1 - cos(model output, model output with that block alone removed);
- `angular`: runs of `count` consecutive blocks scored by arccos(cos(run input, run output)) / pi
  (Gromov et al.); the run that changes the stream least goes as a whole.
`greedy=true` removes one block at a time and scores the rest again on the smaller model.
`auto=true` removes blocks where they pay: right before `prune{macs=M,macs-of=pipeline}` it tries
0, 1, 2, ... units, each followed by pruning to the same M, and keeps the count whose result stays
closest to the model it received on the calibration samples (output cosine), stopping after two
counts in a row that do worse than the best.

Contract: the result is exactly the model with each removed block's residual branch set to zero
(a projection block keeps its shortcut) or each removed plain layer replaced by the identity;
BlockSummary.removed says where, so graphopt.testing.blocks can build that model independently."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.analysis.blocks import Block, find_blocks, next_block
from graphopt.analysis.cost import graph_cost
from graphopt.errors import GraphoptError, OptionError
from graphopt.ir.graph import Graph
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.report import blocks_section

SCORES = ("influence", "norm", "output", "angular")


@dataclass
class BlockReport:
    """One unit: its name, kind, score, MACs, whether it went, and where it is in the graph the pass
    received (node positions: the merge, the branch operand of a residual add, a plain layer's first)."""

    name: str
    kind: str
    score: float
    macs: int
    removed: bool
    merge: int
    branch: int | None
    first: int


@dataclass
class BlockSummary:
    spec: str
    units: list[BlockReport] = field(default_factory=list)
    macs_before: int = 0
    macs_after: int = 0
    params_before: int = 0
    params_after: int = 0
    note: str = ""

    @property
    def removed(self) -> list[BlockReport]:
        return [u for u in self.units if u.removed]

    def section(self, report: Path) -> list[str]:
        return blocks_section(report, self)

    def line(self) -> str:
        names = ", ".join(u.name for u in self.removed) or "none"
        return (f"remove-blocks: MACs {self.macs_before:,} -> {self.macs_after:,} "
                f"({self.macs_after / max(self.macs_before, 1):.1%}), parameters {self.params_before:,} -> "
                f"{self.params_after:,}; removed {len(self.removed)} of {len(self.units)} unit(s): {names}"
                + (f"; {self.note}" if self.note else ""))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 1.0


def _run_torch(graph: Graph, samples: list[tuple[np.ndarray, ...]]) -> list[list[np.ndarray]]:
    """Every output of `graph` on every sample, through the torch backend (the interpreter is the
    oracle; scoring runs the model many times, so it runs at torch's speed)."""
    import torch
    from graphopt.backends.torch import to_torch

    module = to_torch(graph)
    out = []
    with torch.no_grad():
        for sample in samples:
            results = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in sample))
            results = results if isinstance(results, tuple | list) else (results,)
            out.append([r.numpy() for r in results])
    return out


def _observe(graph: Graph, values: list[Any], samples: list[tuple[np.ndarray, ...]]) -> list[list[np.ndarray]]:
    """The arrays `values` take on each sample: per value, per sample."""
    probe, mapping = graph.clone_with_mapping()
    probe.outputs = [mapping[id(v)] for v in values]
    per_sample = _run_torch(probe, samples)
    return [[arrays[i] for arrays in per_sample] for i in range(len(values))]


def remove_block(graph: Graph, block: Block, forwarded: dict[int, Any] | None = None) -> None:
    """The rest of the model reads the block's replacement; its nodes and their parameters go.
    `forwarded` maps the outputs of blocks removed before to what replaced them (a block whose
    keep side was one of them reads that now)."""
    replacement = block.replacement
    forwarded = {} if forwarded is None else forwarded
    while id(replacement) in forwarded:
        replacement = forwarded[id(replacement)]
    forwarded[id(block.output)] = replacement
    block.output.replace_all_uses_with(replacement)
    read = {id(v): v for n in block.nodes for v in n.operands if v.is_parameter}
    for node in reversed(block.nodes):
        graph.erase(node)
    graph.remove_parameters(*(p for p in read.values() if not p.is_used))


@register_pass
@dataclass(frozen=True)
class RemoveBlocks(Pass):
    """Remove the residual blocks (or plain layers) that change the model least."""

    name = "remove-blocks"
    contract = Contract("masked", idempotent=False)
    count: int | None = option(None, low=1)  # units to remove
    auto: bool = False  # as many as pay against the prune{macs=...} pass that follows
    macs: float | None = option(None, low=0, high=1, low_open=True)  # fraction of the model's MACs to keep
    score: str = option("influence", choices=SCORES)
    greedy: bool = False  # score again after each removal
    plain: bool = False  # same-type conv/linear layers outside residual branches are units too
    skip: tuple[str, ...] = ()
    samples: int = option(8, low=1)  # calibration samples scoring uses

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.count is not None) + (self.macs is not None) + self.auto != 1:
            raise OptionError("remove-blocks: give exactly one of count= (units to remove), macs= (fraction of "
                              "the model's MACs to keep) or auto=true (as many as pay against the prune that follows)")
        if self.score == "angular" and self.count is None and not self.auto:
            raise OptionError("remove-blocks{score=angular} removes one run of count= consecutive blocks; give count=")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if self.auto:
            count, note = self._paying_count(graph, ctx)
            summary = replace(self, auto=False, count=max(count, 1))._remove(graph, ctx, count)
            summary.note = note
        else:
            summary = self._remove(graph, ctx, self.count)
        return PassResult(bool(summary.removed), details=summary)

    def _paying_count(self, graph: Graph, ctx: PassContext) -> tuple[int, str]:
        """The number of units whose removal, followed by the pruning after this pass, keeps the
        model's output closest to what it was; and a note listing what each count gave."""
        from graphopt.pipeline import run_pipeline

        prune = ctx.pipeline[ctx.index + 1] if ctx.index + 1 < len(ctx.pipeline) else None
        if prune is None or prune.name != "prune" or getattr(prune, "macs", None) is None \
                or prune.macs_of != "pipeline":
            raise GraphoptError("remove-blocks{auto=true} weighs removing blocks against pruning channels: put it "
                                "right before a prune{macs=...,macs-of=pipeline} pass")
        samples = ctx.samples("remove-blocks{auto=true}", self.samples)
        options = dict(ctx.options)
        reference, target = _run_torch(graph, samples), prune.macs * ctx.initial_macs
        tried: list[tuple[int, float]] = []
        for count in range(len(self._candidates(graph)) + 1):
            trial = graph.clone()
            if count:
                trial = run_pipeline(trial, [replace(self, auto=False, count=count)], **options).graph
            left = graph_cost(trial).macs
            if left <= target:
                break
            trial = run_pipeline(trial, [replace(prune, macs=target / left, macs_of="pass")], **options).graph
            tried.append((count, _output_cosine(reference, _run_torch(trial, samples))))
            best = max(tried, key=lambda t: t[1])
            if count - best[0] >= 2:
                break
        best = max(tried, key=lambda t: t[1])
        return best[0], ("auto: output cosine after pruning to the same MACs, by units removed: "
                         + ", ".join(f"{c}: {cos:.4f}" for c, cos in tried) + f"; {best[0]} pay")

    def _remove(self, graph: Graph, ctx: PassContext, count: int | None) -> BlockSummary:
        samples = ctx.samples(f"remove-blocks{{score={self.score}}}", self.samples)
        position = {id(n): i for i, n in enumerate(graph)}
        before = graph_cost(graph)
        summary = BlockSummary(self.spec(), macs_before=before.macs, params_before=before.params)
        blocks = self._candidates(graph)
        if count is not None and count > len(blocks):
            raise GraphoptError(f"remove-blocks{{count={count}}}: the model has {len(blocks)} removable unit(s)"
                                + (f" ({', '.join(b.name for b in blocks)})" if blocks else "")
                                + "; ask for fewer" + ("" if self.plain else ", or add plain=true for plain layers"))
        scores = dict(zip((id(b.merge) for b in blocks), self._scores(graph, blocks, samples)))
        reports = {id(b.merge): self._report(b, scores[id(b.merge)], position) for b in blocks}
        target = before.macs * self.macs if self.macs is not None else 0
        macs, removed, forwarded = before.macs, 0, {}
        while blocks and (removed < count if count is not None else macs > target):
            chosen = self._choose(blocks, scores)
            if not ctx.allow(f"remove {', '.join(b.name for b in chosen)}"):
                break
            for block in chosen:
                remove_block(graph, block, forwarded)
                reports[id(block.merge)].removed = True
                macs -= block.macs
                removed += 1
            if not self.greedy:
                blocks = [b for b in blocks if b not in chosen]
                continue
            blocks = self._candidates(graph)  # the rest, scored again on the smaller model
            scores.update(zip((id(b.merge) for b in blocks), self._scores(graph, blocks, samples) if blocks else []))
            for b in blocks:
                reports.setdefault(id(b.merge), self._report(b, 0.0, position)).score = scores[id(b.merge)]
        if self.macs is not None and macs > target:
            summary.note = f"every removable unit went and the model still has {macs / before.macs:.1%} of its MACs"
        summary.units = sorted(reports.values(), key=lambda u: u.merge)
        after = graph_cost(graph)
        summary.macs_after, summary.params_after = after.macs, after.params
        return summary

    def _candidates(self, graph: Graph) -> list[Block]:
        return [b for b in find_blocks(graph, self.plain) if not any(n.named(self.skip) for n in b.nodes)]

    def _report(self, block: Block, score: float, position: dict[int, int]) -> BlockReport:
        branch = None if block.branch is None else block.merge.operands.index(block.branch)
        return BlockReport(block.name, block.kind, score, block.macs, False, position[id(block.merge)], branch,
                           position[id(block.nodes[0])])

    def _choose(self, blocks: list[Block], scores: dict[int, float]) -> list[Block]:
        """The next unit(s) to go: the lowest score, or for `angular` the whole best run."""
        if self.score != "angular":
            return [min(blocks, key=lambda b: scores[id(b.merge)])]
        return list(self._best_run(blocks, scores))

    def _best_run(self, blocks: list[Block], scores: dict[int, float]) -> list[Block]:
        starts = [i for i in range(len(blocks) - self.count + 1) if np.isfinite(scores[id(blocks[i].merge)])]  # type: ignore[operator]
        if not starts:
            raise GraphoptError(f"remove-blocks{{score=angular,count={self.count}}}: no run of {self.count} "
                                "consecutive blocks with the same input and output type; ask for a shorter run "
                                "or use another score")
        best = min(starts, key=lambda i: scores[id(blocks[i].merge)])
        return blocks[best:best + self.count]  # type: ignore[operator]

    def _scores(self, graph: Graph, blocks: list[Block], samples: list[tuple[np.ndarray, ...]]) -> list[float]:
        if self.score == "output":
            return self._output_scores(graph, blocks, samples)
        values = [v for b in blocks for v in (b.input, b.replacement, b.output)]
        seen = _observe(graph, values, samples)
        inputs, keeps, outputs = seen[0::3], seen[1::3], seen[2::3]
        if self.score == "influence":
            return [float(np.mean([1 - _cos(k, o) for k, o in zip(keep, out)])) for keep, out in zip(keeps, outputs)]
        if self.score == "norm":
            return [float(np.mean([np.linalg.norm(o - k) / max(float(np.linalg.norm(k)), 1e-30)
                                   for k, o in zip(keep, out)])) for keep, out in zip(keeps, outputs)]
        return self._angular(blocks, inputs, outputs)  # a run's score, kept at the run's first block

    def _angular(self, blocks: list[Block], inputs: list[list[np.ndarray]],
                 outputs: list[list[np.ndarray]]) -> list[float]:
        n = self.count or 1
        scores = []
        for i in range(len(blocks)):
            run = range(i, i + n)
            if i + n > len(blocks) or not all(next_block(blocks, j) for j in run[:-1]) \
                    or blocks[i].input.type != blocks[i + n - 1].output.type:
                scores.append(float("inf"))
                continue
            scores.append(float(np.mean([np.arccos(np.clip(_cos(a, b), -1, 1)) / np.pi
                                         for a, b in zip(inputs[i], outputs[i + n - 1])])))
        return scores

    def _output_scores(self, graph: Graph, blocks: list[Block], samples: list[tuple[np.ndarray, ...]]) -> list[float]:
        from graphopt.progress import progress

        reference = _run_torch(graph, samples)
        scores = []
        for block in progress(blocks, len(blocks), "remove-blocks: output scores"):
            trial, mapping = graph.clone_with_mapping()
            remove_block(trial, _mapped(block, mapping))
            scores.append(1 - _output_cosine(reference, _run_torch(trial, samples)))
        return scores


def _output_cosine(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """Mean over samples of the cosine between all outputs of two models."""
    return float(np.mean([_cos(np.concatenate([a.reshape(-1) for a in want]),
                               np.concatenate([b.reshape(-1) for b in have])) for want, have in zip(reference, got)]))


def _mapped(block: Block, mapping: dict[int, Any]) -> Block:
    """`block` in a clone of its graph."""
    nodes = [mapping[id(n.results[0])].producer for n in block.nodes]
    return Block(block.name, block.kind, nodes[-1], None if block.branch is None else mapping[id(block.branch)],
                 mapping[id(block.replacement)], nodes, block.macs, mapping[id(block.input)])
