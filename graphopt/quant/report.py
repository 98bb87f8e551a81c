"""The quantization report: what became int8, what stayed float and why, size before and after,
the output error on the calibration samples, ONNX Runtime's fusion check, and a plot of every
layer's own rounding error (weight and input SQNR) and, when measured, its sensitivity against
the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from graphopt.analysis import graph_cost
from graphopt.fileio import atomic_write
from graphopt.ir.graph import Graph


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} dB"


def quantize_section(path: Path, *, weight_bytes: int, after: Graph, summary: Any, samples: int,
                     fusion: Any = None) -> list[str]:
    """The markdown lines of the quantization section of report `path`; its plot is written next to
    it. `weight_bytes` is the parameter size before the pipeline ran."""
    size_before, size_after = weight_bytes, graph_cost(after).param_bytes
    chooser = "widths chosen by the size budget" if summary.size_mb is not None else f"budget {summary.budget_db:g} dB"
    lines = ["## Quantization", "",
             f"- pipeline pass: `{summary.spec}`; calibration samples: {samples}",
             f"- target: {summary.target}",
             *([f"- bias correction: {len(summary.bias_shifts)} layers, largest mean shift removed "
                f"{max(s.shift for s in summary.bias_shifts):.2%} of a layer's output RMS"] if summary.bias_shifts else []),
             f"- weights: {size_before / 1e6:.2f} MB -> {size_after / 1e6:.2f} MB "
             f"({size_before / max(size_after, 1):.2f}x smaller)",
             f"- layers quantized: {len(summary.int8)}; kept in float: {len(summary.float)}; "
             f"lookup tables quantized (rows gathered, then scaled): {len(summary.tables)}; "
             f"inputs smoothed (layer-norm outlier channels moved into the weights): {len(summary.smoothed)}",
             f"- output SQNR on the calibration samples (worst sample): all layers int8 "
             f"{_db(summary.sqnr_all_int8)}, final {_db(summary.sqnr)} ({chooser})"]
    if summary.size_mb is not None:
        counts = {b: sum(1 for v in summary.bits.values() if v == b) for b in sorted(set(summary.bits.values()))}
        widths = ", ".join(f"{n} at {b} bits" for b, n in counts.items())
        lines.append(f"- size budget: parameters {summary.size_mb:.2f} MB at the chosen widths ({widths}, "
                     f"{len(summary.float)} float); output SQNR {_db(summary.sqnr)} (plotted against size below)")
    if fusion is not None:
        lines += ["", "### ONNX Runtime fusion check", "", fusion.markdown()]
    if summary.float:
        lines += ["", "### Layers kept in float", "", "| layer | reason |", "|---|---|"]
        lines += [f"| `{name}` | {why} |" for name, why in summary.float.items()]
    if summary.errors or summary.sensitivity or summary.frontier:
        plot = path.with_suffix(".png")
        _plot(plot, summary)
        lines += ["", f"![per-layer error]({plot.name})"]
    if summary.errors:
        lines += ["", "### Each int8 layer's own rounding error (no model runs; lower dB is coarser)", "",
                  "| layer | op | weight SQNR dB | input SQNR dB (expected, calibration histogram) |",
                  "|---|---|---:|---:|"]
        lines += [f"| `{e.layer}` | {e.op} | {e.weight_db:.1f} | {_db(e.input_db).removesuffix(' dB')} |"
                  for e in summary.errors]
    if summary.sensitivity:
        ranked = sorted(summary.sensitivity, key=lambda s: s.sqnr_db)
        lines += ["", "### Sensitivity (output SQNR with only this layer in int8; lower is more sensitive)", "",
                  "| layer | op | SQNR dB | kept |", "|---|---|---:|---|"]
        lines += [f"| `{s.layer}` | {s.op} | {s.sqnr_db:.1f} | {'float' if s.layer in summary.float else 'int8'} |"
                  for s in ranked]
    return lines


def _plot(path: Path, summary: Any) -> None:
    """One panel of each int8 layer's weight and input SQNR; a second of the measured sensitivity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (summary.errors, summary.sensitivity, summary.frontier) if p]
    width = max(6.0, 0.22 * max(len(p) for p in panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 4.0 * len(panels)), squeeze=False)
    if summary.frontier:
        ax = axes[-1][0]
        sizes, db = zip(*summary.frontier)
        ax.plot(sizes, db, "o-", label="measured along the search")
        ax.plot(sizes[-1:], db[-1:], "*", color="tab:red", markersize=14, label="chosen")
        ax.set_xlabel("parameters (MB)")
        ax.set_ylabel("output SQNR, worst calibration sample (dB)")
        ax.set_title("Size against output SQNR (per-layer widths 4 / 8 bits / float)")
        ax.legend()
    if summary.errors:
        ax, x = axes[0][0], np.arange(len(summary.errors))
        ax.bar(x - 0.2, [min(e.weight_db, 80.0) for e in summary.errors], 0.4, label="weight")
        inputs = [e.input_db for e in summary.errors]
        if any(v is not None for v in inputs):
            ax.bar(x + 0.2, [min(v, 80.0) if v is not None else 0.0 for v in inputs], 0.4, label="input")
        ax.set_xticks(x, [e.layer for e in summary.errors], rotation=90, fontsize=6)
        ax.set_ylabel("SQNR (dB)")
        ax.set_title("Each int8 layer's own rounding error (lower is coarser)")
        ax.legend(loc="lower right")
    if summary.sensitivity:
        scores = summary.sensitivity
        ax = axes[1 if summary.errors else 0][0]
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
