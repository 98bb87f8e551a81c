"""Exact integer execution of QDQ graphs, predicting what int8 runtimes compute.

The plain interpreter runs a QDQ graph as fake quantization: it dequantizes, multiplies in float
and rounds once more at the next quantize. ONNX Runtime instead runs DQ -> conv/linear/matmul ->
Q as one integer kernel: (q_x - z_x) * (q_w - z_w) accumulated exactly in int32, the int32 bias
added, then requantized with one float32 multiplier s_x * s_w / s_y, rounded half to even,
clamped (a fused relu or relu6 clamps at the quantized 0 and 6) and saturated. A global average pool between DQ and Q
likewise sums the integers and requantizes once with s_x / (s_y * pixels), and an add of two
dequantized tensors (QLinearAdd) computes q_a * s_a/s_c + q_b * s_b/s_c + a float32 constant
part with fused multiply-adds, as ORT's x86 kernel does. IntegerInterpreter runs those groups
that way, so its outputs match the runtime's to the last integer step (the passthrough ops move
integers unchanged, as the QDQ graph says already)."""

from __future__ import annotations

import dataclasses
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
# Fused activations an integer kernel applies as a clamp of its quantized output (float bounds).
INTEGER_ACTIVATIONS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


@dataclass(frozen=True)
class _Integers:
    values: np.ndarray  # q - zero_point, exact, as float64 (products and sums stay exact below 2**53)
    scale: np.ndarray  # per tensor (shape ()) or per channel
    zero_point: int = 0  # per tensor (a per-channel one is folded into values)


@dataclass(frozen=True)
class _Sum:
    a: _Integers
    b: _Integers
    bounds: tuple[float, float]  # a relu after the add: (0, inf)


@dataclass(frozen=True)
class _Accumulator:
    acc: np.ndarray  # the int32 accumulator including the bias
    scale: np.ndarray  # s_x * s_w, broadcastable to acc
    bounds: tuple[float, float]  # the fused activation's clamp
    count: int = 1  # values summed per output (a pool's pixels): the requantizer divides by s_y * count


class IntegerInterpreter(Interpreter):
    def run(self, *inputs: Any) -> list[np.ndarray]:
        self._integers: dict[int, _Integers] = {}
        self._accumulators: dict[int, _Accumulator] = {}
        self._sums: dict[int, _Sum] = {}
        return super().run(*inputs)

    def run_node(self, node: Node, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        if node.op == "dequantize_per_tensor":
            self._integers[id(node.result)] = _Integers(args[0].astype(np.float64) - node.attrs["zero_point"],
                                                        np.float32(node.attrs["scale"]), node.attrs["zero_point"])
        elif node.op == "dequantize_per_channel":
            view = [1] * args[0].ndim
            view[node.attrs["axis"] % args[0].ndim] = -1
            self._integers[id(node.result)] = _Integers(
                args[0].astype(np.float64) - args[2].reshape(view).astype(np.float64), args[1].reshape(view))
        elif node.op in LAYERS and node.attrs.get("activation", "none") in INTEGER_ACTIVATIONS and all(
                id(v) in self._integers for v in node.operands):
            return [self._integer_layer(node)]
        elif node.op == "adaptive_avg_pool2d" and tuple(node.attrs["output_size"]) == (1, 1) and \
                id(node.operands[0]) in self._integers:
            return [self._integer_global_pool(node)]
        elif node.op == "add" and len(node.operands) == 2 and all(id(v) in self._integers for v in node.operands):
            self._sums[id(node.result)] = _Sum(*(self._integers[id(v)] for v in node.operands),
                                               INTEGER_ACTIVATIONS["none"])
        elif node.op == "relu" and id(node.operands[0]) in self._sums:
            self._sums[id(node.result)] = dataclasses.replace(self._sums[id(node.operands[0])],
                                                              bounds=INTEGER_ACTIVATIONS["relu"])
        elif node.op == "quantize_per_tensor" and id(node.operands[0]) in self._accumulators:
            return [self._requantize(node, self._accumulators[id(node.operands[0])])]
        elif node.op == "quantize_per_tensor" and id(node.operands[0]) in self._sums:
            return [self._requantize_sum(node, self._sums[id(node.operands[0])])]
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
        bounds = INTEGER_ACTIVATIONS[node.attrs.get("activation", "none")]
        self._accumulators[id(node.result)] = _Accumulator(acc, scale, bounds)
        return np.clip(acc.astype(np.float32) * scale, *bounds).astype(np.float32)

    def _integer_global_pool(self, node: Node) -> np.ndarray:
        x = self._integers[id(node.operands[0])]
        count = x.values.shape[-1] * x.values.shape[-2]
        acc = x.values.sum(axis=(-2, -1), keepdims=True)
        scale = np.asarray(x.scale, dtype=np.float32)
        self._accumulators[id(node.result)] = _Accumulator(acc, scale, INTEGER_ACTIVATIONS["none"], count)
        return (acc * scale / count).astype(np.float32)

    def _requantize_sum(self, node: Node, s: _Sum) -> np.ndarray:
        f32 = np.float32
        zero_point = node.attrs["zero_point"]
        ratio_a = f32(f32(s.a.scale) / f32(node.attrs["scale"]))
        ratio_b = f32(f32(s.b.scale) / f32(node.attrs["scale"]))
        # z_c - (r_a * z_a + r_b * z_b), which the compiler contracts into one fused multiply-add
        fixed = f32(f32(zero_point) - _fma32(np.float64(s.a.zero_point), ratio_a, f32(ratio_b * f32(s.b.zero_point))))
        c = _fma32(s.a.values + s.a.zero_point, ratio_a, _fma32(s.b.values + s.b.zero_point, ratio_b, fixed))
        return _saturate(node, np.rint(c), s.bounds)

    def _requantize(self, node: Node, a: _Accumulator) -> np.ndarray:
        multiplier = (a.scale / (np.float32(node.attrs["scale"]) * np.float32(a.count))).astype(np.float32)
        return _saturate(node, np.rint(a.acc.astype(np.float32) * multiplier) + node.attrs["zero_point"], a.bounds)


def _saturate(node: Node, q: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Clamp integers to the quantize node's type and to the fused activation's bounds, quantized
    (runtimes drop the activation when the quantized range lies inside it, as calibration makes it)."""
    lo, hi = quant_range(node.attrs["dtype"], node.attrs["quant_min"], node.attrs["quant_max"])
    scale, zero_point = node.attrs["scale"], node.attrs["zero_point"]
    if np.isfinite(bounds[0]):
        lo = max(lo, int(np.rint(bounds[0] / scale)) + zero_point)
    if np.isfinite(bounds[1]):
        hi = min(hi, int(np.rint(bounds[1] / scale)) + zero_point)
    return np.clip(q, lo, hi).astype(node.attrs["dtype"].numpy)


def _fma32(x: np.ndarray, y: np.float32, z: np.ndarray | np.float32) -> np.ndarray:
    """float32 x * y + z rounded once, as a fused multiply-add (x holds 8-bit integers, so the
    float64 product and sum are exact)."""
    return (x * np.float64(y) + np.asarray(z, dtype=np.float64)).astype(np.float32)


def interpret_integer(graph: Graph, *inputs: Any) -> list[np.ndarray]:
    return IntegerInterpreter(graph).run(*inputs)
