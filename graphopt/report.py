"""The report a pipeline run writes: one markdown file with a section for each pass that reports
(prune, quantize), each with its plot beside the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphopt.fileio import atomic_write


def write_report(path: Path, model: str, sections: list[list[str]]) -> Path:
    lines = [f"# graphopt report: {model}"]
    for section in sections:
        lines += ["", *section]
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def prune_plot_path(report: Path) -> Path:
    return report.with_name(report.stem + ".prune.png")


def prune_section(path: Path, summary: Any) -> list[str]:
    """Markdown for a PruneSummary: the cost before and after, every group (pruned or left alone,
    and why), and a plot of channels before and after per pruned group."""
    pruned = [g for g in summary.groups if not g.left_alone]
    alone = [g for g in summary.groups if g.left_alone]
    lines = ["## Structural pruning", "",
             f"- pipeline pass: `{summary.spec}`",
             f"- MACs: {summary.macs_before:,} -> {summary.macs_after:,} "
             f"({summary.macs_after / max(summary.macs_before, 1):.1%} kept)",
             f"- parameters: {summary.params_before:,} -> {summary.params_after:,} "
             f"({summary.params_after / max(summary.params_before, 1):.1%} kept)",
             f"- groups pruned: {sum(g.channels_after < g.channels_before for g in pruned)} of {len(pruned)} "
             f"candidates; left alone: {len(alone)}"]
    if pruned:
        _plot(prune_plot_path(path), pruned)
        lines += ["", f"![channels per group]({prune_plot_path(path).name})", "",
                  "| group (the layers producing its channels) | channels before | after | units | mean importance |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| `{g.name}` | {g.channels_before} | {g.channels_after} | {g.units} | "
                  f"{g.importance:.4g} |" for g in pruned]
    if alone:
        lines += ["", "### Left alone", "", "| group | channels | why |", "|---|---:|---|"]
        lines += [f"| `{g.name}` | {g.channels_before} | {g.left_alone} |" for g in alone]
    return lines


def _plot(path: Path, groups: list[Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(groups)), 4.0))
    x = range(len(groups))
    ax.bar(x, [g.channels_before for g in groups], color="lightgray", label="before")
    ax.bar(x, [g.channels_after for g in groups], color="tab:blue", label="after")
    ax.set_xticks(list(x), [g.name.split(",")[0] for g in groups], rotation=90, fontsize=6)
    ax.set_ylabel("channels (rows of the producing weights)")
    ax.set_title("Channels per group before and after pruning")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
