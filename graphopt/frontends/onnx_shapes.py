"""Shape arithmetic on symbolic dims, as ONNX exporters write it: `Shape(x)` of a tensor with a
symbolic dim is a vector of dims (a numpy object array of ints, names and Exprs), and the integer
ops exporters chain after it (Gather, Slice, Concat, Unsqueeze, Add, Mul, Div, Equal, Where, ...)
compute on such vectors at import time, so a Reshape or Expand whose target depends on the input
size gets a symbolic target instead of being refused."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphopt.errors import UnsupportedError
from graphopt.ir import symbolic as sym
from graphopt.ir.symbolic import Dim

_ELEMENTWISE: dict[str, Callable[..., Dim]] = {
    "Add": sym.add, "Sub": sym.sub, "Mul": sym.mul, "Div": sym.floordiv, "Mod": sym.mod,
    "Max": sym.maximum, "Min": sym.minimum}
SHAPE_OPS = {*_ELEMENTWISE, "Equal", "Where", "Identity", "Cast", "Gather", "Concat", "Unsqueeze", "Squeeze",
             "Slice", "ReduceProd"}  # evaluated here when a constant input is symbolic
INTEGER_TYPES = {6, 7, 12, 13}  # int32, int64, uint32, uint64: the Cast targets a shape may take


def is_symbolic(array: np.ndarray) -> bool:
    return array.dtype == object


def dims_array(dims: list[Dim] | tuple[Dim, ...]) -> np.ndarray:
    out = np.empty(len(dims), dtype=object)
    out[:] = list(dims)
    return out


def _equal(a: Dim, b: Dim) -> bool:
    if a == b:
        return True
    difference = sym.sub(a, b)
    if isinstance(difference, int):
        return False
    if (isinstance(a, int) and a < 1) or (isinstance(b, int) and b < 1):
        return False  # a size is at least 1: never equal to 0 or -1 (the reshape placeholders)
    raise UnsupportedError(f"comparing the symbolic size {a} with {b} is decided only at run time; pin the "
                           "dims it depends on (input_shapes=...)")


def fold(op: str, inputs: list[np.ndarray | None], attrs: dict, where: str) -> list[np.ndarray]:
    """The outputs of an integer ONNX node whose inputs are constant, some of them symbolic; an
    optional input left empty is None in its place."""
    if op in _ELEMENTWISE:
        out = inputs[0]
        for other in inputs[1:]:
            out = np.frompyfunc(_ELEMENTWISE[op], 2, 1)(out, other)
        return [np.asarray(out, dtype=object)]
    if op == "Equal":
        return [np.asarray(np.frompyfunc(_equal, 2, 1)(*inputs), dtype=bool)]
    if op == "Where":
        return [np.asarray(np.where(inputs[0].astype(bool), inputs[1], inputs[2]), dtype=object)]
    if op in ("Identity", "Cast"):
        if op == "Cast" and attrs.get("to") not in INTEGER_TYPES:
            raise UnsupportedError(f"{where}: a Cast of the symbolic sizes {list(inputs[0])} to a non-integer type "
                                   "is computed at run time; pin the dims (input_shapes=...)")
        return [inputs[0]]
    if op == "Gather":
        return [np.take(inputs[0], inputs[1].astype(np.int64), axis=attrs.get("axis", 0))]
    if op == "Concat":
        return [np.concatenate([a.astype(object) for a in inputs], axis=attrs.get("axis", 0))]
    if op in ("Unsqueeze", "Squeeze"):
        axes = attrs.get("axes", list(inputs[1]) if _given(inputs, 1) else None)
        if op == "Squeeze":
            return [np.squeeze(inputs[0], axis=tuple(int(a) for a in axes) if axes is not None else None)]
        return [np.expand_dims(inputs[0], tuple(int(a) for a in axes))]
    if op == "Slice":
        return [_slice(inputs)]
    # ReduceProd, the last of SHAPE_OPS: a vector's element count
    return [dims_array([sym.prod(inputs[0].reshape(-1))]).reshape(() if not attrs.get("keepdims", 1) else (1,))]


def _given(inputs: list[np.ndarray | None], index: int) -> bool:
    return len(inputs) > index and inputs[index] is not None


def _slice(inputs: list[np.ndarray | None]) -> np.ndarray:
    data, starts, ends = inputs[0], inputs[1], inputs[2]
    axes = inputs[3] if _given(inputs, 3) else range(len(starts))
    steps = inputs[4] if _given(inputs, 4) else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis)] = slice(int(start), int(min(end, 2**62)) if end >= 0 else int(end), int(step))
    return data[tuple(index)]

