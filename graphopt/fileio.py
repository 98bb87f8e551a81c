"""Atomic file output: write to a temporary file beside the target, then rename over it, so a crash
never leaves a half-written model and readers never see a partial file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from graphopt.errors import GraphoptError


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write` with a binary file object; the result replaces `path` only if it succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp's 0600 would make every output private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _new_file_mode() -> int:
    """The mode open() would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def refuse_overwrite(output: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> None:
    """Raise when `output` would overwrite one of the user's input files."""
    out = Path(output).resolve()
    for item in inputs:
        if Path(item).exists() and Path(item).resolve() == out:
            raise GraphoptError(f"output {output} is the input file; choose another output path")
