"""distill: knowledge-distillation fine-tuning as a pipeline step.

The teacher is the graph as the pipeline received it (before prune, remove-blocks, ...) unless the
caller passes `teacher=` to run_pipeline; the data is `data=`, an iterable of input tuples, each
optionally carrying its label last (labels add cross-entropy). Training runs through the torch
backend in the shared loop (graphopt.backends.torch_train), data-parallel when launched by torchrun.

Contract: `trained`: no equivalence is promised; the loss on the training data falls (the tests
check it) and the graph keeps its structure, only parameter values change."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.analysis.cost import graph_cost
from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.pipeline import Contract, Pass, PassContext, PassResult, option, register_pass
from graphopt.report import training_section


@dataclass
class DistillSummary:
    spec: str
    losses: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    world_size: int = 1
    samples: int = 0
    gradient_bytes: float = 0.0

    def section(self, report: Path) -> list[str]:
        return training_section(report, self)

    def line(self) -> str:
        held = f", held-out {self.validation[0]:.4g} -> {self.validation[-1]:.4g}" if self.validation else ""
        return (f"distill: {len(self.losses)} epoch(s) on {self.samples} sample(s) x {self.world_size} process(es) "
                f"in {self.seconds:.1f} s; loss {self.losses[0]:.4g} -> {self.losses[-1]:.4g}{held}"
                + ("; stopped early" if self.stopped_early else "")
                + (f"; {self.gradient_bytes / 1e3:.1f} kB of gradients sent a step by each process"
                   if self.gradient_bytes else ""))


@dataclass(frozen=True)
class TrainingOptions:
    """The shared training loop's options (graphopt.backends.torch_train.TrainConfig), as the
    training passes (distill, qat) take them."""

    epochs: int = option(3, low=1)
    lr: float = option(1e-4, low=0, low_open=True)
    batch_size: int = option(8, low=1)
    optimizer: str = option("adamw", choices=("adamw", "sgd"))
    schedule: str = option("cosine", choices=("cosine", "linear", "constant"))
    weight_decay: float = option(0.0, low=0)
    seed: int = option(0, low=0)
    loss: str = option("mse", choices=("mse", "cosine", "kl"))
    temperature: float = option(2.0, low=0, low_open=True)
    label_weight: float = option(0.5, low=0, high=1)
    features: tuple[str, ...] = ()
    validation: float = option(0.0, low=0, high=1, high_open=True)
    patience: int = option(2, low=1)
    gradient_bits: int = option(32, choices=(32, 8))  # under torchrun: 8 sends int8 gradients (error feedback)

    def train_config(self) -> Any:
        from graphopt.backends.torch_train import TrainConfig

        return TrainConfig(**{f: getattr(self, f) for f in TrainConfig.__dataclass_fields__})


@register_pass
@dataclass(frozen=True)
class Distill(Pass, TrainingOptions):
    """Fine-tune against the unpruned model (knowledge distillation) on data=."""

    name = "distill"
    contract = Contract("trained", idempotent=False)
    needs_received = True
    prune_steps: int = option(0, low=0)  # >0: the prune pass just before reaches its target in steps

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from graphopt.backends.torch_train import train

        from graphopt.quant.calibration import Calibration

        teacher = ctx.get("teacher") if ctx.get("teacher") is not None else ctx.received
        if not isinstance(teacher, Graph):
            raise GraphoptError("distill: teacher= must be a graphopt Graph (graphopt.from_torch / from_onnx)")
        if [v.type for v in teacher.inputs] != [v.type for v in graph.inputs]:
            raise GraphoptError("distill: the teacher takes " + ", ".join(str(v.type) for v in teacher.inputs)
                                + " but the model takes " + ", ".join(str(v.type) for v in graph.inputs))
        data = ctx.labeled("distill")
        Calibration([inputs for inputs, _ in data]).check(graph, "distill data")
        config = self.train_config()
        if self.prune_steps:
            history = self._gradually(graph, teacher, data, config, ctx)
        else:
            history = train(graph, teacher, data, config)
        summary = DistillSummary(self.spec(), **vars(history))
        return PassResult(True, details=summary)

    def _gradually(self, graph: Graph, teacher: Graph, data: list, config: Any, ctx: PassContext) -> Any:
        """Gradual pruning: replay the pipeline up to the prune pass before this one on the model the
        pipeline received, then prune to targets that fall on TensorFlow Model Optimization's
        polynomial-decay schedule (power 3) towards the prune pass's own, re-scoring on the trained
        weights and training between steps; the result replaces what one-shot pruning made."""
        from graphopt.backends.torch_train import train

        from graphopt.pipeline import run_pipeline

        prune = ctx.pipeline[ctx.index - 1] if ctx.index else None
        if prune is None or prune.name != "prune" or getattr(prune, "latency", None) is not None:
            raise GraphoptError("distill{prune-steps=...} prunes gradually: put it right after a "
                                "prune{macs=...} or prune{ratio=...} pass")
        options = dict(ctx.options)
        work = run_pipeline(ctx.received, ctx.pipeline[:ctx.index - 1], **options).graph  # type: ignore[arg-type]
        base = ctx.initial_macs if prune.macs_of == "pipeline" else graph_cost(work).macs
        epochs = [self.epochs // self.prune_steps + (i < self.epochs % self.prune_steps)
                  for i in range(self.prune_steps)]
        final, kept = (prune.macs, 1.0) if prune.macs is not None else (1 - prune.ratio, 1.0)
        history = None
        for i, n in enumerate(epochs, 1):
            target = final + (1 - final) * (1 - i / self.prune_steps) ** 3
            if prune.macs is not None:
                step = dataclasses.replace(prune, macs=min(1.0, target * base / max(graph_cost(work).macs, 1)),
                                           macs_of="pass")
            else:
                step = dataclasses.replace(prune, ratio=max(1e-6, 1 - target / kept))
            kept = target
            work = run_pipeline(work, [step], **options).graph
            if n:
                step_history = train(work, teacher, data, dataclasses.replace(config, epochs=n))
                history = step_history if history is None else _joined(history, step_history)
        graph.take_contents(work)
        return history


def _joined(first: Any, then: Any) -> Any:
    """One history for several training runs in a row."""
    first.losses += then.losses
    first.validation += then.validation
    first.seconds += then.seconds
    first.stopped_early = first.stopped_early or then.stopped_early
    return first
