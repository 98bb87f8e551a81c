"""Structural pruning: the channel analysis on real architectures, the masked-model contract on
generated graphs and real models, targets, options, and the pruned model through every backend."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torchvision

import graphopt as go
from graphopt.analysis import analyze_channels
from graphopt.testing.pruning import check_masked, check_prune, masked_graph, prune_summary
from tests.helpers import conv_relu_graph, tiny_transformer, traced


def group_names(graph: go.Graph) -> dict[str, tuple[int, int, str | None]]:
    return {g.name: (g.size, g.width, g.frozen) for g in analyze_channels(graph).groups if g.producers}


def test_residual_stages_share_one_group_and_the_classifier_is_never_pruned() -> None:
    graph, _ = traced("resnet18")
    groups = group_names(graph)
    assert groups["conv1, layer1.0.conv2, layer1.1.conv2"] == (64, 1, None)  # stem and both residual convs
    assert groups["layer2.0.conv2, layer2.0.downsample.0, layer2.1.conv2"] == (128, 1, None)  # with the shortcut
    assert groups["layer1.0.conv1"] == (64, 1, None)
    assert groups["fc"] == (1000, 1, "graph output")


def test_attention_heads_are_whole_units_and_layer_norm_axes_are_barriers() -> None:
    graph, _ = traced("vit")
    groups = group_names(graph)
    heads = [v for k, v in groups.items() if "self_attention" in k and v[1] > 1]
    assert heads == [(4, 48, None), (4, 48, None)]  # 4 heads a layer; 48 packed in_proj rows (q, k, v) each
    assert groups["encoder.layers.encoder_layer_0.mlp.0"] == (128, 1, None)
    stream = next(v for k, v in groups.items() if k.startswith("conv_proj"))  # the residual stream
    assert stream[2] == "layer_norm normalizes over it"


def test_grouped_and_depthwise_convs_prune_whole_groups() -> None:
    graph, x = traced("regnet_y_400mf")
    analysis = analyze_channels(graph)
    grouped = [g for g in analysis.prunable if g.width > 1]
    assert grouped and all((g.members[g.keys[0]].counts == g.width).all() for g in grouped)
    result = check_masked(graph, "prune{ratio=0.5,round-to=1}", x)
    convs = [n for n in result.graph if n.op == "conv2d" and n.attrs["groups"] > 1]
    assert convs and all(n.operands[0].shape[1] // n.attrs["groups"] == n.operands[1].shape[1] for n in convs)


@pytest.mark.parametrize(("name", "size"), [
    ("resnet18", 32), ("mobilenet_v2", 32), ("densenet121", 32), ("shufflenet_v2_x0_5", 32),
    ("efficientnet_b0", 32), ("squeezenet1_0", 64), ("googlenet", 32), ("convnext_tiny", 32),
])
def test_pruned_cnns_equal_their_masked_models(name: str, size: int) -> None:
    graph, x = traced(name, size)
    result = check_masked(graph, "prune{ratio=0.4,round-to=1}", x)
    summary = prune_summary(result)
    assert summary.macs_after < summary.macs_before * 0.9, summary.line()


def test_a_vit_and_a_bert_style_encoder_equal_their_masked_models() -> None:
    graph, x = traced("vit")
    result = check_masked(graph, "prune{ratio=0.5,round-to=1}", x)
    assert any(n.op == "reshape" and 2 in n.attrs["shape"] for n in result.graph)  # 4 heads -> 2
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=16)).eval()
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(0))
    graph = go.from_torch(bert, (ids,))
    result = check_masked(graph, "prune{ratio=0.5,round-to=1}", ids.numpy())
    summary = prune_summary(result)
    pruned = {g.name: (g.channels_before, g.channels_after) for g in summary.groups if not g.left_alone}
    assert pruned["encoder.layer.0.intermediate.dense"] == (64, 32)
    assert (32, 16) in pruned.values()  # a layer's 4 heads of 8 channels -> 2 heads


STRUCTURAL = ["conv2d", "linear", "relu", "sigmoid", "add", "mul", "cat", "split", "batch_norm", "group_norm",
              "max_pool2d", "adaptive_avg_pool2d", "flatten", "reshape", "permute", "mean", "softmax", "layer_norm",
              "matmul"]
LAYERS = ["conv2d", "linear", "relu", "add", "cat", "split", "batch_norm", "group_norm", "max_pool2d", "flatten"]


def test_masked_contract_on_generated_graphs() -> None:
    check_prune("prune{ratio=0.5,round-to=1}", max_examples=60)  # every op the registry samples
    check_prune("prune{ratio=0.5,round-to=1}", ops=STRUCTURAL, max_examples=60)
    assert check_prune("prune{ratio=0.5,round-to=1}", ops=LAYERS, max_examples=80,
                       derandomize=True) >= 5  # really exercised
    assert check_prune("prune{ratio=0.3,round-to=1,allocation=global,criterion=l2}", ops=LAYERS,
                       max_examples=40, derandomize=True) >= 2


def test_macs_target_lands_just_under_what_was_asked() -> None:
    graph, x = traced("resnet18", 32)
    for target in (0.7, 0.5):
        summary = prune_summary(check_masked(graph, f"prune{{macs={target},round-to=8}}", x))
        share = summary.macs_after / summary.macs_before
        assert target - 0.05 <= share <= target, summary.line()


def test_round_to_and_min_channels_shape_the_kept_counts() -> None:
    graph, _ = traced("resnet18", 32)
    result = go.run_pipeline(graph, "prune{ratio=0.7,round-to=16,min-channels=32}")
    convs = [n for n in result.graph if n.op == "conv2d"]
    assert all(n.result.shape[1] % 16 == 0 and n.result.shape[1] >= 32 for n in convs)


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "activation", "taylor", "random", "auto"])
def test_every_criterion_keeps_the_contract(criterion: str) -> None:
    graph, x = traced("resnet18", 32)
    samples = [(np.random.default_rng(i).standard_normal(x.shape).astype(np.float32),) for i in range(3)]
    result = check_masked(graph, f"prune{{ratio=0.5,criterion={criterion},round-to=1}}", x, calibration=samples)
    if criterion == "auto":  # it tried every criterion on the samples and says which it kept
        assert "auto chose" in prune_summary(result).spec and "taylor" in prune_summary(result).spec


def test_data_criteria_need_samples() -> None:
    with pytest.raises(go.GraphoptError, match=r"criterion=taylor.* needs input samples"):
        go.run_pipeline(traced("resnet18", 32)[0], "prune{ratio=0.5,criterion=taylor}")


def test_magnitude_removes_the_weakest_channels() -> None:
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", [1, 4]), "x")
    w1 = np.diag([1.0, 0.01, 2.0, 0.02]).astype(np.float32)
    h = g.create("linear", [x, g.add_parameter(w1, "fc1.weight")], loc="fc1").result
    r = g.create("relu", [h], loc="act").result
    g.outputs = [g.create("linear", [r, g.add_parameter(np.ones((2, 4), np.float32), "fc2.weight")], loc="fc2").result]
    result = go.run_pipeline(g, "prune{ratio=0.5,round-to=1}")
    fc1, fc2 = result.graph.parameters
    np.testing.assert_array_equal(fc1.data, w1[[0, 2]])  # rows 1 and 3 had the smallest magnitude
    assert fc2.shape == (2, 2) and fc1.name == "fc1.weight"


def test_skip_and_heads_leave_groups_alone() -> None:
    graph, _ = traced("resnet18", 32)
    summary = prune_summary(go.run_pipeline(graph, "prune{ratio=0.5,skip=[layer1],round-to=1}"))
    alone = {g.name: g.left_alone for g in summary.groups if g.left_alone}
    assert alone["layer1.0.conv1"] == "skip=" and alone["fc"] == "graph output"
    vit, _ = traced("vit", num_layers=1)
    summary = prune_summary(go.run_pipeline(vit, "prune{ratio=0.5,heads=false,round-to=1}"))
    assert "heads=false" in [g.left_alone for g in summary.groups]


def test_the_pruned_graph_runs_in_onnx_runtime_and_torch(tmp_path: object) -> None:
    import onnxruntime as ort

    graph, x = traced("resnet18", 32)
    result = go.run_pipeline(graph, "prune{ratio=0.5,round-to=8}")
    (expected,) = go.interpret(result.graph, x)
    path = tmp_path / "pruned.onnx"  # type: ignore[operator]
    go.to_onnx(result.graph, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-5)
    module = go.to_torch(result.graph)
    state = module.state_dict()
    assert state["layer1.0.conv1.weight"].shape == (32, 32, 3, 3)  # original names, smaller shapes
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_onnx_models_prune_too(tmp_path: object) -> None:
    graph, x = traced("mobilenet_v2", 32)
    path = tmp_path / "m.onnx"  # type: ignore[operator]
    go.to_onnx(graph, path)
    result = check_masked(go.from_onnx(path), "prune{ratio=0.5,round-to=1}", x)
    assert prune_summary(result).macs_after < prune_summary(result).macs_before * 0.6


@pytest.mark.parametrize(("pipeline", "message"), [
    ("prune{ratio=0}", "ratio=0.0 is out of range"),
    ("prune{ratio=1.5}", "ratio=1.5 is out of range"),
    ("prune{macs=0}", "macs=0.0 is out of range"),
    ("prune{ratio=0.5,criterion=taylor2}", "criterion=taylor2 is not a choice"),
    ("prune", "give exactly one of ratio="),
    ("prune{ratio=0.5,macs=0.5}", "give exactly one of ratio="),
])
def test_bad_prune_options_are_clear_errors(pipeline: str, message: str) -> None:
    with pytest.raises(go.OptionError, match=message):
        go.run_pipeline(conv_relu_graph(), pipeline)


def test_a_model_with_nothing_to_prune_says_why() -> None:
    result = go.run_pipeline(conv_relu_graph(), "prune{ratio=0.5}")
    summary = prune_summary(result)
    assert not result.records[0].changed
    assert [(g.name, g.left_alone) for g in summary.groups] == [("conv", "graph output")]
    assert "0 group(s) pruned, 1 left alone" in summary.line()
    assert masked_graph(conv_relu_graph(), summary) is not None


def test_pruned_weights_reload_onto_the_original_factory(tmp_path: object) -> None:
    from graphopt.backends.torch_writeback import apply_pruning_plan, load_pruned, pruning_plan, save_pruned

    graph, x = traced("resnet18", 32)
    result = go.run_pipeline(graph, "prune{ratio=0.3,round-to=8},prune{ratio=0.3,round-to=8}")  # plans compose
    (expected,) = go.interpret(result.graph, x)
    path = save_pruned(tmp_path / "pruned.pt", result)  # type: ignore[operator]
    payload = torch.load(path, weights_only=True)  # plain tensors and lists: no pickled module
    assert payload["pruning"]["layer1.0.conv1.weight"][0] == pruning_plan(result)["layer1.0.conv1.weight"][0]
    model = load_pruned(torchvision.models.resnet18, path).eval()
    assert model.layer1[0].conv1.out_channels == model.layer1[0].bn1.num_features == \
        result.graph.find("layer1.0.conv1")[0].result.shape[1]
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
    mobile, x2 = traced("mobilenet_v2", 32)
    pruned = go.run_pipeline(mobile, "prune{ratio=0.5,round-to=8}")
    torch.manual_seed(0)
    own = apply_pruning_plan(torchvision.models.mobilenet_v2().eval(), pruning_plan(pruned))  # a user's own module
    own.load_state_dict(go.to_torch(pruned.graph).state_dict(), strict=False)
    depthwise = own.features[2].conv[1][0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels < 96
    with torch.no_grad():
        np.testing.assert_allclose(own(torch.from_numpy(x2)).numpy(), go.interpret(pruned.graph, x2)[0],
                                   rtol=1e-4, atol=1e-6)


def test_cli_prints_the_summary_and_writes_the_report(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from graphopt.cli import main

    graph, _ = traced("resnet18", 32)
    source = tmp_path / "r18.onnx"  # type: ignore[operator]
    go.to_onnx(graph, source)
    out = tmp_path / "small.onnx"  # type: ignore[operator]
    assert main(["opt", str(source), "-p", "canonicalize,prune{macs=0.5,round-to=8}", "-o", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "prune: MACs" in printed and "group(s) pruned" in printed
    report = out.with_suffix(".report.md").read_text()
    assert "## Structural pruning" in report and "| `layer1.0.conv1" in report and "graph output" in report
    assert out.with_name("small.report.prune.png").stat().st_size > 10_000
    assert go.graph_cost(go.from_onnx(out)).macs <= 0.5 * go.graph_cost(graph).macs


@pytest.mark.parametrize("family", ["gpt2", "t5", "distilbert"])
def test_hugging_face_encoders_equal_their_masked_models(family: str) -> None:
    """GPT-2's Conv1D (addmm), T5's relative position bias (a head axis in the attention mask) and
    DistilBERT's attention, each with two layers of 4 heads."""
    model, (ids, mask) = tiny_transformer(family)
    graph = go.from_torch(model, (ids, mask))
    summary = prune_summary(check_masked(graph, "prune{ratio=0.5,round-to=1}", ids.numpy(), mask.numpy()))
    assert summary.macs_after <= 0.55 * summary.macs_before, summary.line()


