"""Structural pruning written back to a PyTorch model the user owns.

`pruning_plan(result)` is what the prune passes of a pipeline run removed, as the kept indices of
each parameter (state-dict name -> axis -> indices), composed over several prune passes. It is plain
data: `save_pruned` stores it with the pruned weights in one `torch.save` file that loads with
`torch.load(weights_only=True)` (no pickled module, unlike Torch-Pruning's recommended save), and
`load_pruned(factory, path)` rebuilds the original architecture, shrinks it with
`apply_pruning_plan` and loads the weights. `apply_pruning_plan` resizes Conv, ConvTranspose,
Linear, BatchNorm, GroupNorm, LayerNorm and Embedding modules in place; a model whose forward code
hard-codes sizes (a reshape to a fixed head count, nn.MultiheadAttention's packed projection) keeps
working through `graphopt.to_torch(pruned_graph)` instead, and this module says so."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from graphopt.errors import FileError, GraphoptError, UnsupportedError
from graphopt.fileio import atomic_write

Plan = dict[str, dict[int, list[int]]]


def pruning_plan(result: Any) -> Plan:
    """The kept indices of every parameter the pipeline's prune passes shrank (composed in order)."""
    plan: Plan = {}
    for record in result.records:
        kept = getattr(record.details, "kept", None)
        if not record.spec.startswith("prune") or kept is None:
            continue
        for name, axes in kept.items():
            entry = plan.setdefault(name, {})
            for axis, indices in axes.items():
                entry[axis] = [entry[axis][i] for i in indices] if axis in entry else list(indices)
    return plan


def _shrink(tensor: torch.Tensor, axes: dict[int, list[int]]) -> torch.Tensor:
    for axis, indices in axes.items():
        tensor = tensor.index_select(axis, torch.as_tensor(indices, dtype=torch.long))
    return tensor.contiguous()


SIZE_ATTRIBUTES: dict[type, Callable[[torch.nn.Module], None]] = {}


def _sizes(*kinds: type) -> Callable[[Callable[[torch.nn.Module], None]], Callable[[torch.nn.Module], None]]:
    def add(fn: Callable[[torch.nn.Module], None]) -> Callable[[torch.nn.Module], None]:
        for kind in kinds:
            SIZE_ATTRIBUTES[kind] = fn
        return fn

    return add


@_sizes(torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
def _conv(m: Any) -> None:
    per_group = m.out_channels // m.groups  # whole groups were removed: each keeps its width
    m.out_channels = m.weight.shape[0]
    if m.groups > 1:
        m.groups = m.out_channels // per_group
    m.in_channels = m.weight.shape[1] * m.groups


@_sizes(torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
def _conv_transpose(m: Any) -> None:
    m.in_channels = m.weight.shape[0]
    m.out_channels = m.weight.shape[1] * m.groups


@_sizes(torch.nn.Linear)
def _linear(m: Any) -> None:
    m.out_features, m.in_features = m.weight.shape


@_sizes(torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
def _batch_norm(m: Any) -> None:
    m.num_features = m.running_mean.shape[0] if m.running_mean is not None else m.weight.shape[0]


@_sizes(torch.nn.GroupNorm)
def _group_norm(m: Any) -> None:
    per_group = m.num_channels // m.num_groups
    m.num_channels = m.weight.shape[0]
    m.num_groups = m.num_channels // per_group


@_sizes(torch.nn.LayerNorm)
def _layer_norm(m: Any) -> None:
    m.normalized_shape = tuple(m.weight.shape)


@_sizes(torch.nn.Embedding)
def _embedding(m: Any) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


def apply_pruning_plan(model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
    """Shrink `model`'s parameters and buffers as `plan` says, and the size attributes of the
    modules that hold them, in place; the same model, ready for the pruned state dict."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    missing = sorted(set(plan) - set(tensors))
    if missing:
        raise GraphoptError(f"the pruning plan names {', '.join(missing[:3])} which the model does not have; "
                            "apply it to the architecture the pruned graph was traced from")
    touched: dict[str, torch.nn.Module] = {}
    for name, axes in plan.items():
        path, _, leaf = name.rpartition(".")
        module = model.get_submodule(path)
        old = getattr(module, leaf)
        new = _shrink(old.detach(), {int(a): idx for a, idx in axes.items()})
        if isinstance(old, torch.nn.Parameter):
            setattr(module, leaf, torch.nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            module.register_buffer(leaf, new)
        touched[path] = module
    for path, module in touched.items():
        resize = SIZE_ATTRIBUTES.get(type(module))
        if resize is None:
            raise UnsupportedError(f"module {path or '<root>'} ({type(module).__name__}) lost channels, but its size "
                                   "attributes cannot be updated from here; run the pruned graph as "
                                   "graphopt.to_torch(graph) instead")
        resize(module)
    return model


def save_pruned(path: str | os.PathLike[str], result: Any) -> Path:
    """One file with the pruned weights (state-dict names) and the plan; torch.load(weights_only=True) reads it."""
    from graphopt.backends.torch import to_torch

    state = {k: v.detach().clone() for k, v in to_torch(result.graph).state_dict().items()}
    payload = {"format": "graphopt-pruned/1", "state_dict": state, "pruning": pruning_plan(result)}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_pruned(factory: Callable[[], torch.nn.Module], path: str | os.PathLike[str]) -> torch.nn.Module:
    """`factory()` shrunk by the saved plan, with the saved weights loaded."""
    try:
        payload = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise FileError(f"cannot read pruned checkpoint {path}: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != "graphopt-pruned/1":
        raise GraphoptError(f"{path} is not a checkpoint written by graphopt's save_pruned")
    model = apply_pruning_plan(factory(), payload["pruning"])
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # a counter the IR does not keep
    if missing or unexpected:
        raise GraphoptError(f"{path} does not fit {type(model).__name__}: missing {missing[:3]}, unexpected "
                            f"{unexpected[:3]} (save before passes that fold layers away, such as fold-bn)")
    return model
