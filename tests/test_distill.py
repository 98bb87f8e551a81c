"""distill: the loss falls, trained parameters land in the IR, the structure stays, runs are
deterministic under a seed, labels and features join the loss, 2 torchrun processes take the same
steps as one, and bad input is a clear error."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import graphopt as go
from graphopt.ir.printer import print_graph
from tests import distill_worker
from tests.distill_worker import model_and_data
from tests.helpers import torchrun


def test_loss_falls_and_trained_parameters_are_written_back() -> None:
    graph, data = model_and_data()
    pruned = go.run_pipeline(graph, "prune{ratio=0.5,round-to=1}").graph
    result = go.run_pipeline(graph, "prune{ratio=0.5,round-to=1},distill{epochs=4,lr=3e-3}", data=data)
    summary = result.records[-1].details
    assert summary.losses[-1] < 0.5 * summary.losses[0], summary.line()
    assert print_graph(result.graph, inline_limit=0) == print_graph(pruned, inline_limit=0)
    changed = [p.name for p, q in zip(pruned.parameters, result.graph.parameters) if not np.array_equal(p.data, q.data)]
    assert len(changed) == len(pruned.parameters)  # every weight and bias trained
    teacher = [go.interpret(graph, *s)[0] for s in data]

    def error(g: go.Graph) -> float:
        return float(np.mean([np.mean((go.interpret(g, *s)[0] - t) ** 2) for s, t in zip(data, teacher)]))

    assert error(result.graph) < 0.5 * error(pruned)  # closer to the teacher, checked by the interpreter


def test_runs_are_deterministic_and_static_batches_train_the_same() -> None:
    first, _ = distill_worker.run()
    again, _ = distill_worker.run()
    static, _ = distill_worker.run(dynamic_batch=False)  # one forward a sample instead of one a batch
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        np.testing.assert_allclose(static[name], first[name], rtol=1e-4, atol=1e-6)


def test_labels_held_out_split_and_early_stop() -> None:
    graph, data = model_and_data()
    labels = np.random.default_rng(1).integers(0, 4, len(data))
    labeled = [(x, np.array([y])) for (x,), y in zip(data, labels)]
    result = go.run_pipeline(graph, "distill{epochs=30,lr=0.05,validation=0.25,patience=1,loss=kl}", data=labeled)
    summary = result.records[-1].details
    assert summary.samples == 24 and len(summary.validation) == len(summary.losses)
    assert summary.stopped_early and len(summary.losses) < 30  # random labels: the held-out loss soon rises
    assert summary.validation[summary.best_epoch] == min(summary.validation)


def test_features_are_matched_by_tensor_name_or_module_path() -> None:
    graph, data = model_and_data()
    pool = next(n for n in graph if n.op == "adaptive_avg_pool2d")

    def first_loss(features: str) -> float:
        spec = f"remove-blocks{{count=1,plain=true}},distill{{epochs=1{features}}}"
        return go.run_pipeline(graph, spec, data=data).records[-1].details.losses[0]

    by_tensor = first_loss(f",features=[{pool.results[0].name}]")
    assert by_tensor == first_loss(f",features=[{pool.loc}]")  # module path "4" names the same tensor
    assert by_tensor > first_loss("")  # the removed layer changed the pooled features: their MSE joins the loss
    with pytest.raises(go.GraphoptError, match="no tensor named nowhere"):
        go.run_pipeline(graph, "distill{features=[nowhere]}", data=data)


def test_bad_data_is_a_clear_error() -> None:
    graph, data = model_and_data()
    with pytest.raises(go.GraphoptError, match="needs training data"):
        go.run_pipeline(graph, "distill")
    with pytest.raises(go.GraphoptError, match=r"distill data sample 0, input %\w+: shape \[1, 1, 5, 5\]"):
        go.run_pipeline(graph, "distill", data=[(np.zeros((1, 1, 5, 5), np.float32),)])
    with pytest.raises(go.GraphoptError, match="leaves no held-out"):
        go.run_pipeline(graph, "distill{validation=0.01}", data=data[:4])
    with pytest.raises(go.GraphoptError, match="non-finite"):
        go.run_pipeline(graph, "distill{lr=1e12,optimizer=sgd}", data=data)


def _launch(tmp_path: Path, kind: str) -> subprocess.CompletedProcess[str]:
    return torchrun(str(Path(distill_worker.__file__)), str(tmp_path / f"{kind}.npz"), kind)


def _torchrun(tmp_path: Path, kind: str) -> dict[str, np.ndarray]:
    done = _launch(tmp_path, kind)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(tmp_path / f"{kind}.npz"))


def test_a_rank_that_dies_stops_the_run_with_its_error_rather_than_a_hang(tmp_path: Path) -> None:
    began = time.perf_counter()
    done = _launch(tmp_path, "rank-1-dies")
    assert done.returncode != 0 and time.perf_counter() - began < 200
    assert "exitcode  : 3" in done.stderr or "exit code 3" in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("kind", ["distill", "qat"])
def test_two_torchrun_processes_take_the_same_steps_as_one(tmp_path: Path, kind: str) -> None:
    distributed = _torchrun(tmp_path, kind)
    single, _ = distill_worker.run(kind=kind)
    assert int(distributed["world"]) == 2
    for name, array in single.items():
        if array.dtype.kind == "f":
            np.testing.assert_allclose(distributed[name], array, rtol=1e-4, atol=1e-6, err_msg=name)
        else:  # integer weights (qat): a rounding boundary may fall either side of a float-summation difference
            assert np.mean(distributed[name] != array) < 0.02, name


def test_int8_gradients_send_a_quarter_of_the_bytes_and_train_as_well(tmp_path: Path) -> None:
    exact, compressed = _torchrun(tmp_path, "distill"), _torchrun(tmp_path, "int8-gradients")
    assert float(exact["gradient_bytes"]) / float(compressed["gradient_bytes"]) > 3.5
    assert compressed["losses"][-1] < compressed["losses"][0]
    assert abs(compressed["losses"][-1] - exact["losses"][-1]) < 0.05 * exact["losses"][-1]


def test_cli_distills_on_a_data_file_with_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from graphopt.cli import main

    graph, data = model_and_data()
    source, training = tmp_path / "m.onnx", tmp_path / "train.npz"
    go.to_onnx(graph, source)
    np.savez(training, **{graph.inputs[0].name: np.concatenate([s[0] for s in data])},
             labels=np.arange(len(data)) % 4)
    out = tmp_path / "small.onnx"
    assert main(["opt", str(source), "-p", "prune{ratio=0.5,round-to=1},distill{epochs=2}", "--data", str(training),
                 "-o", str(out), "-q"]) == 0
    assert "distill: 2 epoch(s) on 32 sample(s)" in capsys.readouterr().out
    assert "## Distillation" in out.with_suffix(".report.md").read_text()
    assert out.with_name("small.report.distill.png").stat().st_size > 5_000


def test_gradual_pruning_reaches_the_prune_target_in_steps() -> None:
    graph, data = model_and_data()
    one_shot = go.run_pipeline(graph, "canonicalize,prune{macs=0.5,round-to=1}").graph
    result = go.run_pipeline(graph, "canonicalize,prune{macs=0.5,round-to=1},distill{epochs=3,lr=3e-3,prune-steps=3}",
                             data=data)
    summary = result.records[-1].details
    assert len(summary.losses) == 3  # one epoch after each of the three pruning steps
    macs = go.graph_cost(result.graph).macs
    # each step lands just under its own target; with 8-channel layers a step is 1/8 of a layer
    assert macs <= 0.5 * go.graph_cost(graph).macs and macs >= 0.75 * go.graph_cost(one_shot).macs
    go.verify(result.graph)
    with pytest.raises(go.GraphoptError, match="right after a prune"):
        go.run_pipeline(graph, "canonicalize,distill{prune-steps=2}", data=data)
