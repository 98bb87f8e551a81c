"""Quantization: observers, calibration checks, the quantize pass contract (SQNR budget on the
calibration data, idempotence) on real and generated graphs, exact integer semantics against ONNX
Runtime, the fusion check, weight-only int4, and the CLI with its report."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from graphopt.backends.ort_fusion import check_fusion

import graphopt
from graphopt import models
from graphopt.cli import main
from graphopt.interp import interpret
from graphopt.ir.types import DType
from graphopt.quant import Calibration, CalibrationError, Histogram, observe_range, sqnr_db
from graphopt.quant.integer import interpret_integer
from graphopt.quant.observers import affine_qparams, expected_sqnr_db
from graphopt.quant.runner import Runner
from graphopt.testing import check_pass

RNG = np.random.default_rng(0)
DEFAULT_PIPELINE = "canonicalize,fold-bn,fuse-activation,quantize"


class SmallNet(torch.nn.Module):
    """conv-relu, a residual add, max pool, global pool and a linear head: every ort-cpu int8 op."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.body = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = torch.nn.functional.max_pool2d(torch.relu(self.body(y) + y), 2)
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


def samples(shape: tuple[int, ...], count: int) -> list[tuple[np.ndarray]]:
    return [(RNG.standard_normal(shape).astype(np.float32),) for _ in range(count)]


