"""Golden tests (input IR, pipeline, expected IR) and the stated contract of every pass, checked on
hypothesis-generated graphs and on real models."""

from pathlib import Path

import numpy as np
import pytest

import graphopt as go
from graphopt.pipeline import parse_pipeline
from graphopt.rewrite import Trace
from graphopt.testing import check_pass, parse_golden, run_golden
from graphopt.testing.blocks import check_removal
from graphopt.testing.pruning import check_masked
from tests.test_models import assert_close

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.gir"))
WEIGHTS = {"w3": np.tile(np.arange(1, 10, dtype=np.float32), 4).reshape(2, 2, 3, 3),
           "ones": np.ones((3, 2, 4), np.float32)}


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(path: Path) -> None:
    case = parse_golden(path.read_text())
    source, spec = go.parse(case.source, weights=WEIGHTS), case.pipeline
    options = case.options(source)
    result = go.run_pipeline(source, spec, **options)
    assert str(result.graph) == str(go.parse(case.expected, weights=WEIGHTS))
    x = case.inputs(source)
    names = {p.name for p in parse_pipeline(spec) if p.contract.semantics == "masked"}
    if names:  # it equals a masked model, not its input (a sparsified graph is its own masked model)
        if "prune" in names:
            check_masked(source, spec, *x, **options)
        if "remove-blocks" in names:
            check_removal(source, spec, *x, **options)
        return
    before = go.interpret(source, *x)
    for a, b in zip(before, go.interpret(result.graph, *x)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_golden_files_run_with_the_shared_helper() -> None:
    actual, expected = run_golden((Path(__file__).parent / "golden" / "cse.gir").read_text())
    assert actual == expected


@pytest.mark.parametrize("pipeline", ["remove-identity", "fold-constants", "cse", "fold-bn", "fuse-activation",
                                      "canonicalize", "canonicalize,fold-bn,fuse-activation"])
def test_contract_on_generated_graphs(pipeline: str) -> None:
    check_pass(pipeline)


def test_fold_bn_says_why_it_declined() -> None:
    head = (Path(__file__).parent / "golden" / "fold_bn_declined.gir").read_text().partition("\n# expected")[0]
    trace = Trace()
    go.run_pipeline(go.parse(head.partition("\n")[2], weights=WEIGHTS), "fold-bn", trace=trace)
    reasons = {e.reason for e in trace.declined()}
    assert "the conv2d output has another user" in reasons
    assert "the conv pads with zeros: folding the batch norm before it would change the border" in reasons


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_clean_up_pipeline_on_real_models(name: str) -> None:
    from graphopt import models

    module, x = models.torchvision_model(name)
    graph = go.from_torch(module, (x,))
    result = go.run_pipeline(graph, "canonicalize,fold-bn,fuse-activation")
    layers = {"conv1d", "conv2d", "conv_transpose2d", "linear"}
    assert not [n for n in result.graph if n.op == "batch_norm" and n.operands[0].producer is not None
                and n.operands[0].producer.op in layers]
    assert len(result.graph) < len(graph)
    assert_close(go.interpret(result.graph, x.numpy())[0], module(x).detach().numpy(), name)
    again = go.run_pipeline(result.graph, "canonicalize,fold-bn,fuse-activation")
    assert not any(r.changed for r in again.records)
