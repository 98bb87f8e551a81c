"""Shared by the benchmark scripts: put a results table into its marked section of the README."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).parent / "README.md"


def write_section(marker: str, text: str) -> None:
    """Replace what stands between <!-- marker:start --> and <!-- marker:end --> in benchmarks/README.md."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, found, rest = README.read_text().partition(start)
    if not found:
        raise ValueError(f"benchmarks/README.md has no {start} marker")
    _, _, tail = rest.partition(end)
    README.write_text(f"{head}{start}\n{text}\n{end}{tail}")