def ort_run(model: str, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def small() -> tuple[graphopt.Graph, list[tuple[np.ndarray]]]:
    torch.manual_seed(0)
    graph = graphopt.from_torch(SmallNet().eval(), (torch.randn(1, 3, 16, 16),))
    return graph, samples((1, 3, 16, 16), 8)


# --- observers -------------------------------------------------------------------------------------------
def test_streaming_histogram_matches_one_shot() -> None:
    data = [(RNG.standard_normal(1000) * (i + 1)).astype(np.float32) for i in range(5)]
    streamed = Histogram()
    for d in data:
        streamed.add(d)
    whole = np.concatenate(data)
    assert (streamed.min, streamed.max) == (whole.min(), whole.max())
    assert streamed.counts.sum() == pytest.approx(whole.size)
    assert streamed.quantile(0.5) == pytest.approx(np.median(whole), abs=0.1)


def test_histograms_of_shards_merge_into_the_one_pass_histogram() -> None:
    """Aligned power-of-two bins: the counts depend on the values only, so order and sharding (one
    shard a torchrun rank) give the same histogram, bit for bit."""
    rng = np.random.default_rng(7)
    data = [(rng.standard_normal(500) * 10.0 ** rng.uniform(-3, 3) + rng.normal(0, 5)).astype(np.float32)
            for _ in range(12)] + [np.zeros(7, np.float32)]

    def histogram(parts: list[np.ndarray]) -> Histogram:
        h = Histogram()
        for part in parts:
            h.add(part)
        return h

    one = histogram(data)
    merged = histogram(data[::3])
    merged.merge(histogram(data[1::3]))
    merged.merge(histogram(data[2::3]))
    for other in (histogram(data[::-1]), merged):
        assert (other.level, other.start, other.min, other.max) == (one.level, one.start, one.min, one.max)
        np.testing.assert_array_equal(other.counts, one.counts)
    assert one.capacity // 2 < one.bins <= one.capacity and one.counts.sum() == sum(d.size for d in data)


def test_a_histogram_leaves_infinite_sentinels_out() -> None:
    hist = Histogram()
    hist.add(np.array([0.5, -np.inf, 2.0, np.nan], np.float32))  # an attention mask's -inf, say
    hist.add(np.full(3, -np.inf, np.float32))
    assert (hist.min, hist.max, hist.counts.sum()) == (0.5, 2.0, 2)


def test_observed_ranges_are_kept_until_the_histogram_changes(monkeypatch) -> None:
    from graphopt.quant import observers

    rng = np.random.default_rng(5)  # its own draws: the module RNG feeds the tests after this one
    hist = Histogram()
    hist.add(rng.standard_t(2, 100_000).astype(np.float32))
    first = observe_range(hist, "entropy", 255)
    monkeypatch.setattr(observers, "_kl", None)  # searching again would fail
    assert observe_range(hist, "entropy", 255) == first
    monkeypatch.undo()
    hist.add(rng.standard_normal(100_000).astype(np.float32) * 100)
    assert observe_range(hist, "entropy", 255) != first


def fake_quant_error(x: np.ndarray, lo: float, hi: float) -> float:
    step = (hi - lo) / 255
    return float(np.mean((x - (np.clip(np.rint((x - lo) / step), 0, 255) * step + lo)) ** 2))


@pytest.mark.parametrize(("method", "sample"), [
    ("percentile", lambda: RNG.standard_t(2, 1_000_000)),
    ("entropy", lambda: RNG.standard_t(2, 1_000_000)),
    # mse models rounding as step**2 / 12, which holds while the step is finer than the bulk of the data.
    ("mse", lambda: RNG.laplace(size=1_000_000)),
])
def test_observers_beat_minmax_on_heavy_tails(method: str, sample) -> None:
    x = sample().astype(np.float32)
    hist = Histogram()
    hist.add(x)
    lo, hi = observe_range(hist, method, 255)
    assert observe_range(hist, "minmax", 255) == (hist.min, hist.max)
    assert hist.min <= lo < 0 < hi <= hist.max
    assert fake_quant_error(x, lo, hi) < fake_quant_error(x, hist.min, hist.max)
    if method != "mse":  # mse keeps far outliers whose clipping would cost more than rounding
        assert hi < hist.max / 2 and lo > hist.min / 2


def test_expected_sqnr_from_the_histogram_matches_quantizing_the_data() -> None:
    x = (RNG.standard_normal(200_000) * 3).astype(np.float32)
    hist = Histogram()
    hist.add(x)
    for lo, hi in [(-4.0, 4.0), (-12.0, 12.0), (0.0, 9.0)]:  # clipping dominates, rounding dominates, one side
        qp = affine_qparams(lo, hi, DType.uint8, symmetric=False)
        q = np.clip(np.rint(x / qp.scale) + qp.zero_point, 0, 255)
        measured = sqnr_db([x], [((q - qp.zero_point) * qp.scale).astype(np.float32)])
        assert expected_sqnr_db(hist, qp) == pytest.approx(measured, abs=0.3)


# --- calibration data errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "message"), [
    ([], "calibration data is empty"),
    ([np.zeros((1, 3, 16, 16), np.float64)], "dtype float64, the model expects float32"),
    ([np.zeros((1, 3, 8, 8), np.float32)], "shape [1, 3, 8, 8], the model expects"),
    ([np.full((1, 3, 16, 16), np.nan, np.float32)], "contains NaN"),
    ([(np.zeros((1, 3, 16, 16), np.float32),) * 2], "has 2 array(s)"),
])
def test_bad_calibration_data_is_refused_before_any_work(small, data, message) -> None:
    graph, _ = small
    with pytest.raises((CalibrationError, graphopt.GraphoptError), match=re.escape(message)):
        graphopt.run_pipeline(graph, "quantize", calibration=data)


def test_quantize_without_calibration_says_what_to_do(small) -> None:
    with pytest.raises(graphopt.GraphoptError, match="needs calibration data"):
        graphopt.run_pipeline(small[0], "quantize")


