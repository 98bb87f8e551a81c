"""Recipes and `graphopt compress`: a run from one file, recorded in its report with versions and
seeds; every step's cost, latency and output cosine; unknown keys are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphopt as go
from graphopt.cli import main
from tests.distill_worker import model_and_data


def files(tmp_path: Path) -> tuple[Path, str]:
    graph, data = model_and_data()
    go.to_onnx(graph, tmp_path / "m.onnx")
    name = graph.inputs[0].name
    stacked = np.concatenate([s[0] for s in data])
    np.savez(tmp_path / "train.npz", **{name: stacked[:24]})
    np.savez(tmp_path / "held.npz", **{name: stacked[24:]})
    return tmp_path / "m.onnx", name


def test_a_recipe_runs_and_its_report_records_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = files(tmp_path)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('pipeline = "canonicalize,prune{macs=0.5,round-to=1},distill{epochs=2},quantize"\n'
                      "seed = 7\n\n[data]\ncalibration = \"train.npz\"\ntrain = \"train.npz\"\n\n"
                      "[steps.prune]\ncriterion = \"l2\"\n")
    out = tmp_path / "small.onnx"
    assert main(["opt", str(model), "--recipe", str(recipe), "--held-out", str(tmp_path / "held.npz"),
                 "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "distill: 2 epoch(s)" in printed and "latency (ONNX Runtime, 1 thread)" in printed
    report = out.with_suffix(".report.md").read_text()
    assert "## Recipe" in report and 'criterion = "l2"' in report
    assert "prune{macs=0.5,criterion=l2,round-to=1,seed=7}" in report
    assert "seed of `distill{epochs=2,seed=7}`: 7" in report
    assert "torch 2.14.1" in report and "onnxruntime" in report
    steps = report.split("## What each step cost and bought")[1].split("\n## ")[0]
    rows = [line for line in steps.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1].split("{")[0] for r in rows] == ["input", "canonicalize", "prune", "distill", "quantize"]
    assert "8 held-out sample(s)" in steps and "| 1.0000 | 1.0000 |" in rows[0]
    assert out.with_name("small.report.steps.png").stat().st_size > 5_000


def test_yaml_recipes_and_compress_give_the_same_kind_of_report(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = files(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("pipeline: canonicalize,prune{macs=0.5,round-to=1}\n")
    assert main(["opt", str(model), "--recipe", str(recipe), "-o", str(tmp_path / "a.onnx"), "-q"]) == 0
    out = tmp_path / "b.onnx"
    assert main(["compress", str(model), "--macs", "0.5", "--data", str(tmp_path / "train.npz"), "--epochs", "1",
                 "--calibration", str(tmp_path / "train.npz"), "--held-out", str(tmp_path / "held.npz"),
                 "-o", str(out), "-q"]) == 0
    report = out.with_suffix(".report.md").read_text()
    for step in ("`fold-bn`", "`remove-blocks{auto=true,score=angular}`",
                 "`prune{macs=0.5,macs-of=pipeline,criterion=auto}`", "`distill{epochs=1}`", "`quantize`"):
        assert step in report
    assert go.graph_cost(go.from_onnx(out)).macs <= 0.5 * go.graph_cost(go.from_onnx(model)).macs


@pytest.mark.parametrize("text,message", [
    ('pipline = "dce"\n', "unknown key 'pipline' (known: pipeline, seed, model, data, steps)"),
    ('pipeline = "dce"\n[data]\ntrain-set = "x.npz"\n', "[data]: unknown key 'train-set'"),
    ('pipeline = "dce"\n[steps.prune]\nratio = 0.5\n', "[steps.prune] names no pass of the pipeline"),
    ('pipeline = "prune{ratio=0.5}"\n[steps.prune]\nratioo = 0.5\n', "[steps.prune] has no option ratioo"),
    ('pipeline = "dce"\nseed = "zero"\n', "seed must be a int"),
    ("pipeline = [\n", "not valid TOML"),
])
def test_bad_recipes_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                      message: str) -> None:
    model, _ = files(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    assert main(["opt", str(model), "--recipe", str(recipe), "-o", str(tmp_path / "o.onnx"), "-q"]) == 2
    assert message in capsys.readouterr().err
