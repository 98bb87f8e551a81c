"""Progress bars for long work (calibration, scoring, training, benchmarks), drawn by tqdm on stderr
only when it is a terminal or GRAPHOPT_PROGRESS=1, so logs and tests stay clean."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def enabled() -> bool:
    flag = os.environ.get("GRAPHOPT_PROGRESS")
    return flag == "1" if flag is not None else sys.stderr.isatty()


def bar(total: int, label: str, hidden: bool = False) -> tqdm:
    """A bar to advance by hand (`update`, `set_postfix(loss=...)` for a live loss); `hidden` for
    the processes other than rank 0."""
    return tqdm(total=total, desc=label, disable=hidden or not enabled(), file=sys.stderr, dynamic_ncols=True)


def progress(items: Iterable[T], total: int, label: str, hidden: bool = False) -> Iterator[T]:
    """Yield `items` with a bar of `total` steps."""
    with bar(total, label, hidden) as shown:
        for item in items:
            yield item
            shown.update()
