"""The quantization report: what became int8, what stayed float and why, size before and after,
the output error on the calibration samples, ONNX Runtime's fusion check, and a plot of every
layer's sensitivity against the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphopt.analysis import graph_cost
from graphopt.fileio import atomic_write
from graphopt.ir.graph import Graph


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} dB"


def write_report(path: Path, *, model: str, weight_bytes: int, after: Graph, summary: Any, samples: int,
                 fusion: Any = None) -> Path:
    """Write `path` (markdown) and, when sensitivity was measured, a PNG plot next to it.
    `weight_bytes` is the parameter size before the pipeline ran."""
    size_before, size_after = weight_bytes, graph_cost(after).param_bytes
    lines = [f"# Quantization report: {model}", "",
             f"- pipeline pass: `{summary.spec}`; calibration samples: {samples}",
             f"- weights: {size_before / 1e6:.2f} MB -> {size_after / 1e6:.2f} MB "
             f"({size_before / max(size_after, 1):.2f}x smaller)",
             f"- layers in int8: {len(summary.int8)}; kept in float: {len(summary.float)}; "
             f"inputs smoothed (layer-norm outlier channels moved into the weights): {len(summary.smoothed)}",
             f"- output SQNR on the calibration samples (worst sample): all layers int8 "
             f"{_db(summary.sqnr_all_int8)}, final {_db(summary.sqnr)} (budget {summary.budget_db:g} dB)"]
    if fusion is not None:
        lines += ["", "## ONNX Runtime fusion check", "", fusion.markdown()]
    if summary.float:
        lines += ["", "## Layers kept in float", "", "| layer | reason |", "|---|---|"]
        lines += [f"| `{name}` | {why} |" for name, why in summary.float.items()]
    if summary.sensitivity:
        plot = path.with_suffix(".png")
        _plot(plot, summary)
        ranked = sorted(summary.sensitivity, key=lambda s: s.sqnr_db)
        lines += ["", "## Sensitivity (output SQNR with only this layer in int8; lower is more sensitive)", "",
                  f"![sensitivity]({plot.name})", "", "| layer | op | SQNR dB | kept |", "|---|---|---:|---|"]
        lines += [f"| `{s.layer}` | {s.op} | {s.sqnr_db:.1f} | {'float' if s.layer in summary.float else 'int8'} |"
                  for s in ranked]
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def _plot(path: Path, summary: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = summary.sensitivity
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(scores)), 4.0))
    colors = ["tab:orange" if s.layer in summary.float else "tab:blue" for s in scores]
    ax.bar(range(len(scores)), [min(s.sqnr_db, 80.0) for s in scores], color=colors)
    ax.axhline(summary.budget_db, color="tab:red", linestyle="--", label=f"budget {summary.budget_db:g} dB")
    ax.set_xticks(range(len(scores)), [s.layer for s in scores], rotation=90, fontsize=6)
    ax.set_ylabel("output SQNR, only this layer int8 (dB)")
    ax.set_title("Layer sensitivity (orange: kept in float)")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
