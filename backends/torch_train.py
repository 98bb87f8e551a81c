"""The one training loop graphopt's training steps share (distill; qat reuses it).

A student graph is trained through the torch backend (an fx GraphModule) to match a teacher graph
on unlabeled samples (labels, where given, add cross-entropy); the trained tensors go back into
the student's parameters. It is deterministic under a seed, shows a live loss, can stop early on a
held-out split, and runs data-parallel on torch.distributed when launched by torchrun: every rank
draws the same global batches, computes its share, and the gradients are all-reduced before each
step, so N processes take the same steps one process would (up to float summation order)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from graphopt.backends.torch import parameter_tensors, to_torch

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.parallel import ranks

Sample = tuple[tuple[np.ndarray, ...], Any]  # inputs, label or None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.0
    seed: int = 0
    loss: str = "mse"  # mse | cosine | kl (on the outputs)
    temperature: float = 2.0  # kl
    label_weight: float = 0.5  # share of cross-entropy where samples carry labels
    features: tuple[str, ...] = ()  # tensors matched by name (MSE) besides the outputs
    validation: float = 0.0  # held-out share of the data
    patience: int = 2  # epochs without a better held-out loss before stopping
    gradient_bits: int = 32  # 8: gradients cross ranks in int8, with error feedback


@dataclass
class TrainHistory:
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    validation: list[float] = field(default_factory=list)  # held-out loss per epoch
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    world_size: int = 1
    samples: int = 0
    gradient_bytes: float = 0.0  # sent by each rank a step to sum the gradients (0: one process)


def _with_features(graph: Graph, names: Sequence[str]) -> Graph:
    """`graph` with the values named `names` as extra outputs: a tensor's name, or a module path
    (torch) / node name (ONNX), which stands for the output of the last node it made."""
    if not names:
        return graph
    probe, mapping = graph.clone_with_mapping()
    by_name = {n.loc: mapping[id(n.results[0])] for n in graph if n.loc}
    by_name.update({v.name: mapping[id(v)] for v in [*graph.inputs, *(r for n in graph for r in n.results)] if v.name})
    missing = [n for n in names if n not in by_name]
    if missing:
        raise GraphoptError(f"distill: features={list(names)}: no tensor named {', '.join(missing)} in "
                            f"{graph.name}; name tensors both models share (see `graphopt show`)")
    probe.outputs = [*probe.outputs, *(by_name[n] for n in names)]
    return probe


def _tensors(sample: tuple[np.ndarray, ...]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in sample]


def _as_list(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple | list) else [out]


class _Objective:
    def __init__(self, config: TrainConfig, outputs: int) -> None:
        self.config, self.outputs = config, outputs

    def __call__(self, student: list[torch.Tensor], teacher: list[torch.Tensor], label: Any) -> torch.Tensor:
        """The loss of one sample."""
        c = self.config
        loss = torch.zeros((), dtype=torch.float32)
        for i, (s, t) in enumerate(zip(student, teacher)):
            if not s.is_floating_point():
                continue
            if i >= self.outputs:  # a matched feature
                if s.shape != t.shape:
                    raise GraphoptError(f"distill: feature {c.features[i - self.outputs]!r} is {tuple(s.shape)} in "
                                        f"the student and {tuple(t.shape)} in the teacher; match tensors whose "
                                        "shape pruning left alone")
                loss = loss + F.mse_loss(s.float(), t.float())
            elif c.loss == "mse":
                loss = loss + F.mse_loss(s.float(), t.float())
            elif c.loss == "cosine":
                loss = loss + 1 - F.cosine_similarity(s.float().reshape(1, -1), t.float().reshape(1, -1)).mean()
            else:
                temperature = c.temperature
                log_s = F.log_softmax(s.float() / temperature, dim=-1)
                log_t = F.log_softmax(t.float() / temperature, dim=-1)
                kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
                loss = loss + kl * temperature * temperature
        if label is not None:
            target = torch.as_tensor(np.asarray(label)).long().reshape(-1)
            logits = student[0].float().reshape(target.numel(), -1)
            loss = (1 - c.label_weight) * loss + c.label_weight * F.cross_entropy(logits, target)
        return loss


def _optimizer(config: TrainConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _schedule(config: TrainConfig, optimizer: torch.optim.Optimizer, steps: int) -> Any:
    def factor(step: int) -> float:
        done = min(step / max(steps, 1), 1.0)
        if config.schedule == "cosine":
            return 0.5 * (1 + float(np.cos(np.pi * done)))
        return 1.0 - done if config.schedule == "linear" else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(student: Graph, teacher: Graph, data: Sequence[Sample], config: TrainConfig,
          label: str = "distill") -> TrainHistory:
    """Train `student` in place (its parameters get the trained values) to match `teacher` on `data`."""
    from graphopt.progress import bar

    if not data:
        raise GraphoptError(f"{label}: the training data is empty")
    rank, world = ranks()
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    model = to_torch(_with_features(student, config.features))
    trainable = parameter_tensors(student, model)
    if not trainable:
        raise GraphoptError(f"{label}: {student.name} has no trainable float parameters")
    reference = to_torch(_with_features(teacher, config.features)).eval()
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(data))
    held = order[:round(config.validation * len(data))] if config.validation > 0 else order[:0]
    if config.validation > 0 and (len(held) == 0 or len(held) == len(data)):
        raise GraphoptError(f"{label}: validation={config.validation} of {len(data)} samples leaves no held-out or "
                            "no training sample; give more data or another share")
    training = order[len(held):]
    with torch.no_grad():  # the teacher's answers do not change: compute them once
        targets = [[t.detach() for t in _as_list(reference(*_tensors(data[i][0])))] for i in range(len(data))]
    objective = _Objective(config, len(student.outputs))
    batched = _batch_axis_leads(student)
    optimizer = _optimizer(config, list(trainable.values()))
    batches = [training[i:i + config.batch_size] for i in range(0, len(training), config.batch_size)]
    scheduler = _schedule(config, optimizer, config.epochs * len(batches))
    history = TrainHistory(world_size=world, samples=len(training))
    exchange = GradientExchange(config.gradient_bits, world)
    best: tuple[float, dict[int, torch.Tensor]] | None = None
    for t in trainable.values():  # every rank all-reduces every gradient, even one its share left untouched
        t.grad = torch.zeros_like(t)
    model.train()
    with bar(config.epochs * len(batches), label, hidden=rank != 0) as shown:
        for epoch in range(config.epochs):
            epoch_order = np.random.default_rng([config.seed, epoch]).permutation(len(training))
            shuffled = training[epoch_order]
            total = 0.0
            for b in range(len(batches)):
                batch = shuffled[b * config.batch_size:(b + 1) * config.batch_size]
                optimizer.zero_grad(set_to_none=False)
                share = torch.zeros(())
                for items, outputs in _forward(model, data, batch[rank::world], batched):
                    # each rank its share of the global batch, every sample weighted by the global size
                    loss = sum(objective(out, targets[i], data[i][1]) for i, out in zip(items, outputs)) / len(batch)
                    loss.backward()  # type: ignore[union-attr]
                    share = share + loss.detach()  # type: ignore[union-attr]
                if world > 1:
                    exchange([t.grad for t in trainable.values()], share)  # type: ignore[misc]
                optimizer.step()
                scheduler.step()
                total += float(share)
                shown.update()
                shown.set_postfix(epoch=epoch + 1, loss=f"{float(share):.4g}")
            history.losses.append(total / max(len(batches), 1))
            if len(held):
                held_loss = _held_out_loss(model, objective, data, targets, held)
                history.validation.append(held_loss)
                if best is None or held_loss < best[0]:
                    best = (held_loss, {k: t.detach().clone() for k, t in trainable.items()})
                    history.best_epoch = epoch
                elif epoch - history.best_epoch >= config.patience:
                    history.stopped_early = True
                    break
    if best is not None:
        with torch.no_grad():
            for k, t in trainable.items():
                t.copy_(best[1][k])
    _write_back(student, trainable)
    history.seconds = time.perf_counter() - start
    history.gradient_bytes = exchange.sent / max(exchange.steps, 1)
    return history


def record_history(summary: Any, history: TrainHistory) -> None:
    """Copy the history's fields that a pass's summary also has (its losses, timings, processes)."""
    for f in dataclasses.fields(TrainHistory):
        if hasattr(summary, f.name):
            setattr(summary, f.name, getattr(history, f.name))


def _batch_axis_leads(graph: Graph) -> bool:
    """Whether every input and output leads with one symbolic batch dim: then samples concatenate
    into one forward pass (else each sample runs alone, as a static-shaped graph needs)."""
    heads = {v.shape[0] if v.type.rank else None for v in [*graph.inputs, *graph.outputs]}
    return len(heads) == 1 and isinstance(next(iter(heads)), str)


def _forward(model: torch.nn.Module, data: Sequence[Sample], items: np.ndarray,
             batched: bool) -> list[tuple[list[int], list[list[torch.Tensor]]]]:
    """The model's outputs for each of `items`: one forward for all of them of one size when the
    batch axis leads (samples of other lengths or images of other sizes go in their own forward),
    else one forward each. Pairs of (items, their outputs)."""
    if not batched:
        return [([int(i)], [_as_list(model(*_tensors(data[i][0])))]) for i in items]
    groups: dict[tuple, list[int]] = {}
    for i in items:
        groups.setdefault(tuple(np.shape(a)[1:] for a in data[i][0]), []).append(int(i))
    out = []
    for group in groups.values():
        sizes = [int(np.shape(data[i][0][0])[0]) for i in group]
        inputs = [torch.cat([torch.from_numpy(np.ascontiguousarray(data[i][0][k])) for i in group])
                  for k in range(len(data[group[0]][0]))]
        outputs = [result.split(sizes) for result in _as_list(model(*inputs))]
        out.append((group, [[result[j] for result in outputs] for j in range(len(group))]))
    return out


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    """Sum `tensors` over the ranks in one collective (one message a step, not one a parameter)."""
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    _scatter(flat, tensors)


def _scatter(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy consecutive slices of `flat` back into `tensors`."""
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


