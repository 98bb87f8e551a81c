"""Real models through every path: torch.export -> IR -> interpreter, ONNX Runtime, torch.fx, and back
through the ONNX frontend; each agrees with PyTorch eager within 1e-4 of the output scale."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import graphopt as go
from graphopt import models

CI_SUBSET = ["resnet18", "mobilenet_v3_small", "densenet121", "efficientnet_b0", "vit_b_32", "swin_t",
             "convnext_tiny", "squeezenet1_0", "googlenet", "regnet_y_400mf", "shufflenet_v2_x0_5", "maxvit_t"]


def assert_close(got: object, want: np.ndarray, what: str) -> None:
    got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    scale = max(float(np.abs(want).max()), 1e-12)
    error = float(np.abs(got - want).max()) / scale
    assert error <= 1e-4, f"{what}: max abs error {error:.2e} of the output scale"


def check_every_path(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], tmp_path: Path) -> go.Graph:
    with torch.no_grad():
        want = module(*inputs).numpy().astype(np.float64)
    arrays = [x.numpy() for x in inputs]
    graph = go.from_torch(module, inputs)
    go.verify(graph)
    assert_close(go.interpret(graph, *arrays)[0], want, "interpreter")
    path = tmp_path / "model.onnx"
    go.to_onnx(graph, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})[0], want, "ORT")
    with torch.no_grad():
        assert_close(go.to_torch(graph).eval()(*inputs), want, "to_torch")
    reimported = go.from_onnx(path)
    go.verify(reimported)
    assert_close(go.interpret(reimported, *arrays)[0], want, "from_onnx")
    return graph


@pytest.mark.parametrize("name", CI_SUBSET)
def test_torchvision_classifier(name: str, tmp_path: Path) -> None:
    module, x = models.torchvision_model(name)
    graph = check_every_path(module, (x,), tmp_path)
    weights = {p.name for p in graph.parameters if not p.name.startswith("_") and "_tensor" not in p.name}
    assert weights and weights <= set(module.state_dict())  # state-dict names kept (constants aside)


def test_minilm_real_weights(tmp_path: Path) -> None:
    text = models.minilm()
    graph = check_every_path(text.module, text.inputs(models.SENTENCES, seq_len=32), tmp_path)
    assert "bert.embeddings.word_embeddings.weight" in {p.name for p in graph.parameters}
    assert any(n.op == "scaled_dot_product_attention" for n in graph)
    assert graph.find("bert.encoder.layer.0.attention.self.query")[0].op == "linear"


def test_varied_texts_never_run_out_of_sentences() -> None:
    """A paragraph draws up to six statements: one text per seed exercises every kind over many seeds."""
    texts = [t for seed in range(300) for t in models.varied_texts(1, seed)]
    assert len(texts) == 300 and all(t.strip() for t in texts)


def test_natural_images_have_photo_statistics_and_the_hard_ones_vary() -> None:
    images = models.natural_images(8, seed=0)
    assert images.shape == (8, 3, 224, 224) and images.dtype == np.float32
    pixels = images * np.reshape(models.IMAGENET_STD, (3, 1, 1)) + np.reshape(models.IMAGENET_MEAN, (3, 1, 1))
    assert pixels.min() >= 0 and pixels.max() <= 1  # normalized from [0, 1] as torchvision expects
    neighbours = [np.corrcoef(x[c, :, :-1].ravel(), x[c, :, 1:].ravel())[0, 1] for x in images for c in range(3)]
    assert min(neighbours) > 0.5  # neighbouring pixels agree, as in photos (white noise: 0)
    assert np.array_equal(images, models.natural_images(8, seed=0)) and not np.array_equal(
        images, models.natural_images(8, seed=1))
    hard = models.natural_images(7, seed=0, hard=True)
    spread = [float(x.std()) for x in hard]
    assert min(spread) < 0.5 * float(images.std()) < max(spread)  # low contrast beside saturation
