"""Atomic file output: write to a temporary file beside the target, then rename over it, so a crash
never leaves a half-written model and readers never see a partial file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from graphopt.errors import FileError, GraphoptError


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write` with a binary file object; the result replaces `path` only if it succeeds."""
    target = check_writable(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise FileError(f"cannot write {target}: {e.strerror or e}; choose a writable folder") from None
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp's 0600 would make every output private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, GraphoptError):
            raise FileError(f"cannot write {target}: {e.strerror or e}") from None
        raise
    return target


def _new_file_mode() -> int:
    """The mode open() would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_writable(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path, or a FileError saying why it cannot be written (a folder, a path under a
    file, a folder without write permission)."""
    target = Path(path)
    if target.is_dir():
        raise FileError(f"cannot write {target}: it is a folder; give a file path")
    existing = next(a for a in target.absolute().parents if a.exists())
    if not existing.is_dir():
        raise FileError(f"cannot write {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise FileError(f"cannot write {target}: the folder {existing} is not writable")
    return target
