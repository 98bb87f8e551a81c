"""Per-layer bit widths under a size budget (quantize{size=MB}): the model fits the budget and the
size predicted is the size written, a bigger budget buys accuracy, 4-bit layers run as MatMulNBits,
and budgets that cannot be met are refused with what to do."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import graphopt
from graphopt.cli import main
from graphopt.interp import interpret
from graphopt.quant import sqnr_db

PIPELINE = "quantize{activations=none,weight-bits=4,group-size=16,size=%g}"


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(64, 256)
        self.mid = torch.nn.Linear(256, 256)
        self.down = torch.nn.Linear(256, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.mid(torch.relu(self.up(x)))))


@pytest.fixture(scope="module")
def mlp() -> tuple[graphopt.Graph, list[tuple[np.ndarray]]]:
    torch.manual_seed(0)
    graph = graphopt.from_torch(Mlp().eval(), (torch.randn(8, 64),))
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((12, 64)).astype(np.float32)
    return graph, [(rng.standard_normal((8, 12)).astype(np.float32) @ mixing,) for _ in range(8)]


def test_the_model_fits_the_budget_and_a_bigger_one_buys_accuracy(mlp, tmp_path) -> None:
    graph, calibration = mlp
    results = {}
    for size in (0.08, 0.14, 0.3):  # fp32: 0.35 MB; every layer int4: 0.07 MB
        result = graphopt.run_pipeline(graph, PIPELINE % size, calibration=calibration)
        summary = result.records[-1].details
        path = tmp_path / f"{size}.onnx"
        graphopt.to_onnx(result.graph, path)
        written = sum(t.ByteSize() for t in onnx.load(path).graph.initializer) / 1e6
        assert summary.size_mb <= size and written == pytest.approx(summary.size_mb, rel=0.02, abs=2e-3)
        assert summary.frontier[-1] == (summary.size_mb, summary.sqnr)
        assert [s for s, _ in summary.frontier] == sorted(s for s, _ in summary.frontier)
        kernels = [next(a.i for a in n.attribute if a.name == "bits") for n in onnx.load(path).graph.node
                   if n.op_type == "MatMulNBits"]  # 4- and 8-bit layers both run on packed weights
        assert sorted(kernels) == sorted(summary.bits.values())
        held_out = [(np.random.default_rng(9).standard_normal((8, 64)).astype(np.float32),)]
        results[size] = (summary, min(sqnr_db(interpret(graph, *x), interpret(result.graph, *x)) for x in held_out))
    tight, middle, loose = (results[s][0] for s in (0.08, 0.14, 0.3))
    assert set(tight.bits.values()) == {4, 8} and not tight.float  # just above all-int4: a layer or two widened
    assert loose.sqnr > tight.sqnr + 15 and results[0.3][1] > results[0.08][1] + 15
    assert middle.sqnr > tight.sqnr


@pytest.mark.parametrize(("pipeline", "message"), [
    (PIPELINE % 0.01, r"size=0.01 MB is below the 0.07 MB the model takes with every layer at its narrowest"),
    ("quantize{weight-bits=4,size=1}", "4-bit weights with quantized activations are stored in int8"),
    ("quantize{activations=none,size=1}", "needs calibration data to measure each layer's bit widths"),
])
def test_budgets_that_cannot_be_met_are_refused(mlp, pipeline: str, message: str) -> None:
    graph, calibration = mlp
    with pytest.raises(graphopt.GraphoptError, match=message):
        graphopt.run_pipeline(graph, pipeline, calibration=None if "needs" in message else calibration)


def test_cli_report_plots_size_against_sqnr(tmp_path) -> None:
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32))
    out = tmp_path / "m.onnx"
    assert main(["opt", "tests.test_bit_widths:Mlp", "--input-shape", "8x64", "-p", PIPELINE % 0.14,
                 "--calibration", str(tmp_path / "cal.npz"), "-o", str(out)]) == 0
    report = (tmp_path / "m.report.md").read_text()
    assert "- size budget: parameters 0.1" in report and "at 8 bits" in report
    assert "widths chosen by the size budget" in report
    assert (tmp_path / "m.report.png").stat().st_size > 1000
