"""The trace-free demo: a small CNN classifier built in the IR, printed, verified, passed through a
pipeline, and checked against the interpreter. Later frontends replace the hand-built graph with a
traced torchvision model; the flow stays the same."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import numpy as np

from graphopt.analysis import graph_cost
from graphopt.errors import GraphoptError
from graphopt.fileio import atomic_write
from graphopt.interp import interpret
from graphopt.ir import Graph, TensorType, save, verify
from graphopt.ir.value import Value
from graphopt.pipeline import Timing, run_pipeline


class _Builder:
    """Adds torch-like layers with state-dict parameter names and module-path locs."""

    def __init__(self, graph: Graph, seed: int = 0) -> None:
        self.g = graph
        self.rng = np.random.default_rng(seed)

    def param(self, name: str, shape: tuple[int, ...], scale: float = 0.3, offset: float = 0.0) -> Value:
        data = offset + scale * self.rng.standard_normal(shape)
        return self.g.add_parameter(data.astype(np.float32), name)

    def conv_bn(self, x: Value, path: str, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> Value:
        cin = x.shape[1]
        assert isinstance(cin, int)
        w = self.param(f"{path}.0.weight", (cout, cin // groups, k, k), scale=(2 / (cin * k * k)) ** 0.5)
        y = self.g.create("conv2d", [x, w], {"stride": (stride, stride), "padding": (k // 2, k // 2),
                                              "groups": groups}, loc=f"{path}.0").result
        bn = [self.param(f"{path}.1.running_mean", (cout,), 0.1),
              self.g.add_parameter(self.rng.uniform(0.5, 1.5, cout).astype(np.float32), f"{path}.1.running_var"),
              self.param(f"{path}.1.weight", (cout,), 0.1, 1.0), self.param(f"{path}.1.bias", (cout,), 0.1)]
        return self.g.create("batch_norm", [y, *bn], loc=f"{path}.1").result

    def act(self, x: Value, op: str, path: str) -> Value:
        return self.g.create(op, [x], loc=path).result


def build_demo_model() -> Graph:
    """A MobileNet-style classifier: stem, an inverted-residual block, a concat branch, a head, and an
    auxiliary head left over from training that no output reads (dead code)."""
    g = Graph("tiny_cnn")
    b = _Builder(g)
    x = g.add_input(TensorType("float32", ["N", 3, 32, 32]), "image")
    h = b.act(b.conv_bn(x, "stem", 16, stride=2), "relu", "stem.2")
    e = b.act(b.conv_bn(h, "block.expand", 32, k=1), "relu6", "block.expand.2")
    d = b.act(b.conv_bn(e, "block.dw", 32, groups=32), "relu6", "block.dw.2")
    p = b.conv_bn(d, "block.project", 16, k=1)
    h = g.create("add", [h, p], loc="block.add").result
    side = b.act(b.conv_bn(h, "branch", 8, k=3), "silu", "branch.2")
    h = g.create("cat", [h, side], {"dim": 1}, loc="cat").result
    pooled = g.create("adaptive_avg_pool2d", [h], {"output_size": (1, 1)}, loc="pool").result
    flat = g.create("flatten", [pooled], {"start_dim": 1}, loc="flatten").result
    logits = g.create("linear", [flat, b.param("fc.weight", (10, 24)), b.param("fc.bias", (10,))], loc="fc").result
    aux = g.create("linear", [flat, b.param("aux_fc.weight", (10, 24)), b.param("aux_fc.bias", (10,))],
                   loc="aux_fc").result
    g.create("softmax", [aux], {"dim": 1}, loc="aux_softmax")
    g.outputs = [g.create("softmax", [logits], {"dim": 1}, loc="softmax").result]
    return g


def run_demo(out: Path, pipeline: str = "dce", stream: IO[str] | None = None) -> Path:
    """Build, print, verify, optimize, interpret and compare; writes the graphs and a report."""
    stream = stream or sys.stdout
    graph = build_demo_model()
    verify(graph)
    print(f"== input graph ==\n{graph}", file=stream)
    before = graph_cost(graph)
    print(f"summary: {before.summary()}\n", file=stream)

    result = run_pipeline(graph, pipeline, instruments=[Timing(stream)])
    after = graph_cost(result.graph)
    print(f"\n== after {pipeline} ==\n{result.graph}", file=stream)

    images = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    (ref,), (opt,) = interpret(graph, images), interpret(result.graph, images)
    error = float(np.abs(ref - opt).max())
    same_top1 = float((ref.argmax(1) == opt.argmax(1)).mean())

    save(graph, out / "model.gir")
    save(result.graph, out / "model.opt.gir")
    report = "\n".join([
        f"# graphopt demo: {graph.name}, pipeline `{pipeline}`", "",
        "| | nodes | parameters | MACs / sample |", "|---|---:|---:|---:|",
        f"| before | {len(graph)} | {before.params:,} | {before.macs:,} |",
        f"| after | {len(result.graph)} | {after.params:,} | {after.macs:,} |", "",
        "## Passes", "", "```", result.report(), "```", "",
        f"Interpreter check on a batch of {len(images)}: max abs difference {error:.3g}, "
        f"top-1 agreement {same_top1:.0%}.", "",
    ])
    path = atomic_write(out / "report.md", lambda f: f.write(report.encode()))
    print(f"\n{report}\nwrote {out / 'model.gir'}, {out / 'model.opt.gir'}, {path}", file=stream)
    if error > 1e-5:
        raise GraphoptError(f"the pipeline changed the model's outputs (max abs difference {error})")
    return path
