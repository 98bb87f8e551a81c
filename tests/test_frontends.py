import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

import graphopt as go
from tests.helpers import tiny_transformer
from tests.test_models import assert_close, check_every_path


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.Hardswish(), torch.nn.MaxPool2d(2))
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        y = y + torch.sigmoid(y)
        return torch.softmax(self.head(y.mean((2, 3))), dim=1)


def small() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return SmallNet().eval(), torch.randn(2, 3, 16, 16)


def test_names_and_locations_come_from_the_module() -> None:
    module, x = small()
    g = go.from_torch(module, (x,))
    assert [p.name for p in g.parameters][:2] == ["features.0.weight", "features.0.bias"]
    assert g.find("features.1")[0].op == "batch_norm" and g.find("head.1")[0].op == "linear"
    assert g.inputs[0].name == "x"


def test_exported_program_and_fx_graph_module_are_accepted() -> None:
    module, x = small()
    exported = go.from_torch(torch.export.export(module, (x,)))
    traced = go.from_torch(torch.fx.symbolic_trace(module), (x,))
    want = module(x).detach().numpy()
    for g in (exported, traced):
        assert_close(go.interpret(g, x.numpy())[0], want, "accepted form")


def test_dynamic_batch_is_a_symbol_through_every_backend(tmp_path: Path) -> None:
    module, x = small()
    g = go.from_torch(module, (x[:1],), dynamic_batch=True)
    assert g.inputs[0].shape == ("N", 3, 16, 16)
    path = tmp_path / "dyn.onnx"
    go.to_onnx(g, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fx = go.to_torch(g).eval()
    for batch in (1, 3, 5):
        xb = torch.randn(batch, 3, 16, 16)
        want = module(xb).detach().numpy()
        assert_close(go.interpret(g, xb.numpy())[0], want, f"interpreter batch {batch}")
        assert_close(session.run(None, {"x": xb.numpy()})[0], want, f"ORT batch {batch}")
        assert_close(fx(xb), want, f"to_torch batch {batch}")


def test_to_torch_is_trainable_with_the_original_names() -> None:
    module, x = small()
    fx = go.to_torch(go.from_torch(module, (x,)))
    assert {n for n, _ in fx.named_parameters()} == {n for n, _ in module.named_parameters()}
    assert "features.1.running_mean" in dict(fx.named_buffers())
    fx.train()
    fx(x).sum().backward()
    assert fx.get_parameter("features.0.weight").grad is not None
    fx.eval()
    assert torch.equal(fx(x), fx(x))  # dropout is a submodule: off in eval mode


class Branchy(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x - 1


class Det(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.det(x)


def test_data_dependent_control_flow_is_a_clear_error() -> None:
    with pytest.raises(go.GraphoptError, match=r"torch\.export could not trace Branchy.*data-dependent"):
        go.from_torch(Branchy(), (torch.randn(3),))


def test_an_op_without_a_converter_names_itself_and_how_to_register() -> None:
    message = (r"unsupported op aten\._linalg_det\.default \(from torch's decomposition of aten\.linalg_det\.default\)"
               r".*register_aten\('linalg_det\.default'\)")
    with pytest.raises(go.GraphoptError, match=message):
        go.from_torch(Det(), (torch.randn(3, 3),))


def test_nan_weights_are_refused() -> None:
    module, x = small()
    with torch.no_grad():
        module.head[1].weight[0, 0] = float("nan")
    with pytest.raises(go.GraphoptError, match=r"parameter head\.1\.weight holds 1 NaN"):
        go.from_torch(module, (x,))


def export_legacy(module: torch.nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=opset)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_onnx_from_the_legacy_exporter_at_older_opsets(opset: int, tmp_path: Path) -> None:
    module, x = small()
    path = tmp_path / f"legacy{opset}.onnx"
    export_legacy(module, x, path, opset)
    g = go.from_onnx(path)
    go.verify(g)
    assert_close(go.interpret(g, x.numpy())[0], module(x).detach().numpy(), f"opset {opset}")


def test_onnx_from_the_dynamo_exporter(tmp_path: Path) -> None:
    module, x = small()
    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=True)
    g = go.from_onnx(path)
    assert_close(go.interpret(g, x.numpy())[0], module(x).detach().numpy(), "dynamo export")


def test_large_models_use_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import graphopt.backends.onnx as backend

    monkeypatch.setattr(backend, "EXTERNAL_DATA_BYTES", 10_000)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8),
                                 torch.nn.Flatten()).eval()
    x = torch.randn(2, 4, 64)  # Flatten lowers to a Reshape whose small shape tensor must stay inline for ORT
    path = tmp_path / "big.onnx"
    go.to_onnx(go.from_torch(module, (x,)), path)
    assert (tmp_path / "big.onnx.data").stat().st_size >= 64 * 64 * 4
    want = module(x).detach().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], want, "ORT with external data")
    assert_close(go.interpret(go.from_onnx(path), x.numpy())[0], want, "external data")


def test_malformed_and_truncated_onnx_files(tmp_path: Path) -> None:
    module, x = small()
    path = tmp_path / "m.onnx"
    go.to_onnx(go.from_torch(module, (x,)), path)
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(go.GraphoptError, match="malformed or truncated ONNX file"):
        go.from_onnx(truncated)
    with pytest.raises(go.GraphoptError, match="does not exist"):
        go.from_onnx(tmp_path / "missing.onnx")


def test_an_onnx_op_without_a_converter_names_the_node() -> None:
    node = helper.make_node("Hardmax", ["x"], ["y"], name="head/hardmax")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(go.GraphoptError, match="Hardmax node 'head/hardmax': unsupported ONNX op 'Hardmax'; register"):
        go.from_onnx(model)


def test_onnx_names_follow_the_module_paths(tmp_path: Path) -> None:
    module, x = small()
    model = go.to_onnx(go.from_torch(module, (x,)))
    names = [n.name for n in model.graph.node]
    assert "features.0/Conv" in names and "head.1/Gemm" in names
    assert "features.0.weight" in {i.name for i in model.graph.initializer}


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "mobilevitv2_050", "levit_128s"])
def test_timm_architectures(name: str, tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    check_every_path(timm.create_model(name, pretrained=False).eval(), (torch.randn(1, 3, 224, 224),), tmp_path)


@pytest.mark.parametrize("family", ["gpt2", "t5", "distilbert"])
def test_transformers_architectures(family: str, tmp_path: Path) -> None:
    model, inputs = tiny_transformer(family)
    check_every_path(model, inputs, tmp_path)


def test_an_aten_op_without_a_converter_is_decomposed_by_torch_first() -> None:
    class Composite(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.addcmul(x, x, x, value=0.5) + torch.diff(x, dim=1).sum()

    x = torch.randn(2, 5)
    graph = go.from_torch(Composite(), (x,))
    assert not any(n.op in ("addcmul", "diff") for n in graph)
    np.testing.assert_allclose(go.interpret(graph, x.numpy())[0], Composite()(x).numpy(), atol=1e-5)
