"""Pass-manager overhead and dead-code elimination on synthetic graphs of 1k, 10k and 100k nodes,
side by side with the peers' equivalents run in the same process: torch.fx's
Graph.eliminate_dead_code and onnx-graphsurgeon's Graph.cleanup, on graphs of the same structure.

    python benchmarks/bench_pass_manager.py [--sizes 1000 10000 100000] [--repeats 5]

Writes benchmarks/results/pass_manager.md and .png, and the table into benchmarks/README.md."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from report import write_section

import graphopt as go
from graphopt.pipeline import PassManager

HERE = Path(__file__).parent
BLOCK = 4  # nodes per block: add, relu (live), neg, sigmoid (a dead chain of two)


def build_graphopt(nodes: int) -> go.Graph:
    g = go.Graph()
    v = g.add_input(go.TensorType("float32", [1, 8]), "x")
    for _ in range(nodes // BLOCK):
        a = g.create("add", [v, v]).result
        v = g.create("relu", [a]).result
        g.create("sigmoid", [g.create("neg", [v]).result])
    g.outputs = [v]
    return g


def build_fx(nodes: int):
    import torch
    import torch.fx

    g = torch.fx.Graph()
    v = g.placeholder("x")
    for _ in range(nodes // BLOCK):
        a = g.call_function(torch.add, (v, v))
        v = g.call_function(torch.relu, (a,))
        g.call_function(torch.sigmoid, (g.call_function(torch.neg, (v,)),))
    g.output(v)
    return g


def build_gs(nodes: int):
    import onnx_graphsurgeon as gs

    x = gs.Variable("x", dtype=np.float32, shape=(1, 8))
    v, all_nodes = x, []
    for i in range(nodes // BLOCK):
        a, r, n, s = (gs.Variable(f"{k}{i}", dtype=np.float32, shape=(1, 8)) for k in "arns")
        all_nodes += [gs.Node("Add", inputs=[v, v], outputs=[a]), gs.Node("Relu", inputs=[a], outputs=[r]),
                      gs.Node("Neg", inputs=[r], outputs=[n]), gs.Node("Sigmoid", inputs=[n], outputs=[s])]
        v = r
    return gs.Graph(nodes=all_nodes, inputs=[x], outputs=[v])


def timed(build: Callable[[], object], run: Callable[[object], object], repeats: int) -> float:
    """Median seconds of `run` over fresh graphs (each run mutates its graph)."""
    times = []
    for _ in range(repeats):
        graph = build()
        start = time.perf_counter()
        run(graph)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(nodes: int, repeats: int) -> dict[str, float]:
    def dce_alone(g: go.Graph) -> None:
        PassManager("dce", verify=False).run(g)

    def pipeline(g: go.Graph) -> None:
        go.run_pipeline(g, "dce", in_place=True)

    row = {
        "nodes": nodes,
        "graphopt dce": timed(lambda: build_graphopt(nodes), dce_alone, repeats),
        "graphopt pipeline (verify)": timed(lambda: build_graphopt(nodes), pipeline, repeats),
        "graphopt verify": timed(lambda: build_graphopt(nodes), go.verify, repeats),
        "graphopt clone": timed(lambda: build_graphopt(nodes), lambda g: g.clone(), repeats),
        "torch.fx eliminate_dead_code": timed(lambda: build_fx(nodes), lambda g: g.eliminate_dead_code(), repeats),
        "onnx-graphsurgeon cleanup": timed(lambda: build_gs(nodes), lambda g: g.cleanup(), repeats),
    }
    check = build_graphopt(nodes)
    go.run_pipeline(check, "dce", in_place=True)
    assert len(check) == nodes // 2, "dce must remove exactly the dead half"
    return row


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| nodes | graphopt dce ms | µs / node | pipeline incl. verify ms | verify ms | clone ms "
        "| torch.fx DCE ms | graphsurgeon cleanup ms | fx / graphopt | gs / graphopt |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dce = r["graphopt dce"]
        lines.append(
            f"| {r['nodes']:,} | {dce * 1e3:.1f} | {dce / r['nodes'] * 1e6:.2f} "
            f"| {r['graphopt pipeline (verify)'] * 1e3:.1f} | {r['graphopt verify'] * 1e3:.1f} "
            f"| {r['graphopt clone'] * 1e3:.1f} | {r['torch.fx eliminate_dead_code'] * 1e3:.1f} "
            f"| {r['onnx-graphsurgeon cleanup'] * 1e3:.1f} | {r['torch.fx eliminate_dead_code'] / dce:.2f}x "
            f"| {r['onnx-graphsurgeon cleanup'] / dce:.2f}x |")
    return "\n".join(lines)


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["nodes"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key in ("graphopt dce", "graphopt pipeline (verify)", "torch.fx eliminate_dead_code",
                "onnx-graphsurgeon cleanup"):
        ax.loglog(sizes, [r[key] * 1e3 for r in rows], marker="o", label=key)
    ax.loglog(sizes, [rows[0]["graphopt dce"] * 1e3 * n / sizes[0] for n in sizes], "k:", label="linear")
    ax.set_xlabel("nodes in graph")
    ax.set_ylabel("time (ms, median)")
    ax.set_title("Dead-code elimination: time vs graph size")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        print(f"measuring {n:,} nodes ...", file=sys.stderr, flush=True)
        rows.append(measure(n, args.repeats))
    text = table(rows)
    print(text)
    if args.sizes == [1000, 10000, 100000]:  # only the full run replaces the published table
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        (results / "pass_manager.md").write_text(text + "\n")
        plot(rows, results / "pass_manager.png")
        write_section("pass_manager", text)


if __name__ == "__main__":
    main()