# --- the pass on a real model ----------------------------------------------------------------------------
def test_quantize_meets_its_budget_fuses_fully_and_runs_in_ort(small, tmp_path) -> None:
    graph, data = small
    result = graphopt.run_pipeline(graph, "canonicalize,fuse-activation,quantize", calibration=data)
    summary = result.records[-1].details
    assert summary.sqnr >= summary.budget_db and len(summary.int8) == 3
    q = result.graph
    worst = min(sqnr_db(interpret(graph, *s), interpret(q, *s)) for s in data)
    assert worst >= summary.budget_db
    path = tmp_path / "small.int8.onnx"
    graphopt.to_onnx(q, path)
    report = check_fusion(path)
    assert report.unfused == [] and report.int8_kernels >= 5, report.markdown()
    x = data[0][0]
    # The QDQ model's reference semantics (ORT without fusion) is the interpreter's fake quantization.
    np.testing.assert_allclose(ort_run(str(path), x, optimize=False), interpret(q, x)[0], atol=1e-5)
    # Idempotent: quantized once, its choices stand.
    again = graphopt.run_pipeline(q, "quantize", calibration=data)
    assert not again.records[0].changed


def test_integer_interpreter_predicts_ort_int8_kernels_exactly(tmp_path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 8, 3),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10)).eval()
    graph = graphopt.from_torch(model, (torch.randn(2, 3, 16, 16),))
    data = samples((2, 3, 16, 16), 4)
    q = graphopt.run_pipeline(graph, "fuse-activation,quantize{budget=0}", calibration=data).graph
    path = tmp_path / "chain.onnx"
    graphopt.to_onnx(q, path)
    assert check_fusion(path).unfused == []
    x = RNG.standard_normal((2, 3, 16, 16)).astype(np.float32) * 1.5  # past the calibrated range: saturation
    got, expected = interpret_integer(q, x)[0], ort_run(str(path), x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_integer_interpreter_predicts_ort_exactly_on_whole_cnns(name: str, tmp_path) -> None:
    """At full size, where float rounding ties are common enough to catch any arithmetic that is not
    the runtime's: residual adds (QLinearAdd), relu6, global average pooling, depthwise convs."""
    model, _ = models.torchvision_model(name)
    graph = graphopt.from_torch(model, (torch.randn(1, 3, 224, 224),))
    data = samples((1, 3, 224, 224), 2)
    q = graphopt.run_pipeline(graph, DEFAULT_PIPELINE + "{budget=0}", calibration=data).graph
    path = tmp_path / f"{name}.onnx"
    graphopt.to_onnx(q, path)
    x = RNG.standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(interpret_integer(q, x)[0], ort_run(str(path), x))


def test_weight_only_int4_per_group(tmp_path) -> None:
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)).eval()
    graph = graphopt.from_torch(model, (torch.randn(3, 128),))
    q = graphopt.run_pipeline(graph, "quantize{activations=none,weight-bits=4,group-size=32}").graph
    int4 = [p for p in q.parameters if p.name.endswith(".int4")]
    assert len(int4) == 2 and all(p.data.min() >= -7 and p.data.max() <= 7 for p in int4)
    x = RNG.standard_normal((3, 128)).astype(np.float32)
    assert sqnr_db(interpret(graph, x), interpret(q, x)) > 15
    path = tmp_path / "int4.onnx"
    model = graphopt.to_onnx(q, path)
    # int4 runs as int4: ONNX Runtime's MatMulNBits reads two weights a byte, no dequantized copy
    assert [n.op_type for n in model.graph.node if n.op_type in ("MatMulNBits", "DequantizeLinear")] == \
        ["MatMulNBits", "MatMulNBits"]
    weight_bytes = sum(t.ByteSize() for t in model.graph.initializer)
    assert weight_bytes < (128 * 64 + 64 * 16) * 0.75  # half a byte a weight, a scale per 32, fp32 biases
    np.testing.assert_allclose(ort_run(str(path), x), interpret(q, x)[0], atol=1e-5)


