"""A dependency-free progress line for long work (calibration, sensitivity, benchmarks), written to
stderr only when it is a terminal or GRAPHOPT_PROGRESS=1, so logs and tests stay clean."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    flag = os.environ.get("GRAPHOPT_PROGRESS")
    return flag == "1" if flag is not None else sys.stderr.isatty()


def progress(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    """Yield `items`, redrawing `label  done/total  elapsed  eta` after each one."""
    if not enabled() or total <= 0:
        yield from items
        return
    start = time.perf_counter()
    for done, item in enumerate(items, 1):
        yield item
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done)
        bar = "#" * (20 * done // total)
        sys.stderr.write(f"\r{label:<24} [{bar:<20}] {done}/{total}  {elapsed:6.1f}s  eta {eta:5.1f}s")
        sys.stderr.flush()
    sys.stderr.write("\n")
