import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from graphopt.passes import available

import graphopt as go
from graphopt.ir.node import Node
from graphopt.pipeline import ALL, Analysis, DumpToFolder, PrintAfter, Timing, parse_pipeline
from graphopt.rewrite import Declined, Pattern, Rewriter, apply_patterns
from tests.helpers import conv_relu_graph, sample_input


@go.register_pass
@dataclass(frozen=True)
class BreakTypes(go.Pass):
    """Corrupts a result type (a pass with a bug the verifier must catch)."""

    name = "test-break"
    contract = go.Contract("exact")

    def run(self, graph: go.Graph, ctx: go.PassContext) -> go.PassResult:
        graph.nodes[-1].results[0].type = go.TensorType("float32", [1])
        return go.PassResult(True)


@go.register_pass
@dataclass(frozen=True)
class Crash(go.Pass):
    """Raises an internal error."""

    name = "test-crash"
    contract = go.Contract("exact")

    def run(self, graph: go.Graph, ctx: go.PassContext) -> go.PassResult:
        raise KeyError("oops")


class CountingAnalysis(Analysis):
    name = "test-count"
    computed: ClassVar[int] = 0

    @classmethod
    def compute(cls, graph: go.Graph, ctx: Any) -> int:
        cls.computed += 1
        return len(graph)


@go.register_pass
@dataclass(frozen=True)
class UseAnalysis(go.Pass):
    """Reads the counting analysis and claims a change."""

    name = "test-use-analysis"
    contract = go.Contract("exact")
    preserve: bool = False
    change: bool = True
    seen: tuple[str, ...] = ()

    def run(self, graph: go.Graph, ctx: go.PassContext) -> go.PassResult:
        ctx.analysis(CountingAnalysis, graph)
        ctx.options.setdefault("log", []).append(ctx.get("tag"))
        return go.PassResult(self.change, frozenset({"test-count"}) if self.preserve else frozenset())


class ReluToAbs(Pattern[None]):
    """A deliberately wrong rewrite at loc 'bad' (relu -> abs); right elsewhere (relu -> clamp)."""

    root = "relu"

    def check(self, node: Node) -> Declined | None:
        return None

    def rewrite(self, rw: Rewriter, node: Node, match: None) -> None:
        op, attrs = ("abs", {}) if node.loc == "bad" else ("clamp", {"min": 0.0})
        rw.replace(node, rw.create(op, node.operands, attrs).result)


@go.register_pass
@dataclass(frozen=True)
class LowerRelu(go.Pass):
    """Lowers relu, wrongly at one node."""

    name = "test-lower-relu"
    contract = go.Contract("exact")

    def run(self, graph: go.Graph, ctx: go.PassContext) -> go.PassResult:
        return go.PassResult(apply_patterns(graph, [ReluToAbs()], ctx=ctx) > 0)


def test_pipeline_strings_build_passes_with_options() -> None:
    passes = parse_pipeline("dce, test-use-analysis{preserve=true,seen=[a,b]},dce{keep-parameters=true}")
    assert [p.spec() for p in passes] == [
        "dce", "test-use-analysis{preserve=true,seen=[a,b]}", "dce{keep-parameters=true}"]
    assert passes[1].seen == ("a", "b")


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("dce,nope", "unknown pass 'nope'; available passes: .*dce"),
        ("dce{keep=true}", "dce: unknown option 'keep' \\(options: keep-parameters\\)"),
        ("dce{keep-parameters=yes}", "expected true or false, got 'yes'"),
        ("dce{keep-parameters}", "needs a value"),
        ("dce{keep-parameters=true", "unclosed bracket"),
        ("dce,,dce", "empty pass name"),
    ],
)
def test_malformed_pipelines_are_clear_errors(pipeline: str, message: str) -> None:
    with pytest.raises(go.PipelineError, match=message):
        go.run_pipeline(conv_relu_graph(), pipeline)


def test_passes_run_in_order_and_report_each_one() -> None:
    g = conv_relu_graph()
    result = go.run_pipeline(g, "test-use-analysis{change=false},dce,dce")
    assert [r.spec for r in result.records] == ["test-use-analysis{change=false}", "dce", "dce"]
    assert [(r.nodes_before, r.nodes_after, r.changed) for r in result.records] == [
        (4, 4, False), (4, 3, True), (3, 3, False)]
    table = result.report()
    assert table.splitlines()[0].split() == ["pass", "time", "ms", "nodes", "before", "nodes", "after", "changes"]
    assert table.splitlines()[3].split()[-1] == "1"  # dce removed one node
    assert len(g) == 4  # not in place: the caller's graph is untouched
    in_place = go.run_pipeline(g, "dce", in_place=True)
    assert in_place.graph is g and len(g) == 3


