"""AdaRound (Nagel et al., 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"):
rounding each weight to its nearest level minimizes the weight's own error, not the layer's output
error on the data. Per layer, a continuous variable V picks between rounding down and up through a
rectified sigmoid h(V); the layer's output error on its calibration inputs plus a regularizer that
pushes every h to 0 or 1 (its temperature annealed from soft to hard) is minimized by Adam in
torch, and the final h is rounded.

Memory stays bounded: layers are taken in chunks whose inputs fit MEMORY_BYTES, and a layer whose
inputs alone would not fit trains on the first samples that do.

Contract (through quantize): bounded, and on the calibration inputs each layer's output squared
error is at most round-to-nearest's with the same scales (the rounding that scores better is kept)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from graphopt.backends.torch import IMPLS
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.progress import bar
from graphopt.quant.bias_correction import channel_axis
from graphopt.quant.quantizer import Scheme, WeightCache, int8_weight, weight_key
from graphopt.quant.runner import Runner

STEPS = 1000
WARMUP = 0.2  # of the steps, reconstruction alone before the regularizer starts
BETA = (20.0, 2.0)  # the regularizer's temperature, annealed from the first to the second
REGULARIZATION = 0.01
LEARNING_RATE = 1e-2
BATCH = 32  # calibration rows a step
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch: h reaches 0 and 1 exactly
MEMORY_BYTES = 256 * 2 ** 20


def _inputs(graph: Graph, layers: Sequence[Node],
            samples: Sequence[tuple[np.ndarray, ...]]) -> Iterator[tuple[Node, np.ndarray]]:
    """Each layer with its input over the samples (stacked on the batch axis), chunk by chunk; the
    sizes (symbolic ones too) are measured on the first sample."""
    positions = {id(v): i for i, v in enumerate(graph.inputs)}

    def observer(chunk: Sequence[Node]) -> Callable[[tuple[np.ndarray, ...]], list[np.ndarray]]:
        """Gives the inputs of the chunk's layers on one sample (one runner for every sample)."""
        observed = [layer.operands[0] for layer in chunk if id(layer.operands[0]) not in positions]
        runner = Runner(graph, observed) if observed else None

        def observe(sample: tuple[np.ndarray, ...]) -> list[np.ndarray]:
            seen = dict(zip(map(id, observed), runner.run(*sample)[1] if runner is not None else []))
            return [sample[positions[id(n.operands[0])]] if id(n.operands[0]) in positions else seen[id(n.operands[0])]
                    for n in chunk]

        return observe

    size = {id(layer): a.nbytes * len(samples) for layer, a in zip(layers, observer(layers)(samples[0]))}
    chunks: list[list[Node]] = [[]]
    for layer in layers:
        if chunks[-1] and sum(size[id(n)] for n in chunks[-1]) + size[id(layer)] > MEMORY_BYTES:
            chunks.append([])
        chunks[-1].append(layer)
    for chunk in chunks:
        count = max(1, min(len(samples), MEMORY_BYTES * len(samples) // max(size[id(n)] for n in chunk)))
        observe = observer(chunk)
        seen = [observe(sample) for sample in samples[:count]]
        for k, layer in enumerate(chunk):
            yield layer, np.concatenate([arrays[k] for arrays in seen]).astype(np.float32)


def _output_error(layer: Node, x: torch.Tensor, weight: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """The layer's output squared error, summed over its channels and averaged over the rest."""
    got = IMPLS[layer.op](x, weight, *_bias(layer), **layer.attrs)
    return (got - want).square().sum(channel_axis(layer)).mean()


def _bias(layer: Node) -> list[torch.Tensor]:
    return [torch.from_numpy(np.array(layer.operands[2].data))] if len(layer.operands) > 2 else []


def adaround_layer(layer: Node, x: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """The layer's int8 weight (|q| <= the scheme's bound) rounded by AdaRound on inputs `x`, and its
    scales (round-to-nearest's, from int8_weight); the nearest rounding where that scores better."""
    nearest, view = int8_weight(layer, scheme.weights == "per-channel", scheme.weight_bound)
    bound = scheme.weight_bound
    w = torch.from_numpy(np.array(layer.operands[1].data, np.float32))
    s = torch.from_numpy(np.asarray(view, np.float32))
    floor = torch.floor(w / s)
    rest = (w / s - floor).clamp(1e-4, 1 - 1e-4)
    v = torch.log((rest - GAMMA) / (ZETA - rest)).requires_grad_()  # h(v) = rest: starts at the float weight
    inputs = torch.from_numpy(x)
    with torch.no_grad():
        want = IMPLS[layer.op](inputs, w, *_bias(layer), **layer.attrs)
    optimizer = torch.optim.Adam([v], lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(0)
    with bar(STEPS, f"adaround {layer.loc or layer.op}") as shown:
        for step in range(STEPS):
            rows = torch.randperm(len(inputs), generator=generator)[:BATCH]
            h = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
            loss = _output_error(layer, inputs[rows], (floor + h).clamp(-bound, bound) * s, want[rows])
            warm = (step / STEPS - WARMUP) / (1 - WARMUP)
            if warm >= 0:
                beta = BETA[0] + (BETA[1] - BETA[0]) * warm
                loss = loss + REGULARIZATION * (1 - (2 * h - 1).abs().pow(beta)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 50 == 0:
                shown.set_postfix(loss=f"{loss.item():.4g}")
            shown.update()
    learned = (floor + (v.detach() >= 0)).clamp(-bound, bound)  # h >= 1/2 exactly where v >= 0
    with torch.no_grad():
        errors = [_output_error(layer, inputs, torch.from_numpy(q.astype(np.float32)) * s, want).item()
                  for q in (learned.numpy(), nearest)]
    return (learned.numpy().astype(np.int8) if errors[0] <= errors[1] else nearest), view


def adaround(graph: Graph, layers: Sequence[Node], samples: Sequence[tuple[np.ndarray, ...]], scheme: Scheme,
             cache: WeightCache) -> None:
    """Round the weights of `layers` (conv, linear, matmul; those with a parameter weight) by AdaRound
    on the float model's inputs to each, into `cache`, where quantizing them takes the roundings from."""
    for layer, x in _inputs(graph, [n for n in layers if n.operands[1].is_parameter], samples):
        q, view = adaround_layer(layer, x, scheme)
        cache[weight_key(layer, scheme)] = (layer.operands[1].data, q, view)  # type: ignore[assignment]
