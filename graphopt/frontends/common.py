"""IR building blocks both frontends lower to."""

from __future__ import annotations

import numpy as np

from graphopt.errors import ShapeError
from graphopt.ir import symbolic as sym
from graphopt.ir.graph import Graph
from graphopt.ir.symbolic import Dim
from graphopt.ir.types import DType
from graphopt.ir.value import Value


def arange_to(graph: Graph, start: float, end: Dim, step: float, dtype: DType, loc: str) -> Value:
    """`start, start + step, ...` below a symbolic `end`: the IR's arange has a static length, so
    this is a cumulative sum of `step`s, ceildiv(end - start, step) of them (integer bounds)."""
    if start != int(start) or step != int(step) or step <= 0:
        raise ShapeError(f"a range up to the symbolic size {end} needs integer start and a positive integer "
                             f"step, got {start} and {step}")
    count = sym.ceildiv(sym.sub(end, int(start)), int(step))
    steps = graph.create("full", [], {"shape": [count], "value": float(step), "dtype": dtype}, loc=loc).result
    total = graph.create("cumsum", [steps], {"dim": 0}, loc=loc).result
    offset = graph.add_parameter(np.asarray(int(start) - int(step), dtype.numpy), f"{loc or 'range'}_offset")
    return graph.create("add", [total, offset], loc=loc).result