class GradientExchange:
    """Sums gradients over the ranks each step: in fp32 with one all-reduce, or (bits=8) as int8 with
    one fp32 scale per CHUNK values, all-gathered and summed on every rank. Error feedback keeps what
    rounding lost and adds it to the next step's gradient (Seide et al. 2014; Karimireddy et al.
    2019), so compression delays gradient mass rather than dropping it. `sent` counts the bytes a
    rank sends."""

    CHUNK = 2048

    def __init__(self, bits: int, world: int) -> None:
        self.bits, self.world = bits, world
        self.residual: torch.Tensor | None = None
        self.sent, self.steps = 0, 0

    def __call__(self, tensors: list[torch.Tensor], loss: torch.Tensor) -> None:
        """Sum the gradients `tensors` and the scalar `loss` over the ranks (in fp32: one message)."""
        import torch.distributed as dist

        self.steps += 1
        if self.bits == 32:
            _all_reduce([*tensors, loss])
            self.sent += 4 * sum(t.numel() for t in tensors)
            return
        _all_reduce([loss])
        flat = torch.cat([t.reshape(-1) for t in tensors])
        if self.residual is not None:
            flat = flat + self.residual
        n = flat.numel()
        padded = torch.nn.functional.pad(flat, (0, -n % self.CHUNK)).view(-1, self.CHUNK)
        scales = padded.abs().amax(dim=1).clamp(min=1e-30) / 127
        q = torch.round(padded / scales[:, None]).clamp(-127, 127).to(torch.int8).reshape(-1)[:n].contiguous()
        per_value = scales.repeat_interleave(self.CHUNK)[:n]
        self.residual = flat - q.float() * per_value
        qs, ss = [torch.empty_like(q) for _ in range(self.world)], [torch.empty_like(scales) for _ in range(self.world)]
        dist.all_gather(qs, q)
        dist.all_gather(ss, scales)
        _scatter(sum(a.float() * b.repeat_interleave(self.CHUNK)[:n] for a, b in zip(qs, ss)), tensors)  # type: ignore[arg-type]
        self.sent += q.numel() + 4 * scales.numel()


def _held_out_loss(model: torch.nn.Module, objective: _Objective, data: Sequence[Sample],
                   targets: list[list[torch.Tensor]], held: np.ndarray) -> float:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss = float(np.mean([float(objective(_as_list(model(*_tensors(data[i][0]))), targets[i], data[i][1]))
                              for i in held]))
    model.train(was_training)
    return loss


def _write_back(graph: Graph, trainable: dict[int, torch.Tensor]) -> None:
    for p in graph.parameters:
        if id(p) in trainable:
            array = trainable[id(p)].detach().numpy()
            if not np.isfinite(array).all():
                raise GraphoptError(f"training made parameter %{p.name} non-finite; lower lr= (it was too high for "
                                    "this model)")
            p.data = array.astype(p.dtype.numpy).reshape(np.shape(p.data)).copy()  # scalars train as [1]
