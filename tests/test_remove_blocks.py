"""Block analysis and remove-blocks: the units found on real models and their names, the contract
(exactly the model with the removed branches zeroed) on generated graphs and real models, the
scores, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphopt as go
from graphopt.analysis.blocks import find_blocks
from graphopt.interp import interpret
from graphopt.testing.blocks import branch_zeroed, check_removal, removal_summary
from graphopt.testing.strategies import inputs_for, residual_graphs
from tests.helpers import traced


def samples_for(x: np.ndarray, n: int = 3) -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(1)
    return [(rng.standard_normal(x.shape).astype(np.float32),) for _ in range(n)]


def test_blocks_of_resnets_are_named_by_module_and_downsampling_ones_keep_their_projection() -> None:
    graph, _ = traced("resnet50")
    blocks = find_blocks(graph)
    assert [b.name for b in blocks][:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    assert len(blocks) == 16
    kinds = {b.name: b.kind for b in blocks}
    assert kinds["layer1.0"] == kinds["layer2.0"] == kinds["layer4.0"] == "projection"
    assert kinds["layer1.1"] == "residual"
    projection = blocks[3]
    assert projection.replacement.producer is not None and projection.replacement.producer.loc.startswith(
        "layer2.0.downsample")


def test_transformer_layers_are_two_blocks_each() -> None:
    graph, _ = traced("vit")
    names = [b.name for b in find_blocks(graph)]
    assert names == [f"encoder.layers.encoder_layer_{i}[{part}]" for i in range(2)
                     for part in ("ln_1+self_attention", "ln_2+mlp")]
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=16)).eval()
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(0))
    graph = go.from_torch(bert, (ids,))
    blocks = find_blocks(graph)  # post-norm: the add sits inside LayerNorm(x + f(x)); f is the branch
    assert [b.name for b in blocks] == ["encoder.layer.0.attention", "encoder.layer.0", "encoder.layer.1.attention",
                                        "encoder.layer.1"]
    result = check_removal(graph, "remove-blocks{count=2}", ids.numpy(), calibration=[(ids.numpy(),)])
    assert len(removal_summary(result).removed) == 2


@pytest.mark.parametrize("name,spec", [("resnet18", "remove-blocks{count=2}"),
                                       ("resnet50", "remove-blocks{macs=0.7,greedy=true}"),
                                       ("mobilenet_v2", "remove-blocks{count=3,score=norm}"),
                                       ("convnext_tiny", "remove-blocks{count=2,score=angular}"),
                                       ("vit", "remove-blocks{count=1,score=output}")])
def test_real_models_equal_their_branch_zeroed_models(name: str, spec: str) -> None:
    graph, x = traced(name, 32 if name != "convnext_tiny" else 64)
    result = check_removal(graph, spec, x, calibration=samples_for(x))
    summary = removal_summary(result)
    assert summary.removed and summary.macs_after < summary.macs_before
    if "macs=" in spec:
        assert summary.macs_after <= 0.7 * summary.macs_before
    assert result.graph.outputs[0].type == graph.outputs[0].type
    assert len(result.graph) < len(graph)


def test_angular_removes_one_contiguous_run() -> None:
    graph, x = traced("resnet50")
    summary = removal_summary(check_removal(graph, "remove-blocks{count=3,score=angular}", x,
                                            calibration=samples_for(x)))
    removed = [u.name for u in summary.removed]
    stage = removed[0].rsplit(".", 1)[0]
    indices = [int(n.rsplit(".", 1)[1]) for n in removed]
    assert all(n.startswith(stage + ".") for n in removed) and indices == list(range(indices[0], indices[0] + 3))


def test_output_score_removes_the_block_whose_removal_changes_the_output_least() -> None:
    graph, x = traced("resnet18")
    calibration = samples_for(x, 2)
    result = go.run_pipeline(graph, "remove-blocks{count=1,score=output}", calibration=calibration)
    summary = removal_summary(result)
    reference = [interpret(graph, *s)[0] for s in calibration]

    def change(unit: object) -> float:  # the interpreter's answer, independent of the pass's torch scoring
        single = type(summary)(summary.spec, [type(unit)(**{**vars(unit), "removed": True})])
        trial = branch_zeroed(graph, single)
        cosines = [float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
                   for a, b in zip(reference, (interpret(trial, *s)[0] for s in calibration))]
        return 1 - float(np.mean(cosines))

    changes = {u.name: change(u) for u in summary.units}
    assert summary.removed[0].name == min(changes, key=changes.get)  # type: ignore[arg-type]
    assert all(abs(u.score - changes[u.name]) < 1e-4 for u in summary.units)


def test_plain_layers_are_units_when_asked() -> None:
    graph, x = traced("vgg11")
    assert not find_blocks(graph)
    result = check_removal(graph, "remove-blocks{count=2,plain=true}", x, calibration=samples_for(x))
    summary = removal_summary(result)
    assert [u.kind for u in summary.removed] == ["plain", "plain"]


def test_skip_keeps_named_blocks() -> None:
    graph, x = traced("resnet18")
    summary = removal_summary(go.run_pipeline(graph, "remove-blocks{count=3,skip=[layer1,layer2.1]}",
                                              calibration=samples_for(x)))
    assert not any(u.name.startswith("layer1.") or u.name == "layer2.1" for u in summary.units)
    assert len(summary.removed) == 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(residual_graphs().flatmap(lambda g: inputs_for(g).map(lambda xs: (g, xs))), st.integers(1, 3),
       st.sampled_from(["influence", "norm", "output"]))
def test_contract_on_generated_residual_stacks(case: tuple[go.Graph, list[np.ndarray]], count: int,
                                               score: str) -> None:
    graph, inputs = case
    blocks = find_blocks(graph, plain=True)
    count = min(count, len(blocks))
    if not count:
        return
    spec = f"remove-blocks{{count={count},score={score},plain=true}}"
    result = check_removal(graph, spec, *inputs, calibration=[tuple(inputs)])
    assert len(removal_summary(result).removed) == count


def test_auto_keeps_the_count_that_pays_against_pruning_to_the_same_macs() -> None:
    graph, x = traced("resnet18")
    samples = samples_for(x)
    after = "prune{macs=0.6,macs-of=pipeline}"
    result = go.run_pipeline(graph, f"remove-blocks{{auto=true}},{after}", calibration=samples)
    summary = removal_summary(result)
    tried = [int(part.split(":")[0]) for part in summary.note.split("removed: ")[1].split(";")[0].split(", ")]
    assert tried[:2] == [0, 1] and len(summary.removed) in tried

    def closeness(g: go.Graph) -> float:
        pairs = [(interpret(graph, *s)[0], interpret(g, *s)[0]) for s in samples]
        return float(np.mean([(a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b) for a, b in pairs]))

    chosen = closeness(result.graph)
    assert go.graph_cost(result.graph).macs == pytest.approx(0.6 * go.graph_cost(graph).macs, rel=0.05)
    for count in tried:  # no count it tried, spelled out by hand, stays closer to the model
        spec = (f"remove-blocks{{count={count}}}," if count else "") + after
        assert closeness(go.run_pipeline(graph, spec, calibration=samples).graph) <= chosen + 1e-6


def test_bad_requests_are_clear_errors() -> None:
    graph, x = traced("resnet18")
    with pytest.raises(go.GraphoptError, match="has 8 removable unit"):
        go.run_pipeline(graph, "remove-blocks{count=9}", calibration=samples_for(x))
    with pytest.raises(go.GraphoptError, match="needs input samples"):
        go.run_pipeline(graph, "remove-blocks{count=1}")
    with pytest.raises(go.OptionError, match="exactly one of count"):
        go.run_pipeline(graph, "remove-blocks{count=1,macs=0.5}")
    with pytest.raises(go.OptionError, match="give count="):
        go.run_pipeline(graph, "remove-blocks{macs=0.5,score=angular}")
    with pytest.raises(go.GraphoptError, match="right before a prune"):
        go.run_pipeline(graph, "remove-blocks{auto=true},prune{macs=0.5}", calibration=samples_for(x))
    with pytest.raises(go.GraphoptError, match="no run of 3 consecutive blocks"):
        go.run_pipeline(graph, "remove-blocks{count=3,score=angular}", calibration=samples_for(x))


def test_cli_prints_the_summary_and_writes_the_ranking(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from graphopt.cli import main

    graph, x = traced("resnet18", 32)
    source, data = tmp_path / "r18.onnx", tmp_path / "data.npz"  # type: ignore[operator]
    go.to_onnx(graph, source)
    np.savez(data, x=np.concatenate([s[0] for s in samples_for(x, 4)]))
    out = tmp_path / "short.onnx"  # type: ignore[operator]
    assert main(["opt", str(source), "-p", "canonicalize,fold-bn,remove-blocks{count=2}", "--calibration", str(data),
                 "-o", str(out), "-q"]) == 0
    assert "remove-blocks: MACs" in capsys.readouterr().out
    report = out.with_suffix(".report.md").read_text()
    assert "## Block removal" in report and "| 1 | `layer" in report and report.count("| yes |") == 2
    assert out.with_name("short.report.blocks.png").stat().st_size > 10_000
    assert len(find_blocks(go.from_onnx(out))) == 6
