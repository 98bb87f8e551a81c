"""Exact integer execution of QDQ graphs, predicting what int8 runtimes compute.

The plain interpreter runs a QDQ graph as fake quantization: it dequantizes, multiplies in float
and rounds once more at the next quantize. ONNX Runtime instead runs DQ -> conv/linear/matmul ->
Q as one integer kernel: (q_x - z_x) * (q_w - z_w) accumulated exactly in int32, the int32 bias
added, then requantized with one float32 multiplier s_x * s_w / s_y, rounded half to even,
clamped (relu clamps at the zero point) and saturated. IntegerInterpreter runs those groups that
way, so its outputs match the runtime's to the last integer step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphopt.interp import Interpreter
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ops import get_op
from graphopt.ops.quant import quant_range

LAYERS = {"conv1d", "conv2d", "linear", "matmul"}
INTEGER_ACTIVATIONS = {"none", "relu"}


@dataclass(frozen=True)
class _Integers:
    values: np.ndarray  # q - zero_point, exact, as float64 (products and sums stay exact below 2**53)
    scale: np.ndarray  # per tensor (shape ()) or per channel


@dataclass(frozen=True)
class _Accumulator:
    acc: np.ndarray  # the int32 accumulator including the bias
    scale: np.ndarray  # s_x * s_w, broadcastable to acc
    relu: bool


class IntegerInterpreter(Interpreter):
    def run(self, *inputs: Any) -> list[np.ndarray]:
        self._integers: dict[int, _Integers] = {}
        self._accumulators: dict[int, _Accumulator] = {}
        return super().run(*inputs)

    def run_node(self, node: Node, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        if node.op == "dequantize_per_tensor":
            self._integers[id(node.result)] = _Integers(
                args[0].astype(np.float64) - node.attrs["zero_point"], np.float32(node.attrs["scale"]))
        elif node.op == "dequantize_per_channel":
            view = [1] * args[0].ndim
            view[node.attrs["axis"] % args[0].ndim] = -1
            self._integers[id(node.result)] = _Integers(
                args[0].astype(np.float64) - args[2].reshape(view).astype(np.float64), args[1].reshape(view))
        elif node.op in LAYERS and node.attrs.get("activation", "none") in INTEGER_ACTIVATIONS and all(
                id(v) in self._integers for v in node.operands):
            return [self._integer_layer(node)]
        elif node.op == "quantize_per_tensor" and id(node.operands[0]) in self._accumulators:
            return [self._requantize(node, self._accumulators[id(node.operands[0])])]
        return super().run_node(node, args)

    def _integer_layer(self, node: Node) -> np.ndarray:
        x, w, *bias = (self._integers[id(v)] for v in node.operands)
        attrs = {k: v for k, v in node.attrs.items() if k not in ("activation", "activation_bounds")}
        acc = get_op(node.op).reference(x.values, w.values, **attrs)
        channel_view = [1] * acc.ndim
        channel_view[1 if node.op.startswith("conv") else -1] = -1
        w_scale = np.asarray(w.scale, dtype=np.float32).reshape(-1)
        if bias:
            acc = acc + bias[0].values.reshape(channel_view)
        scale = (np.float32(x.scale) * w_scale).reshape(channel_view if w_scale.size > 1 else [])
        relu = node.attrs.get("activation") == "relu"
        self._accumulators[id(node.result)] = _Accumulator(acc, scale, relu)
        y = acc.astype(np.float32) * scale
        return np.maximum(y, 0) if relu else y

    def _requantize(self, node: Node, a: _Accumulator) -> np.ndarray:
        lo, hi = quant_range(node.attrs["dtype"], node.attrs["quant_min"], node.attrs["quant_max"])
        zero_point = node.attrs["zero_point"]
        multiplier = (a.scale / np.float32(node.attrs["scale"])).astype(np.float32)
        q = np.rint(a.acc.astype(np.float32) * multiplier) + zero_point
        if a.relu:
            lo = max(lo, zero_point)
        return np.clip(q, lo, hi).astype(node.attrs["dtype"].numpy)


def interpret_integer(graph: Graph, *inputs: Any) -> list[np.ndarray]:
    return IntegerInterpreter(graph).run(*inputs)