class TinyText(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(300, 64), torch.nn.Linear(64, 32)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def test_weight_only_int4_stores_lookup_tables_per_group_and_gathers_them_packed(tmp_path) -> None:
    torch.manual_seed(3)
    ids = torch.randint(0, 300, (2, 9))
    graph = graphopt.from_torch(TinyText().eval(), (ids,))
    q = graphopt.run_pipeline(graph, "quantize{activations=none,weight-bits=4,group-size=16}")
    assert q.records[-1].details.tables == ["embed"]
    table = next(p for p in q.graph.parameters if p.name.startswith("embed") and p.name.endswith(".int4"))
    assert table.data.shape == (300 * 64 // 16, 16) and np.abs(table.data).max() == 7
    model = graphopt.to_onnx(q.graph, tmp_path / "text.onnx")
    assert sorted(n.op_type for n in model.graph.node) == ["Add", "GatherBlockQuantized", "MatMulNBits"]
    assert sum(t.ByteSize() for t in model.graph.initializer) < (300 * 64 + 64 * 32) * 0.8  # about 0.75 B a weight
    x = RNG.integers(0, 300, (2, 9))
    np.testing.assert_allclose(ort_run(str(tmp_path / "text.onnx"), x), interpret(q.graph, x)[0], atol=1e-5)
    assert sqnr_db(interpret(graph, x), interpret(q.graph, x)) > 15


def test_a_size_budget_widens_int4_layers_to_8_bit_matmulnbits(tmp_path) -> None:
    torch.manual_seed(4)
    graph = graphopt.from_torch(TinyText().eval(), (torch.randint(0, 300, (2, 9)),))
    calibration = [(RNG.integers(0, 300, (2, 9)),) for _ in range(4)]
    q = graphopt.run_pipeline(graph, "quantize{activations=none,weight-bits=4,group-size=16,size=0.018}",
                              calibration=calibration)
    summary = q.records[-1].details
    assert summary.bits == {"head": 8}  # the table in int4: 0.0144 MB; the head fits in 8 bits, not float
    # the SQNR reported is the model's as written, the int4 table's noise included
    measured = min(sqnr_db(interpret(graph, *x), interpret(q.graph, *x)) for x in calibration)
    assert summary.sqnr == pytest.approx(measured, abs=0.1) and measured > 15
    model = graphopt.to_onnx(q.graph, tmp_path / "wide.onnx")
    [kernel] = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert {a.name: a.i for a in kernel.attribute}["bits"] == 8
    x = RNG.integers(0, 300, (2, 9))
    # 8-bit MatMulNBits runs at accuracy level 4 (int8 activations per block): close to the interpreter, not equal
    assert sqnr_db(interpret(q.graph, x), [ort_run(str(tmp_path / "wide.onnx"), x)]) > 35


def test_int8_activations_are_symmetric_except_relu_outputs_which_take_the_whole_range(small) -> None:
    graph, data = small
    q = graphopt.run_pipeline(graph, "fuse-activation,quantize{activations=int8,budget=0}", calibration=data).graph
    zero_points = {n.loc: n.attrs["zero_point"] for n in q if n.op == "quantize_per_tensor"}
    assert zero_points["stem"] == -128  # relu(stem(x)): [0, hi] on all 256 levels, ORT drops the relu
    assert set(zero_points.values()) == {0, -128}


class Lookup(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(100, 32)
        self.head = torch.nn.Linear(32, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.layer_norm(self.emb(ids), (32,)))


def test_embedding_tables_are_stored_int8_and_only_gathered_rows_are_scaled(tmp_path) -> None:
    torch.manual_seed(4)
    ids = [(RNG.integers(0, 100, (2, 12)),) for _ in range(4)]
    graph = graphopt.from_torch(Lookup().eval(), (torch.from_numpy(ids[0][0]),))
    result = graphopt.run_pipeline(graph, "quantize", calibration=ids)
    assert result.records[-1].details.tables == ["emb"]
    q = result.graph
    tables = [p for p in q.parameters if p.shape == (100, 32)]
    assert [p.dtype for p in tables] == [DType.int8]  # the float table is gone, and never dequantized whole
    assert not any(n.op.startswith("dequantize") and n.operands[0] is tables[0] for n in q)
    path = tmp_path / "lookup.onnx"
    graphopt.to_onnx(q, path)
    x = RNG.integers(0, 100, (2, 12))
    np.testing.assert_allclose(ort_run(str(path), x), interpret(q, x)[0], atol=1e-5)
    assert sqnr_db(interpret(graph, x), interpret(q, x)) > 25


def test_skip_keeps_named_layers_and_op_kinds_float(small) -> None:
    graph, data = small
    result = graphopt.run_pipeline(graph, "quantize{skip=[head,conv2d]}", calibration=data)
    summary = result.records[-1].details
    assert summary.int8 == [] and set(summary.float) == {"stem", "body", "head"}


def test_mixed_precision_keeps_sensitive_layers_float_to_meet_a_tight_budget(small) -> None:
    graph, data = small
    result = graphopt.run_pipeline(graph, "quantize{budget=60,sensitivity=always}", calibration=data)
    summary = result.records[-1].details
    assert summary.float and summary.sqnr >= 60 and len(summary.sensitivity) == 3
    assert summary.sqnr_all_int8 < 60


def test_calibration_statistics_are_reused_across_pipelines(small, monkeypatch) -> None:
    graph, data = small
    calibration = Calibration(data)
    graphopt.run_pipeline(graph, "quantize{calib=minmax}", calibration=calibration)
    monkeypatch.setattr(Runner, "run", None)  # running the float model would fail
    key_count = len(calibration._statistics)
    calibration.statistics(graph)
    assert len(calibration._statistics) == key_count == 1


def test_quantize_contract_on_generated_graphs() -> None:
    check_pass("quantize")


@pytest.mark.parametrize("options", ["", "{sensitivity=always}"])
def test_cli_quantizes_with_a_calibration_file_and_writes_a_report(options: str, tmp_path) -> None:
    np.savez(tmp_path / "cal.npz", x=RNG.standard_normal((4, 1, 3, 32, 32)).astype(np.float32).reshape(4, 3, 32, 32))
    out = tmp_path / "m.int8.onnx"
    assert main(["opt", "tests.test_quantize:SmallNet", "--input-shape", "1x3x32x32", "-p",
                 f"fuse-activation,quantize{options}", "--calibration", str(tmp_path / "cal.npz"),
                 "-o", str(out)]) == 0
    report = (tmp_path / "m.int8.report.md").read_text()
    assert "unfused Q/DQ pairs: 0" in report and report.count("| `stem` | conv2d |") == 1 + bool(options)
    assert ("## Sensitivity" in report) == bool(options)
    assert (tmp_path / "m.int8.report.png").stat().st_size > 1000
    assert ort_run(str(out), np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


def test_cli_refuses_bad_calibration_before_running(tmp_path, capsys) -> None:
    np.savez(tmp_path / "cal.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    assert main(["opt", "tests.test_quantize:SmallNet", "--input-shape", "1x3x32x32", "-p", "quantize",
                 "--calibration", str(tmp_path / "cal.npz"), "-o", str(tmp_path / "m.onnx")]) != 0
    assert "shape [1, 3, 8, 8], the model expects [1, 3, 32, 32]" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


# --- the benchmark models, small enough for CI (benchmarks/bench_int8.py runs them full size) ------------

def quantize_and_check_fusion(graph: graphopt.Graph, data: list, path) -> None:
    """Default options; the budget holds and ORT fuses every planned Q/DQ pair."""
    result = graphopt.run_pipeline(graph, DEFAULT_PIPELINE, calibration=data)
    summary = result.records[-1].details
    assert summary.sqnr >= summary.budget_db and summary.int8
    graphopt.to_onnx(result.graph, path)
    report = check_fusion(path, summary.float)
    assert report.unfused == [] and report.int8_kernels >= len(summary.int8), report.markdown()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_benchmark_cnns_quantize_with_defaults_and_fuse_fully(name: str, tmp_path) -> None:
    model, _ = models.torchvision_model(name)
    graph = graphopt.from_torch(model, (torch.randn(1, 3, 64, 64),))
    data = samples((1, 3, 64, 64), 4)
    quantize_and_check_fusion(graph, data, tmp_path / f"{name}.onnx")
    x = RNG.standard_normal((1, 3, 64, 64)).astype(np.float32)  # not a calibration sample
    assert sqnr_db(interpret(graph, x), [ort_run(str(tmp_path / f"{name}.onnx"), x)]) > 15


def test_minilm_layers_quantize_with_defaults_keep_embeddings_close_and_fuse(tmp_path) -> None:
    text = models.minilm()
    text.module.bert.encoder.layer = text.module.bert.encoder.layer[:2]  # the real weights, two of six layers
    encode = lambda s: tuple(t.numpy() for t in text.inputs([s], seq_len=32))  # noqa: E731
    graph = graphopt.from_torch(text.module, text.inputs(["a sentence"], seq_len=32))
    quantize_and_check_fusion(graph, [encode(s) for s in models.varied_sentences(8, seed=0)], tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for s in models.varied_sentences(8, seed=1):
        ids, mask = encode(s)
        want = interpret(graph, ids, mask)[0]
        got = session.run(None, dict(zip([i.name for i in session.get_inputs()], (ids, mask))))[0]
        assert float(np.sum(want * got) / (np.linalg.norm(want) * np.linalg.norm(got))) > 0.99


class OutlierBlock(torch.nn.Module):
    """A post-norm attention-style block: a layer norm with a few outlier channels (as BERT's have)
    feeding three projections and the residual."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(64)
        with torch.no_grad():
            self.norm.weight[:3] = 40.0
        self.q, self.k, self.v = (torch.nn.Linear(64, 64) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return h + self.q(h) * torch.sigmoid(self.k(h)) + self.v(h)


def test_smoothing_is_exact_and_moves_outlier_channels_into_the_weights() -> None:
    from graphopt.quant.smoothing import smooth

    torch.manual_seed(3)
    graph = graphopt.from_torch(OutlierBlock().eval(), (torch.randn(1, 16, 64),))
    data = samples((1, 16, 64), 8)
    stats = Calibration(data).statistics(graph)
    smoothed = graph.clone()
    layers = [n for n in smoothed if n.op == "linear"]
    assert smooth(smoothed, layers, stats.rebind(smoothed).channel_absmax, 0.5) == layers
    assert sum(n.op == "mul" for n in smoothed) == sum(n.op == "mul" for n in graph) + 1  # q, k, v share one
    for s in data:
        np.testing.assert_allclose(interpret(smoothed, *s)[0], interpret(graph, *s)[0], rtol=1e-4, atol=1e-4)
    assert smooth(smoothed, layers, Calibration(data).statistics(smoothed).channel_absmax, 0.5) == []

    def all_int8_sqnr(spec: str) -> float:
        summary = graphopt.run_pipeline(graph, spec, calibration=data).records[-1].details
        return summary.sqnr_all_int8

    assert all_int8_sqnr("quantize{budget=1}") > all_int8_sqnr("quantize{budget=1,smooth=0}") + 3


@pytest.mark.parametrize(("flags", "machine", "isa", "weight_max"), [
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", "avx512vnni", 127),
    ({"avx2", "avx_vnni"}, "x86_64", "avxvnni", 127),
    ({"avx2", "avx512f"}, "x86_64", "avx512", 64),
    ({"avx2", "fma"}, "x86_64", "avx2", 64),
    ({"sse4_1"}, "x86_64", "x86", 64),
    ({"asimd", "asimddp"}, "aarch64", "arm-dotprod", 127),
    ({"asimd"}, "aarch64", "arm", 127),
])
def test_target_auto_keeps_8_bit_weights_only_where_the_cpu_accumulates_in_int32(flags, machine, isa,
                                                                                 weight_max) -> None:
    from graphopt.analysis.latency import isa_of
    from graphopt.quant.placement import detected_profile

    assert isa_of(flags, machine) == isa
    target, why = detected_profile(isa)
    assert target.weight_max == weight_max and ("8 bits" in why if weight_max == 127 else "7 bits" in why)


def test_the_summary_says_which_target_was_picked_and_why(small) -> None:
    from graphopt.analysis.latency import cpu_kind

    graph, data = small
    summary = graphopt.run_pipeline(graph, "quantize", calibration=data).records[0].details
    picked = "ort-cpu-vnni" if cpu_kind() in ("avx512vnni", "avxvnni", "arm-dotprod", "arm") else "ort-cpu:"
    assert summary.target.startswith(picked) and "bits" in summary.target
    forced = graphopt.run_pipeline(graph, "quantize{target=ort-cpu}", calibration=data).records[0].details
    assert forced.target == "ort-cpu: target=ort-cpu asked for"
    with pytest.raises(graphopt.GraphoptError, match="target=tensorrt-x is not a choice"):
        graphopt.run_pipeline(graph, "quantize{target=tensorrt-x}", calibration=data)


class DepthwiseBlock(torch.nn.Module):
    """A depthwise conv whose channels' weights span 2.5 decades: per-tensor int8 weights round the
    small channels coarsely, which shifts their output means. `compensated`: the pointwise conv
    after it scales those channels back up, as a folded batch norm does in trained models, so
    the coarse channels matter to the output."""

    def __init__(self, compensated: bool = False) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 8, 1)
        self.fc = torch.nn.Linear(8, 5)
        spread = torch.logspace(-2, 0.5, 16)
        with torch.no_grad():
            self.dw.weight.mul_(spread.view(16, 1, 1, 1))
            self.dw.bias.mul_(spread)
            if compensated:
                self.pw.weight.div_(spread.view(1, 16, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.pw(torch.relu(self.dw(torch.relu(self.stem(x))))))
        return self.fc(y.mean((2, 3)))


def smooth_images(count: int, seed: int) -> list[tuple[np.ndarray]]:
    """Noise averaged over neighbouring pixels: correlated like natural images, unlike white noise."""
    x = np.random.default_rng(seed).standard_normal((count, 1, 3, 20, 20)).astype(np.float32)
    x = (x[..., :-4, :-4] + x[..., 1:-3, 1:-3] + x[..., 2:-2, 2:-2] + x[..., 4:, 4:]) / 2
    return [(a,) for a in x]


def test_bias_correction_restores_output_means_and_helps_on_held_out_images() -> None:
    from graphopt.quant.bias_correction import channel_means

    torch.manual_seed(0)
    graph = graphopt.from_torch(DepthwiseBlock().eval(), (torch.randn(1, 3, 16, 16),))
    calibration, held_out = smooth_images(16, seed=0), smooth_images(16, seed=1)
    pipeline = "canonicalize,fuse-activation,quantize{weights=per-tensor,budget=0%s}"
    plain = graphopt.run_pipeline(graph, pipeline % "", calibration=calibration)
    corrected = graphopt.run_pipeline(graph, pipeline % ",bias-correction=true", calibration=calibration)
    shifts = corrected.records[-1].details.bias_shifts
    assert [s.layer for s in shifts] == ["stem", "dw", "pw", "fc"] and not plain.records[-1].details.bias_shifts

    def dw_means(g: graphopt.Graph) -> np.ndarray:
        (dw,) = [n for n in g if n.loc == "dw" and n.op == "conv2d"]
        return channel_means(g, [dw], calibration)[0][0]

    want = dw_means(graphopt.run_pipeline(graph, "canonicalize,fuse-activation").graph)  # relu fused, as quantized
    assert np.abs(dw_means(corrected.graph) - want).max() < 0.5 * np.abs(dw_means(plain.graph) - want).max()
    gain = np.mean([sqnr_db(interpret(graph, *x), interpret(corrected.graph, *x)) -
                    sqnr_db(interpret(graph, *x), interpret(plain.graph, *x)) for x in held_out])
    assert gain > 3  # dB, on images calibration never saw (7.8 dB when written)


def test_bias_correction_needs_quantized_activations() -> None:
    with pytest.raises(graphopt.GraphoptError, match="bias-correction measures the quantized model"):
        graphopt.run_pipeline(graphopt.parse("graph g(%x: float32[1, 4]) {\n  return %x\n}"),
                              "quantize{activations=none,bias-correction=true}")


def test_gptq_rounding_of_int4_weights_beats_round_to_nearest_on_held_out_inputs() -> None:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)).eval()
    graph = graphopt.from_torch(model, (torch.randn(8, 128),))
    rng = np.random.default_rng(4)
    mixing = rng.standard_normal((24, 128)).astype(np.float32)  # inputs on a 24-d subspace, as features are

    def inputs(count: int) -> list[tuple[np.ndarray]]:
        return [(rng.standard_normal((8, 24)).astype(np.float32) @ mixing,) for _ in range(count)]

    calibration, held_out = inputs(16), inputs(8)
    pipeline = "quantize{activations=none,weight-bits=4,group-size=32,rounding=%s}"
    nearest = graphopt.run_pipeline(graph, pipeline % "nearest", calibration=calibration).graph
    gptq = graphopt.run_pipeline(graph, pipeline % "gptq", calibration=calibration).graph
    assert sorted(p.name for p in gptq.parameters if p.name.endswith(".int4")) == ["0.weight.int4", "2.weight.int4"]

    def mean_sqnr(q: graphopt.Graph) -> float:
        return float(np.mean([sqnr_db(interpret(graph, *x), interpret(q, *x)) for x in held_out]))

    assert mean_sqnr(gptq) > mean_sqnr(nearest) + 3  # 20.1 -> 25.7 dB when written


@pytest.mark.parametrize(("options", "message"), [
    ("rounding=gptq", "rounding=gptq is for weight-only int4"),
    ("activations=none,weight-bits=4,rounding=gptq", "needs calibration data for rounding=gptq"),
    ("activations=none,weight-bits=4,rounding=adaround", "weight-only int4 is grouped: use rounding=gptq"),
    ("activations=none,rounding=adaround", "needs calibration data for rounding=adaround"),
])
def test_bad_rounding_options_say_what_to_do(small, options: str, message: str) -> None:
    graph, _ = small
    with pytest.raises(graphopt.GraphoptError, match=message):
        graphopt.run_pipeline(graph, f"quantize{{{options}}}")


def test_two_torchrun_processes_calibrate_and_rank_as_one(tmp_path) -> None:
    """Calibration shards its samples over the ranks and merges the observers exactly (the ranges
    and histograms are one process's, bit for bit); the sensitivity sweep splits the layers."""
    import json

    from tests import quantize_worker
    from tests.helpers import torchrun

    out = tmp_path / "scores.json"
    done = torchrun(quantize_worker.__file__, str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    single = quantize_worker.run()
    assert result["world"] == 2 and result["ran_by"] == [k % 2 for k in range(9)] and set(single["ran_by"]) == {0}
    assert result["ranges"] == single["ranges"]  # the scales' inputs, exactly
    scores, one = result["sensitivity"], single["sensitivity"]
    assert {rank for _, _, rank in scores} == {0, 1}  # both ranks measured layers
    assert [name for name, _, _ in scores] == [name for name, _, _ in one]
    np.testing.assert_allclose([db for _, db, _ in scores], [db for _, db, _ in one], rtol=1e-5)
