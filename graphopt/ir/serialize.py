"""Saving and loading graphs as text (`.gir`) plus a side `.npz` for large parameters.

The two files are one unit: the weights file is named by the hash of its content
(`model.1f2e3d4c5b6a.npz`) and the .gir's first line names it, so a reader never pairs one save's
text with another save's weights, whatever runs concurrently. The weights are written first, then
the .gir replaces the old one atomically, then the weights file the old .gir named is removed."""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from graphopt.errors import FileError, expect_type
from graphopt.fileio import atomic_write
from graphopt.ir.graph import Graph
from graphopt.ir.parser import parse
from graphopt.ir.printer import external_parameters, print_graph
from graphopt.ir.value import check_finite

_HEADER = re.compile(r"# weights: (?P<name>[^\n/\\]+\.npz)\n")


def weights_path(path: str | os.PathLike[str]) -> Path:
    """The weights file a .gir names (`model.npz`, the older layout, when it names none)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            first = f.readline(4096).decode("utf-8", "replace")
    except OSError:
        first = ""
    return _named_weights(path, first)


def _named_weights(path: Path, text: str) -> Path:
    m = _HEADER.match(text)
    return path.with_name(m["name"]) if m else path.with_suffix(".npz")


def is_weights_file_of(gir: str | os.PathLike[str], candidate: str | os.PathLike[str]) -> bool:
    """True when `candidate` is a name `save(.., gir)` may give its weights (to keep inputs safe)."""
    gir, candidate = Path(gir).resolve(), Path(candidate).resolve()
    return candidate.parent == gir.parent and re.fullmatch(
        re.escape(gir.stem) + r"(\.[0-9a-f]{12})?\.npz", candidate.name) is not None


def save(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write `path` (text IR) and, when parameters are too large to inline, its weights file."""
    expect_type(graph, Graph, "save's graph")
    path = Path(path)
    external = {key: p.data for key, p in external_parameters(graph) if p.data is not None}
    old_weights = weights_path(path) if path.exists() else None
    text = print_graph(graph)
    weights = None
    if external:
        buffer = io.BytesIO()
        np.savez(buffer, **external)
        data = buffer.getvalue()
        weights = path.with_name(f"{path.stem}.{hashlib.blake2b(data, digest_size=6).hexdigest()}.npz")
        atomic_write(weights, lambda f: f.write(data))
        text = f"# weights: {weights.name}\n{text}"
    atomic_write(path, lambda f: f.write(text.encode()))
    if old_weights is not None and old_weights != weights and is_weights_file_of(path, old_weights):
        old_weights.unlink(missing_ok=True)
    return path


def load(path: str | os.PathLike[str]) -> Graph:
    """Read a graph saved by `save` (its weights from the weights file it names)."""
    path = Path(path)
    for _attempt in range(2):  # a save between reading the text and opening its weights: read again
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise FileError(f"cannot read {path}: {e}") from None
        npz = _named_weights(path, text)
        if not npz.exists():
            if _HEADER.match(text):
                continue
            return _checked(parse(text), path)
        try:
            weights = read_npz(npz, f"weights of {path}")
        except FileError:
            if not npz.exists() and _HEADER.match(text):  # removed between the check and the read
                continue
            raise
        return _checked(parse(text, weights=weights), path)
    raise FileError(f"{path} names its weights {npz.name}, which does not exist; save the graph again")


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz, or a FileError naming `what` (never unpickles anything)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        reason = "it holds Python objects, which graphopt never unpickles" if "allow_pickle" in str(e) else \
            f"{type(e).__name__}: {e}"
        raise FileError(f"cannot read {what} {path}: {reason}; write it with numpy.savez") from None


def _checked(graph: Graph, path: Path) -> Graph:
    """NaN parameters make every later number meaningless: refuse them at the door."""
    for p in graph.parameters:
        if p.data is not None:
            check_finite(p.data, f"{path}: parameter %{p.name}")
    return graph
