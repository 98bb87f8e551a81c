from dataclasses import dataclass

import numpy as np
import pytest

import graphopt as go
from graphopt.ir.node import Node
from graphopt.rewrite import Declined, Pattern, Rewriter, Trace, apply_patterns


class DoubleNeg(Pattern[Node]):
    """neg(neg(x)) -> x, unless the inner neg is read elsewhere too."""

    root = "neg"

    def check(self, node: Node) -> Node | Declined:
        inner = node.operands[0].producer
        if inner is None or inner.op != "neg":
            return Declined("operand is not a neg")
        if len(inner.result.uses) > 1:
            return Declined(f"inner neg has {len(inner.result.uses)} users")
        return inner

    def rewrite(self, rw: Rewriter, node: Node, inner: Node) -> None:
        rw.replace(node, inner.operands[0])


class MulByOne(Pattern[int]):
    root = "mul"

    def check(self, node: Node) -> int | Declined:
        for i, v in enumerate(node.operands):
            if v.data is not None and np.all(v.data == 1) and node.operands[1 - i].type == node.result.type:
                return 1 - i
        return Declined("no operand is a constant one")

    def rewrite(self, rw: Rewriter, node: Node, keep: int) -> None:
        rw.replace(node, node.operands[keep])


class Relu6ToHardtanh(Pattern[None]):
    root = "relu6"

    def check(self, node: Node) -> None:
        return None

    def rewrite(self, rw: Rewriter, node: Node, match: None) -> None:
        rw.replace(node, rw.create("hardtanh", node.operands, {"min_val": 0.0, "max_val": 6.0}).result)


class Spin(Pattern[None]):
    """Rewrites relu into a fresh relu forever: the driver must stop it."""

    root = "relu"

    def check(self, node: Node) -> None:
        return None

    def rewrite(self, rw: Rewriter, node: Node, match: None) -> None:
        rw.replace(node, rw.create("relu", node.operands).result)


SOURCE = """\
graph main(%x: float32[2, 3]) {
  param %one: float32[] = [1.0]
  %a: float32[2, 3] = neg(%x) loc("a")
  %b: float32[2, 3] = neg(%a) loc("b")
  %c: float32[2, 3] = mul(%b, %one) loc("c")
  %d: float32[2, 3] = relu6(%c) loc("block.act")
  %e: float32[2, 3] = neg(%d) loc("e")
  %f: float32[2, 3] = neg(%e) loc("f")
  %g: float32[2, 3] = add(%f, %e) loc("g")
  return %g
}
"""

EXPECTED = """\
graph main(%x: float32[2, 3]) {
  %0: float32[2, 3] = hardtanh(%x) {min_val=0.0, max_val=6.0} loc("block.act")
  %e: float32[2, 3] = neg(%0) loc("e")
  %f: float32[2, 3] = neg(%e) loc("f")
  %g: float32[2, 3] = add(%f, %e) loc("g")
  return %g
}
"""


def test_patterns_reach_a_fixpoint_keep_loc_and_remove_dead_code() -> None:
    g = go.parse(SOURCE)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32) * 8
    before = go.interpret(g, x)[0]
    trace = Trace()
    count = apply_patterns(g, [DoubleNeg(), MulByOne(), Relu6ToHardtanh()], trace=trace)
    assert count == 3
    assert str(g) == EXPECTED  # the constant one went with the mul that read it
    np.testing.assert_allclose(go.interpret(g, x)[0], before)
    go.verify(g)
    assert [e.pattern for e in trace.applied()] == ["DoubleNeg", "MulByOne", "Relu6ToHardtanh"]
    reasons = {e.reason for e in trace.declined("DoubleNeg")}
    assert reasons == {"operand is not a neg", "inner neg has 2 users"}
    assert "declined (inner neg has 2 users) at %f" in str(trace)


def test_chains_collapse_through_revisiting() -> None:
    g = go.Graph()
    v = x = g.add_input(go.TensorType("float32", [4]), "x")
    for _ in range(6):
        v = g.create("neg", [v]).result
    g.outputs = [v]
    assert apply_patterns(g, [DoubleNeg()]) == 3
    assert len(g) == 0 and g.outputs == [x]


def test_a_pattern_set_that_never_converges_is_an_error() -> None:
    g = go.parse("graph g(%x: float32[2]) {\n  %y: float32[2] = relu(%x) loc(\"act\")\n  return %y\n}")
    with pytest.raises(go.PipelineError, match="did not converge after 50 rewrites \\(last: Spin at relu at 'act'\\)"):
        apply_patterns(g, [Spin()], max_rewrites=50)


def test_the_change_gate_stops_rewrites() -> None:
    g = go.parse(SOURCE)
    ctx = go.PassContext({}, change_limit=1)
    assert apply_patterns(g, [DoubleNeg(), MulByOne(), Relu6ToHardtanh()], ctx=ctx) == 1
    assert ctx.change_log == ["DoubleNeg at neg at 'b'"]


@go.register_pass
@dataclass(frozen=True)
class SimplifyForTest(go.Pass):
    """A pass made of the patterns above."""

    name = "test-simplify"
    contract = go.Contract("exact")

    def run(self, graph: go.Graph, ctx: go.PassContext) -> go.PassResult:
        return go.PassResult(apply_patterns(graph, [DoubleNeg(), MulByOne(), Relu6ToHardtanh()], ctx=ctx) > 0)


def test_pattern_pass_through_the_pipeline() -> None:
    result = go.run_pipeline(go.parse(SOURCE), "test-simplify")
    assert str(result.graph) == EXPECTED and result.records[0].changed and result.changes == 3
