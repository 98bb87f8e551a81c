"""Shared by the benchmark scripts: the CPU a table comes from, a target's verdict, and putting a
results table into its marked section of the README."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).parent / "README.md"


def cpu_kind() -> str:
    """The CPU's int8 instruction set and the cores torch uses: every table says which produced it."""
    import torch

    from graphopt.analysis.latency import ISA_NAMES
    from graphopt.analysis.latency import cpu_kind as isa

    return f"{ISA_NAMES.get(isa(), isa())}, {torch.get_num_threads()} cores seen by torch"


def verdict(target: str, met: bool, measured: str) -> str:
    return f"- {target}: {'met' if met else 'MISSED'} ({measured})"


def write_section(marker: str, text: str) -> None:
    """Replace what stands between <!-- marker:start --> and <!-- marker:end --> in benchmarks/README.md."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, found, rest = README.read_text().partition(start)
    if not found:
        raise ValueError(f"benchmarks/README.md has no {start} marker")
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{start}\n{text}\n{end}{tail}")
