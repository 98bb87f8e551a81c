import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphopt as go
from graphopt.cli import main
from tests.helpers import conv_relu_graph


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return go.save(conv_relu_graph(), tmp_path / "model.gir")


def test_demo_compresses_minilm_by_its_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1", "--texts", "32"]) == 0  # CI trains tiny
    assert "graphopt opt graphopt.models:minilm_encoder --recipe" in capsys.readouterr().out
    report = (tmp_path / "minilm.int8.report.md").read_text()
    for section in ("## Recipe", "## What each step cost and bought", "## Block removal", "## Structural pruning",
                    "## Distillation", "remove-blocks{count=4,score=angular}"):
        assert section in report
    steps = report.split("## What each step cost and bought")[1].split("\n## ")[0]
    assert "held-out sample(s)" in steps and len([r for r in steps.splitlines() if r.startswith("| `")]) == 8
    assert (tmp_path / "minilm.int8.report.steps.png").stat().st_size > 10_000
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "minilm.int8.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    feed = {i.name: np.ones((16, 64), np.int64) for i in session.get_inputs()}
    assert session.run(None, feed)[0].shape == (16, 384)


def test_opt_traces_a_torch_factory_to_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r18.onnx"
    assert main(["opt", "torchvision.models:resnet18", "--input-shape", "1x3x224x224", "-p", "dce", "-o", str(out)]) == 0
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((1, 3, 224, 224), np.float32)})[0].shape == (1, 1000)
    assert main(["show", str(out), "--summary-only"]) == 0
    assert "conv2d x20" in capsys.readouterr().out


def test_show_prints_ir_and_summary(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(model)]) == 0
    out = capsys.readouterr().out
    assert "conv2d(%x, %conv.weight, %conv.bias)" in out and "4 nodes, 112 parameters" in out


def test_opt_writes_the_result_and_reports_each_pass(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = model.with_name("small.gir")
    assert main(["opt", str(model), "-p", "dce", "-o", str(out), "--dump", str(model.parent / "dump")]) == 0
    captured = capsys.readouterr()
    assert "[1] dce:" in captured.err and "4 -> 3 nodes" in captured.err
    assert "dce" in captured.out and f"wrote {out}" in captured.out
    assert len(go.load(out)) == 3 and (model.parent / "dump" / "01-dce.gir").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # written atomically, with a new file's usual mode
    assert not list(out.parent.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["show", "missing.gir"], 3, "model file missing.gir does not exist"),
        (["show", "model.pt"], 2, "cannot read model 'model.pt': graphopt reads an .onnx file"),
        (["show", "torchvision.models:nope", "--input-shape", "1x3x8x8"], 2, "cannot import factory"),
        (["show", "torchvision.models:resnet18"], 2, "give its input with --input-shape"),
        (["opt", "{model}", "-p", "nope", "-o", "{dir}/o.gir"], 2, "unknown pass 'nope'"),
        (["opt", "{model}", "-p", "dce", "-o", "{model}"], 3, "would overwrite the input"),
        (["opt", "{model}", "-p", "dce", "-o", "{dir}/o.pt"], 2, "graphopt writes .onnx or .gir"),
    ],
)
def test_bad_input_is_one_clear_line(model: Path, argv: list[str], code: int, message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    before = model.read_text()
    argv = [a.format(model=model, dir=model.parent) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("graphopt: error: ") and message in err and "Traceback" not in err
    assert model.read_text() == before  # the input is never overwritten


def test_malformed_model_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.gir"
    bad.write_text("graph g(%x: float32[2]) {\n  %y: float32[2] = relu(%x\n  return %y\n}\n")
    assert main(["show", str(bad)]) == 3
    assert "line 3, col 3: expected ')'" in capsys.readouterr().err


def test_passes_and_ops_listings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["passes"]) == 0 and main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "dce" in out and "keep-parameters" in out and "conv2d" in out


def test_import_graphopt_stays_light() -> None:
    """The core must not import torch or onnx (frontends and backends load them on first use)."""
    code = ("import sys, graphopt, graphopt.cli; "
            "print(sorted(m for m in ('torch', 'onnx', 'hypothesis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
