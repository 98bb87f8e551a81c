"""Activation smoothing (SmoothQuant, Xiao et al. 2023). Transformers' layer norms and GELUs emit a
few channels far larger than the rest; one per-tensor activation scale then spends its levels on
them and rounds the others away. Dividing input channel j by s_j and multiplying the weight's
column j by s_j computes the same product, and s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha)
moves range from the activation (quantized per tensor) to the weight (quantized per output
channel). The division is a per-channel multiply in front of the layer's input quantization, cheap
next to the layer; layers that read one tensor (attention's query, key and value) share it.

As in the paper, only layer-norm outputs are smoothed (attention's input projections, the first
feed-forward layer): they carry the outlier channels, and they are float already, so the multiply
never lands inside an int8 region. Measured on all-MiniLM-L6-v2 with 7-bit weights, smoothing the
GELU-fed second feed-forward layer too cost 3 dB there. Exact up to float rounding; idempotent
(smoothed layers read the multiply, not the norm)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value
from graphopt.quant.quantizer import replace_operand

# s is clipped to this range so a dead channel or a zero weight column never scales by 0 or inf.
SCALE_LIMITS = (1e-4, 1e4)


def smoothing_scales(activation_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = a_j^alpha / w_j^(1 - alpha), 1 where either maximum is 0."""
    a, w = activation_max.astype(np.float64), weight_max.astype(np.float64)
    live = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[live] = a[live] ** alpha / w[live] ** (1 - alpha)
    return np.clip(s, *SCALE_LIMITS)


def _input_columns(layer: Node) -> np.ndarray | None:
    """|weight| maxima per input feature: linear weights are [out, in], matmul weights [in, out]."""
    weight = layer.operands[1]
    if not weight.is_parameter or weight.data is None or weight.data.ndim != 2:
        return None
    return np.abs(weight.data).max(axis=0 if layer.op == "linear" else 1)


def _scale_weight(graph: Graph, layer: Node, s: np.ndarray) -> None:
    weight = layer.operands[1]
    assert weight.data is not None
    data = weight.data * (s[None, :] if layer.op == "linear" else s[:, None]).astype(weight.data.dtype)
    replace_operand(graph, layer, 1, graph.add_parameter(data, f"{weight.name}.smoothed"))


def smooth(graph: Graph, layers: Sequence[Node], channel_absmax: Callable[[Value], np.ndarray | None],
           alpha: float) -> list[Node]:
    """Smooth the layer-norm-fed inputs of the linear / matmul-by-parameter `layers` in place, from
    the calibrated per-channel maxima of their inputs. Returns the layers whose input was rescaled."""
    groups: dict[int, list[tuple[Node, np.ndarray]]] = {}  # by input: the layers and their column maxima
    for layer in layers:
        x = layer.operands[0]
        if x.producer is None or x.producer.op != "layer_norm" or layer.op not in ("linear", "matmul"):
            continue
        columns = _input_columns(layer)
        if columns is not None:
            groups.setdefault(id(x), []).append((layer, columns))
    smoothed: list[Node] = []
    for members in groups.values():
        group = [layer for layer, _ in members]
        x = group[0].operands[0]
        a = channel_absmax(x)
        if a is None or any(columns.shape != a.shape for _, columns in members):
            continue
        s = smoothing_scales(a, np.max([columns for _, columns in members], axis=0), alpha)
        if np.allclose(s, 1.0, rtol=1e-3):
            continue
        norm = x.producer
        assert norm is not None
        divisor = graph.add_parameter((1.0 / s).astype(x.dtype.numpy), f"{x.name}.smooth")
        mul = graph.create("mul", [x, divisor], loc=group[0].loc, before=norm.next)
        for layer in group:
            layer.set_operand(0, mul.result)
            _scale_weight(graph, layer, s)
        smoothed += group
    return smoothed