def test_a_pass_that_breaks_the_graph_is_named_with_the_passes_before_it() -> None:
    with pytest.raises(go.InternalError) as info:
        go.run_pipeline(conv_relu_graph(), "dce,test-break,dce")
    message = str(info.value)
    assert "pass 'test-break' (#2 of pipeline 'dce,test-break,dce'; passes before it: dce)" in message
    assert "produced an invalid graph" in message and "differ from inferred" in message
    go.run_pipeline(conv_relu_graph(), "test-break", verify=False)  # verification can be switched off


def test_a_crashing_pass_is_named() -> None:
    with pytest.raises(go.InternalError, match=r"pass 'test-crash' .* crashed \(KeyError: 'oops'\); this is a bug"):
        go.run_pipeline(conv_relu_graph(), "test-crash")


def test_analyses_are_cached_and_invalidated_by_what_passes_preserve() -> None:
    def computations(pipeline: str) -> int:
        CountingAnalysis.computed = 0
        go.run_pipeline(conv_relu_graph(), pipeline)
        return CountingAnalysis.computed

    assert computations("test-use-analysis,test-use-analysis") == 2
    assert computations("test-use-analysis{preserve=true},test-use-analysis") == 1
    assert computations("test-use-analysis{change=false},test-use-analysis") == 1
    ctx = go.PassContext({})
    ctx.analysis(CountingAnalysis, conv_relu_graph())
    ctx.invalidate(ALL)
    assert ctx.cached_analyses == ["test-count"]


def test_options_reach_the_passes() -> None:
    log: list[str] = []
    go.run_pipeline(conv_relu_graph(), "test-use-analysis,test-use-analysis", tag="calib", log=log)
    assert log == ["calib", "calib"]


def test_instruments_time_print_and_dump(tmp_path: Path) -> None:
    timing, printed = io.StringIO(), io.StringIO()
    go.run_pipeline(conv_relu_graph(), "dce,dce", instruments=[
        Timing(timing), PrintAfter("dce", stream=printed), DumpToFolder(tmp_path)])
    lines = timing.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[1] dce:") and "4 -> 3 nodes, 1 change(s)" in lines[0]
    assert printed.getvalue().count("// IR after dce") == 2 and "sigmoid" not in printed.getvalue()
    assert sorted(p.name for p in tmp_path.glob("*.gir")) == ["00-input.gir", "01-dce.gir", "02-dce.gir"]
    assert len(go.load(tmp_path / "01-dce.gir")) == 3


def test_bisect_finds_the_rewrite_that_breaks_the_model() -> None:
    g = go.Graph()
    acc = x = g.add_input(go.TensorType("float32", [8]), "x")
    for i in range(7):
        relu = g.create("relu", [x], loc="bad" if i == 4 else f"r{i}").result
        acc = g.create("add", [acc, relu]).result
    g.outputs = [acc]
    data = np.linspace(-2, 2, 8, dtype=np.float32)
    expected = go.interpret(g, data)[0]

    def good(candidate: go.Graph) -> bool:
        return np.allclose(go.interpret(candidate, data)[0], expected)

    found = go.bisect(g, "test-lower-relu", good)
    assert (found.good_changes, found.total_changes) == (4, 7)
    assert found.culprit == "test-lower-relu: ReluToAbs at relu at 'bad'"
    assert "change #5 of 7 breaks the graph" in str(found)
    assert go.bisect(g, "dce", good).culprit is None


def test_available_lists_passes_with_options_and_contracts() -> None:
    info = {p.name: p for p in available()}
    assert info["dce"].options["keep-parameters"].type is bool and info["dce"].options["keep-parameters"].default is False
    assert str(info["quantize"].options["percentile"].allowed) == "(50, 100]"
    assert info["dce"].contract.semantics == "exact"
    assert "keep-parameters: bool = False" in str(info["dce"])


def test_passes_must_state_a_contract() -> None:
    @dataclass(frozen=True)
    class NoContract(go.Pass):
        name = "test-no-contract"

        def run(self, graph: go.Graph, ctx: go.PassContext) -> go.PassResult:
            return go.PassResult(False)

    with pytest.raises(go.PipelineError, match="must state its contract"):
        go.register_pass(NoContract)


def test_pipeline_output_matches_the_interpreter() -> None:
    g = conv_relu_graph()
    x = sample_input(g)
    np.testing.assert_array_equal(go.interpret(go.run_pipeline(g, "dce").graph, *x)[0], go.interpret(g, *x)[0])
