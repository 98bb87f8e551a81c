"""qat: fake-quantized fine-tuning through the shared training loop, exported in quantize's QDQ form.
On a CNN trained on scikit-learn's digits: ternary and 4-bit weights recover most of what
post-training rounding loses, the export is the int8 form ONNX Runtime fuses (its output the
interpreter's), the fake-quantize op learns its scale (LSQ) and lowers to ONNX exactly, and bad
input is refused with what to do."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from graphopt.backends.ort_fusion import check_fusion
from graphopt.backends.torch import fake_quantize
from hypothesis import assume, given, settings

import graphopt
from graphopt.interp import interpret
from graphopt.quant import sqnr_db
from graphopt.testing import graphs_with_inputs
from tests.helpers import LAYER_OPS, trained_on_digits


class SmallDigitsNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1, stride=2), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.classifier = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def digits() -> tuple[graphopt.Graph, list, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    graph, data, x, y = trained_on_digits(SmallDigitsNet(), images=True, epochs=20)
    return graphopt.run_pipeline(graph, "canonicalize,fold-bn,fuse-activation").graph, data, x, y


def accuracy(graph: graphopt.Graph, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(interpret(graph, x)[0].argmax(1) == y))


QAT = "qat{epochs=%d,weight-bits=%s,lr=0.005,batch-size=32}"


# ternary on this small net (9 weights a first-layer channel) recovers most, not all: 31% -> 80%, fp32 92%
@pytest.mark.parametrize(("bits", "bound", "gain", "within"), [("ternary", 1, 0.3, 0.15), ("4", 7, 0.0, 0.02)])
def test_qat_recovers_low_bit_accuracy_and_exports_the_int8_form(digits, tmp_path, bits: str, bound: int,
                                                                 gain: float, within: float) -> None:
    graph, data, x, y = digits
    fp32 = accuracy(graph, x, y)
    rounded = graphopt.run_pipeline(graph, QAT % (0, bits), data=data)  # epochs=0: post-training rounding
    trained = graphopt.run_pipeline(graph, QAT % (5, bits), data=data)
    losses = trained.records[-1].details.losses
    assert len(losses) == 5 and losses[-1] < losses[0]
    before, after = accuracy(rounded.graph, x, y), accuracy(trained.graph, x, y)
    assert after > before + gain and after >= fp32 - within, (fp32, before, after)
    weights = [p.data for p in trained.graph.parameters if p.name.endswith(".int8")]
    assert len(weights) == 3 and max(int(np.abs(w).max()) for w in weights) == bound
    if bits == "ternary":
        assert set(np.unique(np.concatenate([w.ravel() for w in weights]))) == {-1, 0, 1}
    path = tmp_path / f"{bits}.onnx"
    graphopt.to_onnx(trained.graph, path)
    report = check_fusion(path)
    assert report.unfused == [] and report.int8_kernels >= 3, report.markdown()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x[:64]})[0]
    want = interpret(trained.graph, x[:64])[0]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.98
    np.testing.assert_allclose(got, want, atol=0.05 * float(np.abs(want).max()))


def test_qat_at_epochs_0_is_post_training_quantization(digits) -> None:
    graph, data, x, _ = digits
    qat = graphopt.run_pipeline(graph, QAT % (0, "8"), data=data[:32]).graph
    ptq = graphopt.run_pipeline(graph, "quantize{budget=0}", calibration=data[:32]).graph
    assert sorted(n.op for n in qat) == sorted(n.op for n in ptq)
    assert sqnr_db(interpret(ptq, x[:64]), interpret(qat, x[:64])) > 40  # scales equal up to 2^log2(s) rounding


@pytest.mark.parametrize(("bits", "levels"), [("binary", {-1, 1}), ("ternary", {-1, 0, 1})])
def test_binary_and_ternary_weights_take_their_levels(digits, bits: str, levels: set[int]) -> None:
    graph, data, x, y = digits
    trained = graphopt.run_pipeline(graph, QAT % (5, bits), data=data).graph
    weights = np.concatenate([p.data.ravel() for p in trained.parameters if p.name.endswith(".int8")])
    assert set(np.unique(weights)) == levels
    assert accuracy(trained, x, y) > 0.5  # ten classes: chance is 0.1


def test_qat_keeps_the_choices_of_a_quantized_graph(digits) -> None:
    graph, data, _, _ = digits
    once = graphopt.run_pipeline(graph, QAT % (1, "8"), data=data[:64]).graph
    again = graphopt.run_pipeline(once, QAT % (1, "8"), data=data[:64])
    assert not again.records[-1].changed


def test_fake_quantize_learns_its_scale_and_passes_gradients_inside_its_range() -> None:
    x = torch.tensor([-3.0, -0.26, 0.1, 0.74, 5.0], requires_grad=True)
    log2_scale = torch.tensor(-1.0, requires_grad=True)  # scale 0.5
    y = fake_quantize(x, log2_scale, 0, -2, 2, None)
    assert y.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # straight through inside, stopped where clamped
    assert log2_scale.grad is not None and float(log2_scale.grad) != 0.0


def test_fake_quantize_and_binarize_lower_to_onnx_as_the_interpreter_computes_them(tmp_path) -> None:
    g = graphopt.Graph()
    x = g.add_input(graphopt.TensorType.of_array(np.zeros((3, 5), np.float32)), "x")
    s = g.add_parameter(np.log2(np.array([0.02, 0.05, 0.1], np.float32)), "s")
    t = g.add_parameter(np.log2(np.float32(0.03)), "t")
    y = g.create("fake_quantize", [x, s], {"quant_min": -1, "quant_max": 1, "axis": 0}).result
    z = g.create("fake_binarize", [x, s], {"axis": 0}).result
    g.outputs = [g.create("fake_quantize", [y, t], {"zero_point": 3, "quant_min": 0, "quant_max": 15}).result, z]
    graphopt.to_onnx(g, tmp_path / "fq.onnx")
    data = np.random.default_rng(0).normal(0, 0.1, (3, 5)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "fq.onnx"), providers=["CPUExecutionProvider"])
    for got, want in zip(session.run(None, {"x": data}), interpret(g, data)):
        np.testing.assert_array_equal(got, want)


def test_a_size_budget_mixes_widths_and_packed_storage_holds_it(digits, tmp_path) -> None:
    """size= picks per-layer widths whose packed parameters fit, the widths are what the export holds,
    and to_onnx(packed=True) stores them in INT2 / INT4 (smaller file, the same kernels and outputs)."""
    graph, data, x, y = digits
    floats = sum(p.data.nbytes for p in graph.parameters)
    pipeline = "qat{epochs=2,weight-bits=binary,size=0.003,lr=0.005,batch-size=32}"
    result = graphopt.run_pipeline(graph, pipeline, data=data[:256])
    summary = result.records[-1].details
    assert summary.size_mb <= 0.003 < floats / 1e6
    assert len(summary.widths) == 3 and len(set(summary.widths.values())) > 1, summary.widths
    assert "widths under the size budget" in summary.line()
    levels = {p.name.removesuffix(".weight.int8"): int(np.abs(p.data).max()) for p in result.graph.parameters
              if p.name.endswith(".weight.int8")}
    bounds = {"binary": 1, "ternary": 1, "4": 7}
    for layer, width in summary.widths.items():
        if width in bounds:
            assert levels[layer] <= bounds[width], (layer, width, levels)
        elif width == "float":
            assert layer not in levels
    assert accuracy(result.graph, x, y) > 0.8
    plain, packed = tmp_path / "int8.onnx", tmp_path / "packed.onnx"
    graphopt.to_onnx(result.graph, plain)
    graphopt.to_onnx(result.graph, packed, packed=True)
    assert packed.stat().st_size < plain.stat().st_size
    assert check_fusion(packed).unfused == [], check_fusion(packed).markdown()  # the Casts fold: int8 kernels
    stored = {t.name.split(".weight.int8")[0]: t.data_type for t in onnx.load(packed).graph.initializer
              if ".weight.int8" in t.name}
    types = {"binary": onnx.TensorProto.INT2, "ternary": onnx.TensorProto.INT2, "4": onnx.TensorProto.INT4,
             "8": onnx.TensorProto.INT8}
    assert stored == {layer: types[w] for layer, w in summary.widths.items() if w != "float"}, stored
    outputs = []
    for path in (plain, packed):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x[:64]})[0])
    want = interpret(result.graph, x[:64])[0]
    for got in outputs:
        np.testing.assert_allclose(got, want, atol=0.05 * float(np.abs(want).max()))


def test_a_size_below_the_narrowest_widths_is_refused(digits) -> None:
    graph, data, _, _ = digits
    with pytest.raises(graphopt.GraphoptError, match="raise size or narrow weight-bits"):
        graphopt.run_pipeline(graph, "qat{epochs=0,weight-bits=8,size=0.001}", data=data[:16])


@pytest.mark.parametrize(("pipeline", "data", "message"), [
    ("qat", None, "qat needs training data"),
    ("qat{weight-bits=3}", [], "weight-bits"),
    ("qat", "bn", "is a batch norm; fold it first"),
])
def test_bad_qat_input_is_refused_with_what_to_do(digits, pipeline: str, data: object, message: str) -> None:
    graph = digits[0]
    if data == "bn":
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).eval()
        graph, data = graphopt.from_torch(net, (torch.randn(1, 1, 8, 8),)), [(np.zeros((1, 1, 8, 8), np.float32),)]
    with pytest.raises(graphopt.GraphoptError, match=message):
        graphopt.run_pipeline(graph, pipeline, data=data)


def test_cli_runs_qat_on_a_data_file_and_reports_it(digits, tmp_path) -> None:
    from graphopt.cli import main

    graph, data, _, _ = digits
    source, training, out = tmp_path / "m.onnx", tmp_path / "train.npz", tmp_path / "q.onnx"
    graphopt.to_onnx(graph, source)
    np.savez(training, **{graph.inputs[0].name: np.concatenate([s[0] for s in data[:128]])})
    assert main(["opt", str(source), "-p", "qat{epochs=1,weight-bits=4}", "--data", str(training), "-o", str(out),
                 "-q"]) == 0
    report = out.with_suffix(".report.md").read_text()
    assert "## Quantization-aware training" in report and "1 epoch(s) on 128 sample(s)" in report
    assert out.with_name("q.report.qat.png").stat().st_size > 5_000


@settings(max_examples=40, deadline=None)
@given(graphs_with_inputs(max_nodes=10, ops=LAYER_OPS))
def test_qat_at_epochs_0_matches_quantize_on_generated_graphs(case: tuple[graphopt.Graph, list[np.ndarray]]) -> None:
    """The property behind the contract: qat's starting point is quantize's model (the same nodes, the
    same int8 weights up to one step where 2^log2(scale) rounds, scales equal to float32 precision),
    and a second qat keeps it."""
    graph, inputs = case
    folded = graphopt.run_pipeline(graph, "fold-bn").graph
    assume(not any(n.op == "batch_norm" for n in folded))  # qat refuses unfolded batch norm (tested above)
    sample = [tuple(inputs)]
    qat = graphopt.run_pipeline(folded, "qat{epochs=0}", data=sample).graph
    ptq = graphopt.run_pipeline(folded, "quantize{budget=0}", calibration=sample).graph
    assert [n.op for n in qat] == [n.op for n in ptq]
    ours, theirs = {p.name: p.data for p in qat.parameters}, {p.name: p.data for p in ptq.parameters}
    assert ours.keys() == theirs.keys()
    for name, array in ours.items():
        if array.dtype.kind == "f":
            np.testing.assert_allclose(array, theirs[name], rtol=1e-6, err_msg=name)
        else:
            assert np.abs(array.astype(np.int64) - theirs[name]).max(initial=0) <= 1, name
    assert not graphopt.run_pipeline(qat, "qat{epochs=0}", data=sample).records[0].changed
