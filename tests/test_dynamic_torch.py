"""from_torch with torch.export's dynamic_shapes: MiniLM (real weights, two layers) keeps a
symbolic batch and sequence length through import, pruning and int8, and every backend runs it at
lengths it was never traced at, without padding."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import graphopt as go
from graphopt import models


@pytest.fixture(scope="module")
def minilm() -> tuple[models.TextModel, go.Graph]:
    text = models.minilm()
    text.module.bert.encoder.layer = text.module.bert.encoder.layer[:2]
    ids, mask = text.inputs(models.SENTENCES, 16)
    n, length = torch.export.Dim("N", min=1, max=64), torch.export.Dim("L", min=2, max=512)
    graph = go.from_torch(text.module, (ids, mask), dynamic_shapes=({0: n, 1: length}, {0: n, 1: length}))
    return text, graph


def unpadded(text: models.TextModel, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batch = text.tokenizer(sentences, return_tensors="np", padding=True)
    return batch["input_ids"], batch["attention_mask"]


SENTENCE_SETS = [["Yes."], models.SENTENCES[:3], [models.HARD_TEXTS[-1]]]  # 4, 14 and 67 tokens


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_dims_take_the_names_of_torch_export_dims(minilm: tuple) -> None:
    _, graph = minilm
    assert [str(v.type) for v in graph.inputs] == ["int64[N, L]", "int64[N, L]"]
    assert str(graph.outputs[0].type) == "float32[N, 384]"


def test_every_backend_runs_every_length(minilm: tuple) -> None:
    text, graph = minilm
    session = ort.InferenceSession(go.to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    module = go.to_torch(graph)
    for sentences in SENTENCE_SETS:
        ids, mask = unpadded(text, sentences)
        with torch.no_grad():
            want = text.module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            np.testing.assert_allclose(module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy(), want,
                                       atol=1e-5)
        np.testing.assert_allclose(go.interpret(graph, ids, mask)[0], want, atol=1e-5)
        np.testing.assert_allclose(session.run(None, {"input_ids": ids, "attention_mask": mask})[0], want, atol=1e-5)


def test_pruned_int8_keeps_the_dynamic_length_calibrated_on_unpadded_sentences(minilm: tuple) -> None:
    text, graph = minilm
    calibration = [unpadded(text, models.varied_sentences(4, seed=k)) for k in range(4)]
    assert len({c[0].shape[1] for c in calibration}) > 1  # the samples differ in length
    pruned = go.run_pipeline(graph, "canonicalize,fold-bn,prune{macs=0.6}", calibration=calibration).graph
    int8 = go.run_pipeline(pruned, "fuse-activation,quantize", calibration=calibration).graph
    assert [str(v.type) for v in int8.inputs] == ["int64[N, L]", "int64[N, L]"]
    session = ort.InferenceSession(go.to_onnx(int8).SerializeToString(), providers=["CPUExecutionProvider"])
    for sentences in SENTENCE_SETS:
        ids, mask = unpadded(text, sentences)
        want = go.interpret(pruned, ids, mask)[0]
        assert cosine(session.run(None, {"input_ids": ids, "attention_mask": mask})[0], want).min() > 0.99


def test_int8_onnx_keeps_the_sizes_onnx_runtime_fuses_on(minilm: tuple) -> None:
    """A symbolic size that went through shape arithmetic is lost to ONNX Runtime's own inference, and
    a dequantized int32 bias is not a constant to it: either stops the residual add and layer norm
    from fusing, and every layer pays a kernel or two per linear for it."""
    text, graph = minilm
    calibration = [unpadded(text, models.varied_sentences(4, seed=k)) for k in range(2)]
    int8 = go.run_pipeline(graph, "canonicalize,fold-bn,fuse-activation,quantize", calibration=calibration).graph
    model = go.to_onnx(int8)
    initializers = {t.name: t for t in model.graph.initializer}
    assert not [n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers
                and initializers[n.input[0]].data_type == onnx.TensorProto.INT32]
    sizes = {d.dim_param for v in model.graph.value_info for d in v.type.tensor_type.shape.dim}
    assert {"N", "L"} <= sizes
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        fused = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert fused.count("SkipLayerNormalization") == 4  # two layers: after attention and after the MLP
    assert "DequantizeLinear" not in fused


def test_an_arange_from_a_symbolic_start_is_a_clear_error() -> None:
    class Shifted(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.arange(x.shape[1], 2 * x.shape[1])

    x = torch.ones(2, 5)
    with pytest.raises(go.GraphoptError, match="arange from or by a size computed at run time"):
        go.from_torch(Shifted(), (x,), dynamic_shapes=({1: torch.export.Dim("L", min=2, max=64)},))


@pytest.fixture(scope="module")
def resnet18_hw() -> go.Graph:
    import torchvision

    size = {2: torch.export.Dim("H", min=33, max=512), 3: torch.export.Dim("W", min=33, max=512)}
    return go.from_torch(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 96, 96),), dynamic_shapes=(size,))


@pytest.mark.parametrize("pipeline", ["canonicalize,fold-bn", "canonicalize,fold-bn,prune{macs=0.5}",
                                      "canonicalize,fold-bn,remove-blocks{count=2}",
                                      "canonicalize,fold-bn,sparsify{ratio=0.5}",
                                      "canonicalize,fold-bn,fuse-activation,quantize"])
def test_passes_keep_a_cnns_symbolic_height_and_width(resnet18_hw: go.Graph, pipeline: str) -> None:
    graph = resnet18_hw
    assert str(graph.inputs[0].type) == "float32[1, 3, H, W]"
    rng = np.random.default_rng(0)
    calibration = [(rng.standard_normal((1, 3, h, w)).astype(np.float32),) for h, w in [(64, 80), (96, 96), (72, 120)]]
    result = go.run_pipeline(graph, pipeline, calibration=calibration).graph
    assert str(result.inputs[0].type) == "float32[1, 3, H, W]"
    session = ort.InferenceSession(go.to_onnx(result).SerializeToString(), providers=["CPUExecutionProvider"])
    for h, w in [(64, 64), (100, 77)]:
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        got = session.run(None, {"x": x})[0]
        if pipeline.endswith("quantize"):  # int8 against the float model
            assert cosine(got, go.interpret(graph, x)[0]).min() > 0.98
        else:
            np.testing.assert_allclose(got, go.interpret(result, x)[0], atol=1e-4)


def test_dims_torch_cannot_keep_in_their_range_are_a_clear_error() -> None:
    import torchvision

    size = {2: torch.export.Dim("H", min=32, max=512)}
    with pytest.raises(go.UnsupportedError, match=r"Not all values of H .*; narrow the Dims' ranges .*Dim\.AUTO"):
        go.from_torch(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 96, 96),), dynamic_shapes=(size,))


def test_macs_of_a_symbolic_graph_are_counted_at_the_samples_size(resnet18_hw: go.Graph) -> None:
    import torchvision

    static = go.graph_cost(go.from_torch(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 96, 128),))).macs
    samples = [(np.zeros((1, 3, 96, 128), np.float32),)]
    result = go.run_pipeline(resnet18_hw, "prune{macs=0.5}", calibration=samples)
    summary = result.records[0].details
    assert summary.macs_before == static  # the pruning budget is half of the 96x128 model's MACs
    assert summary.macs_after == pytest.approx(0.5 * static, rel=0.03)


def test_distill_trains_on_sentences_of_different_lengths(minilm: tuple) -> None:
    text, graph = minilm
    data = [unpadded(text, models.varied_texts(4, seed=k)) for k in range(6)]
    assert len({d[0].shape[1] for d in data}) > 1
    result = go.run_pipeline(graph, "prune{macs=0.6},distill{epochs=3,batch-size=4,loss=cosine,lr=0.001}",
                             calibration=data[:2], data=data)
    losses = result.records[-1].details.losses
    assert losses[-1] < losses[0] and str(result.graph.inputs[0].type) == "int64[N, L]"


class AdaptiveHead(torch.nn.Module):
    """alexnet's and VGG's head: adaptive pooling to a fixed grid, whatever H and W are."""

    def __init__(self, grid: tuple[int, int]) -> None:
        super().__init__()
        self.conv, self.grid = torch.nn.Conv2d(3, 4, 3, stride=2), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), self.grid), 1)


@pytest.mark.parametrize("grid", [(6, 6), (3, 5)])
def test_adaptive_pooling_over_a_symbolic_height_and_width_runs_in_onnx_at_any_size(grid: tuple) -> None:
    module = AdaptiveHead(grid).eval()
    size = {2: torch.export.Dim("H", min=8, max=512), 3: torch.export.Dim("W", min=8, max=512)}
    graph = go.from_torch(module, (torch.randn(1, 3, 40, 40),), dynamic_shapes=(size,))
    session = ort.InferenceSession(go.to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for h, w in [(40, 40), (13, 29), (64, 17)]:  # bins even, uneven, and uneven with overlaps
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, atol=1e-5)
        np.testing.assert_allclose(go.interpret(graph, x)[0], want, atol=1e-5)


class PadToMultiple(torch.nn.Module):
    """What OCR and detection models do first: pad H and W up to a multiple of the stride."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        return self.conv(torch.nn.functional.pad(x, (0, (8 - w % 8) % 8, 1, (8 - h % 8) % 8)))


def test_padding_by_a_width_computed_from_symbolic_sizes_runs_at_any_size() -> None:
    module = PadToMultiple().eval()
    size = {2: torch.export.Dim("H", min=8, max=512), 3: torch.export.Dim("W", min=8, max=512)}
    graph = go.from_torch(module, (torch.randn(1, 3, 20, 30),), dynamic_shapes=(size,))
    (pad,) = [n for n in graph if n.op == "pad"]
    assert not all(isinstance(p, int) for p in pad.attrs["pad"])
    assert go.print_graph(go.parse(go.print_graph(graph))) == go.print_graph(graph)
    session = ort.InferenceSession(go.to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    fx_module = go.to_torch(graph)
    rng = np.random.default_rng(0)
    for h, w in [(20, 30), (16, 16), (9, 57)]:
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(fx_module(torch.from_numpy(x)).numpy(), want, atol=1e-5)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, atol=1e-5)
        np.testing.assert_allclose(go.interpret(graph, x)[0], want, atol=1e-5)
