"""Every op's numpy reference (through type inference and the interpreter) against torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphopt as go

rng = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return rng.uniform(0.2, 3.0, shape).astype(np.float32)


def ints(*shape: int, lo: int = -4, hi: int = 5) -> np.ndarray:
    return rng.integers(lo, hi, shape).astype(np.int64)


def bools(*shape: int) -> np.ndarray:
    return rng.random(shape) > 0.5


def untied(scale: float, *shape: int) -> np.ndarray:
    """Values k*scale + offset, with offsets away from .5 so rounding has no ties to break."""
    offset = rng.choice([0.2, 0.35, 0.65, 0.8], shape) * rng.choice([-1, 1], shape)
    return ((rng.integers(-200, 200, shape) + offset) * scale).astype(np.float32)


@dataclass
class Case:
    op: str
    inputs: list[np.ndarray]
    torch_fn: Callable[..., Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    tol: float = 1e-5


def C(op: str, inputs: list[np.ndarray], torch_fn: Callable[..., Any], id: str = "", tol: float = 1e-5,
      **attrs: Any) -> Case:
    return Case(op, inputs, torch_fn, attrs, id or op, tol)


x4 = f32(2, 3, 5, 6)
CASES = [
    # unary
    C("relu", [x4], F.relu),
    C("relu6", [x4 * 4], F.relu6),
    C("leaky_relu", [x4], lambda x: F.leaky_relu(x, 0.2), negative_slope=0.2),
    C("elu", [x4], lambda x: F.elu(x, 0.5), alpha=0.5),
    C("hardtanh", [x4], lambda x: F.hardtanh(x, -0.5, 2.0), min_val=-0.5, max_val=2.0),
    C("clamp", [x4], lambda x: torch.clamp(x, -0.3, 0.4), min=-0.3, max=0.4),
    C("clamp", [x4], lambda x: torch.clamp(x, min=0.1), id="clamp-min", min=0.1),
    C("clamp", [x4], lambda x: x, id="clamp-unbounded"),  # ONNX Clip without bounds: x itself
    C("gelu", [x4 * 3], F.gelu),
    C("gelu", [x4 * 3], lambda x: F.gelu(x, approximate="tanh"), id="gelu-tanh", approximate="tanh"),
    C("sigmoid", [x4 * 10], torch.sigmoid),
    C("silu", [x4 * 5], F.silu),
    C("hardsigmoid", [x4 * 4], F.hardsigmoid),
    C("hardswish", [x4 * 4], F.hardswish),
    C("softplus", [x4 * 4], lambda x: F.softplus(x, 2.0, 5.0), beta=2.0, threshold=5.0),
    C("mish", [x4 * 3], F.mish),
    C("tanh", [x4], torch.tanh),
    C("selu", [x4 * 3], F.selu),
    C("selu", [x4 * 3], lambda x: 1.1 * torch.where(x > 0, x, 1.5 * torch.expm1(x)), id="selu-onnx", alpha=1.5,
      gamma=1.1),
    C("celu", [x4 * 3], lambda x: F.celu(x, 0.7), alpha=0.7),
    C("shrink", [x4 * 3], lambda x: F.softshrink(x, 0.4), bias=0.4, lambd=0.4),
    C("thresholded_relu", [x4 * 3], lambda x: F.threshold(x, 0.3, 0.0), alpha=0.3),
    C("softsign", [x4 * 3], F.softsign),
    C("sign", [x4], torch.sign),
    C("floor", [untied(0.1, 3, 4)], torch.floor),
    C("ceil", [untied(0.1, 3, 4)], torch.ceil),
    C("erf", [x4 * 2], torch.erf),
    C("neg", [x4], torch.neg),
    C("abs", [x4], torch.abs),
    C("sin", [x4], torch.sin),
    C("cos", [x4], torch.cos),
    C("exp", [x4], torch.exp),
    C("log", [pos(3, 4)], torch.log),
    C("sqrt", [pos(3, 4)], torch.sqrt),
    C("rsqrt", [pos(3, 4)], torch.rsqrt),
    C("reciprocal", [pos(3, 4)], torch.reciprocal),
    C("pow_scalar", [pos(3, 4)], lambda x: torch.pow(x, 2.5), exponent=2.5),
    C("logical_not", [bools(3, 4)], torch.logical_not),
    # binary, with broadcasting
    C("add", [f32(2, 3, 4), f32(3, 1)], torch.add),
    C("sub", [f32(2, 3, 4), f32(4)], torch.sub),
    C("mul", [f32(2, 3, 4), f32(1, 3, 1)], torch.mul),
    C("div", [f32(2, 3, 4), pos(4)], torch.div),
    C("div", [ints(3, 4), ints(3, 4, lo=1)], lambda a, b: torch.div(a, b, rounding_mode="floor"),
      id="div-floor", rounding_mode="floor"),
    C("div", [ints(3, 4), ints(3, 4, lo=1)], lambda a, b: torch.div(a, b, rounding_mode="trunc"),
      id="div-trunc-int", rounding_mode="trunc"),
    C("div", [f32(3, 4) * 5, pos(3, 4)], lambda a, b: torch.div(a, b, rounding_mode="trunc"),
      id="div-trunc", rounding_mode="trunc"),
    C("pow", [pos(3, 4), f32(3, 4)], torch.pow),
    C("maximum", [f32(3, 4), f32(4)], torch.maximum),
    C("minimum", [f32(3, 4), f32(4)], torch.minimum),
    C("fmod", [f32(3, 4) * 5, pos(3, 4)], torch.fmod),
    C("remainder", [f32(3, 4) * 5, pos(3, 4)], torch.remainder),
    *[C(op, [ints(3, 4, lo=0, hi=3), ints(4, lo=0, hi=3)], getattr(torch, op))
      for op in ("eq", "ne", "lt", "le", "gt", "ge")],
    C("logical_and", [bools(3, 4), bools(3, 4)], torch.logical_and),
    C("logical_or", [bools(3, 4), bools(4)], torch.logical_or),
    C("where", [bools(3, 4), f32(3, 4), f32(4)], torch.where),
    # reductions and along-axis ops
    C("mean", [x4], lambda x: x.mean((2, 3), keepdim=True), dims=[2, 3], keepdim=True),
    C("sum", [x4], torch.sum, id="sum-all"),
    C("sum", [ints(3, 4)], lambda x: x.sum(-1), id="sum-int", dims=[-1]),
    C("prod", [f32(3, 4)], lambda x: x.prod(1), dims=[1]),
    C("amax", [x4], lambda x: x.amax((1, 3)), dims=[1, 3]),
    C("amin", [x4], lambda x: x.amin(0, keepdim=True), dims=[0], keepdim=True),
    C("any", [bools(3, 4)], lambda x: x.any(1), dims=[1]),
    C("all", [bools(3, 4)], lambda x: x.all(0), dims=[0]),
    C("norm", [x4], lambda x: torch.linalg.vector_norm(x, 2, (2, 3), True), dims=[2, 3], keepdim=True),
    C("norm", [x4], lambda x: torch.linalg.vector_norm(x, 1, (1,)), id="norm-l1", dims=[1], ord=1.0),
    C("var", [x4], lambda x: torch.var(x, (2, 3), correction=1), dims=[2, 3]),
    C("argmax", [x4], lambda x: x.argmax(1), dim=1),
    C("softmax", [x4 * 5], lambda x: F.softmax(x, 1), dim=1),
    C("log_softmax", [x4 * 5], lambda x: F.log_softmax(x, -1), dim=-1),
    C("cumsum", [x4], lambda x: torch.cumsum(x, 2), dim=2),
    # layout
    C("identity", [x4], lambda x: x),
    C("clone", [x4], torch.clone),
    C("contiguous", [x4], lambda x: x.contiguous()),
    C("dropout", [x4], lambda x: F.dropout(x, 0.3, training=False), p=0.3),
    C("reshape", [x4], lambda x: x.reshape(2, -1, 5), shape=[2, -1, 5]),
    C("flatten", [x4], lambda x: torch.flatten(x, 1), start_dim=1),
    C("flatten", [x4], lambda x: torch.flatten(x, 1, 2), id="flatten-mid", start_dim=1, end_dim=2),
    C("permute", [x4], lambda x: x.permute(0, 2, 3, 1), dims=[0, 2, 3, 1]),
    C("unsqueeze", [x4], lambda x: x.unsqueeze(-1), dim=-1),
    C("squeeze", [f32(2, 1, 3, 1)], lambda x: x.squeeze(1), dims=[1]),
    C("squeeze", [f32(2, 1, 3, 1)], torch.squeeze, id="squeeze-all"),
    C("expand", [f32(3, 1)], lambda x: x.expand(2, 3, 4), shape=[2, 3, 4]),
    C("expand", [f32(3, 1)], lambda x: x.expand(-1, 4), id="expand-keep", shape=[-1, 4]),
    C("repeat", [f32(2, 3)], lambda x: x.repeat(2, 1, 3), repeats=[2, 1, 3]),
    C("cat", [f32(2, 3, 4), f32(2, 1, 4), f32(2, 2, 4)], lambda *xs: torch.cat(xs, 1), dim=1),
    C("split", [x4], lambda x: torch.split(x, [1, 2], 1), split_sizes=[1, 2], dim=1),
    C("slice", [f32(4, 10)], lambda x: x[:, 1:9:2], dim=1, start=1, end=9, step=2),
    C("slice", [f32(4, 10)], lambda x: x[:, -3:], id="slice-neg", dim=1, start=-3, end=2**63 - 1),
    C("slice_scatter", [f32(4, 10), f32(4, 4)], lambda x, s: torch.slice_scatter(x, s, 1, 1, 9, 2),
      dim=1, start=1, end=9, step=2),
    C("select", [x4], lambda x: x[:, :, -1], dim=2, index=-1),
    C("index", [x4, ints(4, 2, lo=0, hi=3)], lambda x, i: x[:, i], dims=[1]),
    C("index", [x4, ints(3, lo=0, hi=2), ints(3, lo=0, hi=5)], lambda x, i, j: x[i, :, j],
      id="index-split", dims=[0, 2]),
    C("index_select", [x4, ints(4, lo=0, hi=5)], lambda x, i: torch.index_select(x, 2, i), dim=2),
    C("gather", [f32(3, 5), ints(3, 2, lo=0, hi=5)], lambda x, i: torch.gather(x, 1, i), dim=1),
    C("pad", [x4], lambda x: F.pad(x, [1, 2, 0, 1], value=0.5), pad=[1, 2, 0, 1], value=0.5),
    *[C("pad", [x4], lambda x, m=m: F.pad(x, [1, 2, 2, 1], mode=m), id=f"pad-{m}", pad=[1, 2, 2, 1], mode=m)
      for m in ("reflect", "replicate", "circular")],
    C("roll", [x4], lambda x: torch.roll(x, (1, -2), (2, 3)), shifts=[1, -2], dims=[2, 3]),
    C("flip", [x4], lambda x: torch.flip(x, (1, 3)), dims=[1, 3]),
    C("einsum", [f32(2, 3, 4), f32(2, 4, 5)], lambda a, b: torch.einsum("bij,bjk->bik", a, b),
      equation="bij,bjk->bik"),
    C("einsum", [f32(3, 4)], lambda a: torch.einsum("ij", a), id="einsum-implicit", equation="ij"),
    # neural-network layers
    C("conv3d", [f32(1, 2, 4, 5, 6), f32(4, 2, 3, 3, 3), f32(4)],
      lambda x, w, b: F.conv3d(x, w, b, (1, 2, 2), 1), stride=[1, 2, 2], padding=[1, 1, 1], tol=1e-4),
    C("local_response_norm", [x4 * 3], lambda x: F.local_response_norm(x, 3, 0.01, 0.75, 2.0), size=3, alpha=0.01,
      beta=0.75, k=2.0),
    C("conv1d", [f32(2, 4, 9), f32(6, 2, 3), f32(6)],
      lambda x, w, b: F.conv1d(x, w, b, 2, 1, 1, 2), stride=[2], padding=[1], groups=2, tol=1e-4),
    C("conv2d", [f32(2, 3, 9, 8), f32(4, 3, 3, 3), f32(4)],
      lambda x, w, b: F.conv2d(x, w, b, 2, 1, 2), stride=[2, 2], padding=[1, 1], dilation=[2, 2], tol=1e-4),
    C("conv2d", [f32(2, 6, 7, 7), f32(6, 1, 3, 3)], lambda x, w: F.conv2d(x, w, None, 1, 1, 1, 6),
      id="conv2d-depthwise", padding=[1, 1], groups=6, tol=1e-4),
    C("conv2d", [f32(1, 4, 6, 5), f32(8, 2, 1, 3)], lambda x, w: F.conv2d(x, w, None, (1, 2), (0, 1), 1, 2),
      id="conv2d-grouped", stride=[1, 2], padding=[0, 1], groups=2, tol=1e-4),
    C("conv_transpose2d", [f32(2, 4, 5, 6), f32(4, 3, 3, 3), f32(6)],
      lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1, 2), stride=[2, 2], padding=[1, 1],
      output_padding=[1, 1], groups=2, tol=1e-4),
    C("conv_transpose2d", [f32(1, 3, 4, 4), f32(3, 2, 2, 3)],
      lambda x, w: F.conv_transpose2d(x, w, None, 1, 0, 0, 1, 2), id="conv_transpose2d-dilated",
      dilation=[2, 2], tol=1e-4),
    C("linear", [f32(2, 5, 7), f32(3, 7), f32(3)], F.linear, tol=1e-4),
    C("linear", [f32(4, 7), f32(3, 7)], F.linear, id="linear-nobias", tol=1e-4),
    C("matmul", [f32(2, 1, 3, 4), f32(5, 4, 6)], torch.matmul, tol=1e-4),
    C("matmul", [f32(4), f32(2, 4, 3)], torch.matmul, id="matmul-vec", tol=1e-4),
    C("matmul", [f32(3, 4), f32(4)], torch.matmul, id="matmul-mat-vec", tol=1e-4),
    C("batch_norm", [x4, f32(3), pos(3), f32(3), f32(3)],
      lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, False, 0.1, 1e-3), eps=1e-3),
    C("layer_norm", [f32(2, 5, 8), f32(8), f32(8)], lambda x, w, b: F.layer_norm(x, (8,), w, b),
      normalized_shape=[8], tol=1e-4),
    C("layer_norm", [f32(2, 5, 8)], lambda x: F.layer_norm(x, (5, 8), eps=1e-6), id="layer_norm-plain",
      normalized_shape=[5, 8], eps=1e-6, tol=1e-4),
    C("group_norm", [f32(2, 6, 4, 4), f32(6), f32(6)], lambda x, w, b: F.group_norm(x, 3, w, b),
      num_groups=3, tol=1e-4),
    C("max_pool2d", [f32(2, 3, 9, 8)], lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
      kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True),
    C("max_pool2d", [f32(2, 3, 9, 8)], lambda x: F.max_pool2d(x, 2, 1, 0, 2), id="max_pool2d-dilated",
      kernel_size=[2, 2], stride=[1, 1], dilation=[2, 2]),
    C("avg_pool2d", [f32(2, 3, 9, 8)], lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
      kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True),
    C("avg_pool2d", [f32(2, 3, 9, 8)], lambda x: F.avg_pool2d(x, 3, 2, 1, True, False),
      id="avg_pool2d-exclude-pad", kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True,
      count_include_pad=False),
    C("avg_pool2d", [f32(2, 3, 8, 8)], lambda x: F.avg_pool2d(x, 2, divisor_override=3),
      id="avg_pool2d-divisor", kernel_size=[2, 2], divisor_override=3),
    C("adaptive_avg_pool2d", [f32(2, 3, 10, 13)], lambda x: F.adaptive_avg_pool2d(x, (7, 7)),
      output_size=[7, 7]),
    C("adaptive_avg_pool2d", [f32(2, 3, 8, 6)], lambda x: F.adaptive_avg_pool2d(x, 1), id="global-pool",
      output_size=[1]),
    C("scaled_dot_product_attention", [f32(2, 3, 5, 8), f32(2, 3, 7, 8), f32(2, 3, 7, 4)],
      F.scaled_dot_product_attention, tol=1e-4),
    C("scaled_dot_product_attention", [f32(2, 3, 5, 8), f32(2, 3, 7, 8), f32(2, 3, 7, 4), bools(5, 7) | True],
      lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m), id="sdpa-bool-mask", tol=1e-4),
    C("scaled_dot_product_attention", [f32(2, 5, 8), f32(2, 5, 8), f32(2, 5, 8), f32(2, 1, 5)],
      lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, scale=0.3), id="sdpa-float-mask",
      scale=0.3, tol=1e-4),
    C("scaled_dot_product_attention", [f32(2, 5, 8), f32(2, 5, 8), f32(2, 5, 8)],
      lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), id="sdpa-causal",
      is_causal=True, tol=1e-4),
    C("interpolate", [f32(2, 3, 5, 7)], lambda x: F.interpolate(x, (9, 4), mode="bilinear"), size=[9, 4],
      mode="bilinear"),
    C("interpolate", [f32(2, 3, 5, 7)], lambda x: F.interpolate(x, (9, 4), mode="bilinear", align_corners=True),
      id="interpolate-align-corners", size=[9, 4], mode="bilinear", align_corners=True),
    C("interpolate", [f32(2, 3, 5, 7)], lambda x: F.interpolate(x, scale_factor=2.0, mode="bilinear"),
      id="interpolate-scale", size=[10, 14], mode="bilinear", scales=[2.0, 2.0]),
    C("interpolate", [f32(2, 3, 5, 7)], lambda x: F.interpolate(x, (10, 3), mode="nearest"), id="interpolate-nearest",
      size=[10, 3]),
    C("abs", [ints(3, 4)], torch.abs, id="abs-int"),
    C("embedding", [ints(2, 5, lo=0, hi=10), f32(10, 4)], F.embedding),
    C("glu", [f32(3, 8)], lambda x: F.glu(x, -1)),
    # creation and conversion
    C("full", [], lambda: torch.full((2, 3), 1.5), shape=[2, 3], value=1.5),
    C("full_like", [ints(2, 3)], lambda x: torch.full_like(x, 7), value=7.0),
    C("arange", [], lambda: torch.arange(1.0, 4.0, 0.5), start=1.0, end=4.0, step=0.5, dtype="float32"),
    C("to", [f32(3, 4) * 5], lambda x: x.to(torch.int64), dtype="int64"),
    C("to", [ints(3, 4)], lambda x: x.to(torch.float32), id="to-float", dtype="float32"),
    # quantization
    C("quantize_per_tensor", [untied(0.05, 4, 6)],
      lambda x: torch.quantize_per_tensor(x, 0.05, 3, torch.qint8).int_repr(), scale=0.05, zero_point=3),
    C("quantize_per_tensor", [untied(0.05, 4, 6)],
      lambda x: torch.quantize_per_tensor(x, 0.05, 128, torch.quint8).int_repr(), id="quantize-uint8",
      scale=0.05, zero_point=128, dtype="uint8"),
    C("quantize_per_tensor", [untied(0.05, 4, 6)],
      lambda x: torch.clamp(torch.round(x / 0.05), -8, 7).to(torch.int8), id="quantize-int4",
      scale=0.05, quant_min=-8, quant_max=7),
    C("dequantize_per_tensor", [ints(4, 6, lo=-128, hi=128).astype(np.int8)],
      lambda q: (q.to(torch.float32) - 3) * 0.05, scale=0.05, zero_point=3),
    C("quantize_per_channel", [untied(0.02, 3, 5), np.array([0.02, 0.04, 0.1], np.float32),
                               np.array([0, 1, -2], np.int8)],
      lambda x, s, z: torch.quantize_per_channel(x, s.double(), z.long(), 0, torch.qint8).int_repr(), axis=0),
    C("fake_quantize", [untied(0.0625, 4, 6), np.array(-4.0, np.float32)],  # scale 2^-4
      lambda x, s: torch.fake_quantize_per_tensor_affine(x, 0.0625, 3, -8, 7), zero_point=3, quant_min=-8, quant_max=7),
    C("fake_quantize", [untied(0.03125, 3, 5), np.array([-5.0, -4.0, -3.0], np.float32)],
      lambda x, s: torch.fake_quantize_per_channel_affine(x, torch.exp2(s), torch.zeros(3, dtype=torch.int32), 0,
                                                          -1, 1), id="fake-quantize-ternary", quant_min=-1,
      quant_max=1, axis=0),
    C("fake_binarize", [untied(0.03125, 3, 5), np.array([-5.0, -4.0, -3.0], np.float32)],
      lambda x, s: torch.where(x >= 0, 1.0, -1.0) * torch.exp2(s)[:, None], axis=0),
    C("dequantize_per_channel", [ints(3, 5, lo=-128, hi=128).astype(np.int8),
                                 np.array([0.02, 0.04, 0.1], np.float32), np.array([0, 1, -2], np.int8)],
      lambda q, s, z: (q.float() - z.float()[:, None]) * s[:, None], axis=0),
]


def run_op(op: str, inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    g = go.Graph()
    values = [g.add_input(go.TensorType.of_array(a), f"in{i}") for i, a in enumerate(inputs)]
    g.outputs = g.create(op, values, attrs).results
    go.verify(g)
    return go.interpret(g, *inputs)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reference_matches_torch(case: Case) -> None:
    ours = run_op(case.op, case.inputs, case.attrs)
    expected = case.torch_fn(*(torch.from_numpy(np.ascontiguousarray(a)) for a in case.inputs))
    expected = list(expected) if isinstance(expected, tuple | list) else [expected]
    assert len(ours) == len(expected)
    for got, want in zip(ours, expected):
        want = want.numpy()
        assert got.shape == want.shape
        assert got.dtype == want.dtype, f"{case.id}: dtype {got.dtype} vs torch {want.dtype}"
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=case.tol, atol=case.tol)
        else:
            np.testing.assert_array_equal(got, want)


def test_every_builtin_op_is_tested_against_torch() -> None:
    from graphopt.ops import BUILTIN_OPS

    assert len(BUILTIN_OPS) > 90
    assert BUILTIN_OPS - {c.op for c in CASES} == set()


def test_registry_covers_the_torchvision_and_bert_op_inventory() -> None:
    """The ops the torchvision classifiers and BERT encoders need (shared/reference)."""
    needed = {"conv2d", "linear", "batch_norm", "layer_norm", "relu", "gelu", "silu", "hardswish",
              "hardsigmoid", "sigmoid", "tanh", "add", "sub", "mul", "div", "matmul", "softmax",
              "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean", "cat", "reshape", "flatten",
              "permute", "unsqueeze", "squeeze", "expand", "split", "slice", "select", "index",
              "where", "eq", "ne", "pad", "roll", "einsum", "scaled_dot_product_attention", "embedding",
              "hardtanh", "clamp", "exp", "norm", "dropout", "clone", "contiguous", "to", "full",
              "arange", "quantize_per_tensor", "quantize_per_channel", "dequantize_per_tensor",
              "dequantize_per_channel"}
    assert needed <= set(go.registered_ops())
