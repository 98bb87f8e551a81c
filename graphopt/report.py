"""The report a pipeline run writes: one markdown file with a section for each pass that reports
(prune, remove-blocks, distill, quantize), each with its plot beside the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphopt.fileio import atomic_write


def write_report(path: Path, model: str, sections: list[list[str]]) -> Path:
    lines = [f"# graphopt report: {model}"]
    for section in sections:
        lines += ["", *section]
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


PLOTS = ("prune", "blocks", "distill", "steps")  # the plots a report may have besides the quantization one


def plot_path(report: Path, kind: str) -> Path:
    return report.with_name(f"{report.stem}.{kind}.png")


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
        _plot(plot_path(path, "prune"), pruned)
        lines += ["", f"![channels per group]({plot_path(path, 'prune').name})", "",
                  "| group (the layers producing its channels) | channels before | after | units | mean importance |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| `{g.name}` | {g.channels_before} | {g.channels_after} | {g.units} | "
                  f"{g.importance:.4g} |" for g in pruned]
    if alone:
        lines += ["", "### Left alone", "", "| group | channels | why |", "|---|---:|---|"]
        lines += [f"| `{g.name}` | {g.channels_before} | {g.left_alone} |" for g in alone]
    return lines


def blocks_section(path: Path, summary: Any) -> list[str]:
    """Markdown for a BlockSummary: the cost before and after, and every unit ranked by its score
    (lowest first: the ones that change the model least), with a plot of the ranking."""
    lines = ["## Block removal", "", f"- pipeline pass: `{summary.spec}`",
             f"- MACs: {summary.macs_before:,} -> {summary.macs_after:,} "
             f"({summary.macs_after / max(summary.macs_before, 1):.1%} kept)",
             f"- parameters: {summary.params_before:,} -> {summary.params_after:,} "
             f"({summary.params_after / max(summary.params_before, 1):.1%} kept)",
             f"- removed: {len(summary.removed)} of {len(summary.units)} unit(s)"
             + (f"; {summary.note}" if summary.note else "")]
    if summary.units:
        ranked = sorted(summary.units, key=lambda u: u.score)
        _plot_scores(plot_path(path, "blocks"), ranked)
        lines += ["", f"![units ranked by score]({plot_path(path, 'blocks').name})", "",
                  "| rank | unit | kind | score | MACs | removed |", "|---:|---|---|---:|---:|---|"]
        lines += [f"| {i} | `{u.name}` | {u.kind} | {u.score:.4g} | {u.macs:,} | {'yes' if u.removed else ''} |"
                  for i, u in enumerate(ranked, 1)]
    return lines


def training_section(path: Path, summary: Any, title: str = "Distillation", name: str = "distill",
                     notes: Sequence[str] = ()) -> list[str]:
    """Markdown for a training pass's summary (distill, qat, cluster): the run, `notes`, and its loss
    per epoch with the curve (plotted beside the report as <report>.<name>.png)."""
    lines = [f"## {title}", "", f"- pipeline pass: `{summary.spec}`", *(f"- {n}" for n in notes),
             f"- {len(summary.losses)} epoch(s) on {summary.samples} sample(s), {summary.world_size} process(es), "
             f"{summary.seconds:.1f} s" + ("; stopped early on the held-out loss" if summary.stopped_early else "")]
    if not summary.losses:
        return lines
    fig, ax = _figure(0.0)
    epochs = range(1, len(summary.losses) + 1)
    ax.plot(epochs, summary.losses, marker="o", label="training")
    if summary.validation:
        ax.plot(epochs, summary.validation, marker="s", label="held out")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss against the teacher")
    ax.set_title("Loss per epoch")
    ax.legend()
    _save(plot_path(path, name), fig)
    lines += ["", f"![loss per epoch]({plot_path(path, name).name})", "", "| epoch | training loss | held-out |",
              "|---:|---:|---:|"]
    lines += [f"| {i} | {loss:.4g} | {summary.validation[i - 1]:.4g} |" if summary.validation else
              f"| {i} | {loss:.4g} | |" for i, loss in enumerate(summary.losses, 1)]
    return lines


def steps_section(path: Path, rows: list[Any], samples: str) -> list[str]:
    """Markdown for StepCosts rows: what each step cost and bought, as a table and a plot."""
    def cell(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    base = rows[0]
    lines = ["## What each step cost and bought", "",
             f"Latency: ONNX Runtime CPU, median of 15 runs on the first sample; cosine: the outputs against the "
             f"input model's, item by item (each text or image of a batch), on {samples}.", "",
             "| step | MACs | parameters | ONNX MB | latency ms | speed-up | cosine mean | cosine min |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speed = f"{base.latency_ms / r.latency_ms:.2f}x" if r.latency_ms and base.latency_ms else "-"
        lines.append(f"| `{r.step}` | {r.macs:,} | {r.params:,} | {cell(r.onnx_bytes and r.onnx_bytes / 1e6, '.2f')} | "
                     f"{cell(r.latency_ms, '.2f')} | {speed} | {cell(r.cosine_mean, '.4f')} | "
                     f"{cell(r.cosine_min, '.4f')} |" + (f" {r.note}" if r.note else ""))
    fig, left = _figure(0.6 * len(rows))
    x = list(range(len(rows)))
    left.bar(x, [r.latency_ms or 0.0 for r in rows], color="tab:blue")
    left.set_ylabel("latency ms (bars)")
    right = left.twinx()
    right.plot(x, [r.cosine_mean if r.cosine_mean is not None else float("nan") for r in rows], color="tab:red",
               marker="o")
    right.set_ylabel("output cosine to the input model (line)")
    left.set_xticks(x, [r.step.split("{")[0] for r in rows], rotation=45, fontsize=7)
    left.set_title("Latency and output cosine after each step")
    _save(plot_path(path, "steps"), fig)
    return [*lines, "", f"![latency and cosine per step]({plot_path(path, 'steps').name})"]


def recipe_section(recipe: Any, versions: dict[str, str]) -> list[str]:
    """The exact recipe, the pipeline it resolved to, the seeds and the package versions: enough to
    run it again."""
    lines = ["## Recipe", "", f"From `{recipe.path}`:", "", "```toml", recipe.text.rstrip(), "```", "",
             f"- resolved pipeline: `{recipe.pipeline}`"]
    lines += [f"- seed of `{spec}`: {seed}" for spec, seed in recipe.seeds.items()]
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def _figure(width: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(max(6.0, width), 4.0))


def _save(path: Path, fig: Any) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def _plot_scores(path: Path, ranked: list[Any]) -> None:
    fig, ax = _figure(0.3 * len(ranked))
    x = range(len(ranked))
    finite = [u.score if u.score == u.score and abs(u.score) != float("inf") else 0.0 for u in ranked]
    ax.bar(x, finite, color=["tab:red" if u.removed else "tab:blue" for u in ranked])
    ax.set_xticks(list(x), [u.name for u in ranked], rotation=90, fontsize=6)
    ax.set_ylabel("score (lower changes the model less)")
    ax.set_title("Removable units ranked by score (red: removed)")
    _save(path, fig)


def _plot(path: Path, groups: list[Any]) -> None:
    fig, ax = _figure(0.25 * len(groups))
    x = range(len(groups))
    ax.bar(x, [g.channels_before for g in groups], color="lightgray", label="before")
    ax.bar(x, [g.channels_after for g in groups], color="tab:blue", label="after")
    ax.set_xticks(list(x), [g.name.split(",")[0] for g in groups], rotation=90, fontsize=6)
    ax.set_ylabel("channels (rows of the producing weights)")
    ax.set_title("Channels per group before and after pruning")
    ax.legend()
    _save(path, fig)
