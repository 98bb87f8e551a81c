"""Saving and loading graphs as text (`.gir`) plus a side `.npz` for large parameters."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from graphopt.errors import ParseError
from graphopt.fileio import atomic_write
from graphopt.ir.graph import Graph
from graphopt.ir.parser import parse
from graphopt.ir.printer import external_parameters, print_graph


def weights_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".npz")


def save(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write `path` (text IR) and, when parameters are too large to inline, `path` with .npz."""
    external = {key: p.data for key, p in external_parameters(graph) if p.data is not None}
    if external:
        atomic_write(weights_path(path), lambda f: np.savez(f, **external))
    return atomic_write(path, lambda f: f.write(print_graph(graph).encode()))


def load(path: str | os.PathLike[str]) -> Graph:
    """Read a graph saved by `save` (its weights from the side .npz when present)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ParseError(f"cannot read {path}: {e}") from None
    npz = weights_path(path)
    if not npz.exists():
        return parse(text)
    with np.load(npz, allow_pickle=False) as archive:
        return parse(text, weights={k: archive[k] for k in archive.files})