def test_latency_target_reads_a_cached_table_of_measured_layers(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from graphopt.analysis.latency import LatencyTable, layers_ms

    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path))
    # the whole model "measures" its MACs and a layer the elements it reads, so the run is deterministic
    monkeypatch.setattr("graphopt.passes.prune.model_ms", lambda graph, *args: go.graph_cost(graph).macs / 1e6)
    monkeypatch.setattr(LatencyTable, "_measure",
                        lambda self, op, types, attrs: sum(math.prod(map(int, t.shape)) for t in types) / 1e6)
    graph, x = traced("resnet18", 32)
    result = check_masked(graph, "prune{latency=0.6,round-to=8}", x)
    summary = prune_summary(result)
    assert summary.latency_ms is not None and "latency" in summary.line()
    before, after = summary.latency_ms
    assert after == go.graph_cost(result.graph).macs / 1e6 and abs(after / before - 0.6) < 0.05, summary.line()
    table = LatencyTable()  # reads the file the pass wrote: no layer is measured again
    assert table.entries and layers_ms(result.graph, table) < layers_ms(graph, table) and table.measured == 0


def test_a_pruned_model_that_measures_slower_is_not_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path))
    timings = iter([1.0, 2.0, 2.0, 2.0])  # unpruned, then each of the three fits
    monkeypatch.setattr("graphopt.passes.prune.model_ms", lambda *args, **kwargs: next(timings))
    graph, _ = traced("resnet18", 32)
    result = go.run_pipeline(graph, "prune{latency=0.6,round-to=8}")
    assert not result.records[0].changed and "measured no faster" in prune_summary(result).line()


def linears_around(middle: Callable[[go.Graph, go.Value], go.Value]) -> go.Graph:
    """x -> fc1 (6 -> 6) -> middle(h) -> reshape to [1, 6] -> fc2 (6 -> 2): the fuzzer's reshape findings."""
    rng = np.random.default_rng(0)
    g = go.Graph()
    x = g.add_input(go.TensorType("float32", [1, 6]), "x")
    h = g.create("linear", [x, g.add_parameter(rng.standard_normal((6, 6)).astype(np.float32), "fc1.weight")],
                 loc="fc1").result
    flat = g.create("reshape", [middle(g, h)], {"shape": [1, 6]}).result
    g.outputs = [g.create("linear", [flat, g.add_parameter(rng.standard_normal((2, 6)).astype(np.float32),
                                                           "fc2.weight")], loc="fc2").result]
    return g


def test_a_reshape_that_regroups_axes_is_a_barrier() -> None:
    """A fuzzer finding: [1, 2, 3] -> [1, 3, 2] pairs two axes with two others; no channel survives whole."""
    g = linears_around(lambda g, h: g.create("reshape", [g.create("reshape", [h], {"shape": [1, 2, 3]}).result],
                                             {"shape": [1, 3, 2]}).result)
    summary = prune_summary(check_masked(g, "prune{ratio=0.5,round-to=1}", np.ones((1, 6), np.float32)))
    assert {grp.name: grp.left_alone for grp in summary.groups}["fc1"] == "reshape regroups these axes"


def test_permutes_with_negative_dims_after_a_split() -> None:
    """A fuzzer finding: a permute written with a negative axis after a reshape that splits channels."""
    g = linears_around(lambda g, h: g.create("permute", [g.create("reshape", [h], {"shape": [1, 2, 3]}).result],
                                             {"dims": [0, 2, -2]}).result)
    check_masked(g, "prune{ratio=0.5,round-to=1}", np.ones((1, 6), np.float32))
