"""Layout ops: reshaping, axis permutation, concatenation and splitting, slicing and indexing,
padding, and the no-op copies (identity, clone, contiguous, dropout in inference)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.errors import ShapeError
from graphopt.ir import symbolic as sym
from graphopt.ir.types import Dim, DType, Shape, TensorType, broadcast_shapes, fmt_shape
from graphopt.ops.common import (
    attr_dim,
    attr_dims,
    attr_float,
    attr_int,
    attr_ints,
    attr_str,
    axis,
    define,
    is_feature_map,
    same_dtype,
    sample_on,
    static,
)
from graphopt.ops.registry import ChannelRule, Sampler


def _same(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    return types[0]


def _identity(x: np.ndarray, **_: Any) -> np.ndarray:
    return x


for _name in ("identity", "clone", "contiguous"):
    define(_name, _same, _identity, channel=ChannelRule.ELEMENTWISE, sample=sample_on(lambda v: True))
define("dropout", _same, _identity, attrs={"p": attr_float(0.5)}, channel=ChannelRule.ELEMENTWISE,
       doc="Inference-mode dropout: the identity; kept so clean-up passes can report removing it.")


# --- reshape family -------------------------------------------------------------------------------
def reshape_shape(src: Shape, target: Sequence[Dim]) -> Shape:
    """The shape `target` means for a tensor of shape `src` (one -1 inferred as what the rest leaves,
    which must divide exactly, symbols included)."""
    if list(target).count(-1) > 1:
        raise ShapeError(f"reshape target {fmt_shape(target)} has more than one -1")
    total, known = sym.prod(src), sym.prod(d for d in target if d != -1)
    if -1 not in target:
        if total != known:
            raise ShapeError(f"cannot reshape {fmt_shape(src)} ({total} elements) to {fmt_shape(target)} ({known})")
        return tuple(target)
    fill = sym.floordiv(total, known) if known != 0 else None
    if fill is None or sym.mul(fill, known) != total:
        raise ShapeError(f"cannot reshape {fmt_shape(src)} to {fmt_shape(target)}: the -1 would be {total} / {known}")
    return tuple(fill if d == -1 else d for d in target)


def _reshape(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    return types[0].with_shape(reshape_shape(types[0].shape, attrs["shape"]))


def _sample_reshape(s: Sampler) -> Any:
    """Channel-axis reshapes: merge C with the spatial dims, or the spatial dims together."""
    x = s.value(is_feature_map)
    if x is None:
        return None
    n, c, h, w = x.shape
    shape = s.choice([(n, c * h * w), (n, c, h * w), (n, -1)])
    return [x], {"shape": shape}


define("reshape", _reshape, lambda x, shape: np.reshape(x, shape), attrs={"shape": attr_dims()},
       sample=_sample_reshape, channel=ChannelRule.RESHAPE)


def _flatten(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t = types[0]
    if t.rank == 0:
        return t.with_shape((1,))
    start, end = axis(attrs["start_dim"], t.rank), axis(attrs["end_dim"], t.rank)
    middle = sym.prod(t.shape[start : end + 1])
    return t.with_shape((*t.shape[:start], middle, *t.shape[end + 1 :]))


def flatten(x: np.ndarray, start_dim: int, end_dim: int) -> np.ndarray:
    if x.ndim == 0:
        return x.reshape(1)
    start, end = start_dim % x.ndim, end_dim % x.ndim
    return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :])


def _sample_flatten(s: Sampler) -> Any:
    x = s.value(is_feature_map)
    return None if x is None else ([x], {"start_dim": 1})


define("flatten", _flatten, flatten, attrs={"start_dim": attr_int(0), "end_dim": attr_int(-1)},
       sample=_sample_flatten, channel=ChannelRule.RESHAPE)


def _permute(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t = types[0]
    dims = [axis(d, t.rank) for d in attrs["dims"]]
    if sorted(dims) != list(range(t.rank)):
        raise ShapeError(f"dims {fmt_shape(attrs['dims'])} are not a permutation of {t.rank} axes")
    return t.with_shape(tuple(t.shape[d] for d in dims))


def _sample_permute(s: Sampler) -> Any:
    x = s.value(is_feature_map)
    return None if x is None else ([x], {"dims": s.choice([(0, 2, 3, 1), (0, 1, 3, 2), (1, 0, 2, 3)])})


define("permute", _permute, lambda x, dims: np.transpose(x, dims), attrs={"dims": attr_ints()},
       sample=_sample_permute, channel=ChannelRule.PERMUTE)


def _unsqueeze(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t = types[0]
    d = axis(attrs["dim"], t.rank + 1)
    return t.with_shape((*t.shape[:d], 1, *t.shape[d:]))


define("unsqueeze", _unsqueeze, lambda x, dim: np.expand_dims(x, dim % (x.ndim + 1)),
       attrs={"dim": attr_int()}, channel=ChannelRule.RESHAPE)


def squeezed_axes(t: TensorType, dims: tuple[int, ...] | None) -> tuple[int, ...]:
    if dims is None:
        return tuple(i for i, d in enumerate(t.shape) if d == 1)
    return tuple(a for a in (axis(d, t.rank) for d in dims) if t.shape[a] == 1)


def _squeeze(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t = types[0]
    drop = squeezed_axes(t, attrs["dims"])
    return t.with_shape(tuple(d for i, d in enumerate(t.shape) if i not in drop))


def squeeze(x: np.ndarray, dims: tuple[int, ...] | None) -> np.ndarray:
    return np.squeeze(x, squeezed_axes(TensorType.of_array(x), dims))


define("squeeze", _squeeze, squeeze, attrs={"dims": attr_ints(None)}, channel=ChannelRule.RESHAPE)


def expand_shape(src: Shape, target: Sequence[Dim]) -> Shape:
    if len(target) < len(src):
        raise ShapeError(f"cannot expand {fmt_shape(src)} to fewer dims {fmt_shape(target)}")
    lead = len(target) - len(src)
    out = list(target[:lead])
    for s, t in zip(src, target[lead:]):
        if t == -1 or t == s:
            out.append(s)
        elif s == 1:
            out.append(t)
        else:
            raise ShapeError(f"cannot expand {fmt_shape(src)} to {fmt_shape(target)}")
    if -1 in out[:lead]:
        raise ShapeError(f"-1 is not allowed in new leading dims of {fmt_shape(target)}")
    return tuple(out)


def expand(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(x, expand_shape(x.shape, shape)))


define("expand", lambda ts, a: ts[0].with_shape(expand_shape(ts[0].shape, a["shape"])), expand,
       attrs={"shape": attr_dims()}, channel=ChannelRule.ELEMENTWISE)


def _repeat(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t, reps = types[0], attrs["repeats"]
    if len(reps) < t.rank:
        raise ShapeError(f"repeats {fmt_shape(reps)} has fewer entries than rank {t.rank}")
    shape = (1,) * (len(reps) - t.rank) + t.shape
    return t.with_shape(tuple(sym.mul(d, r) for d, r in zip(shape, reps)))


define("repeat", _repeat, lambda x, repeats: np.tile(x, repeats), attrs={"repeats": attr_ints()})


# --- concatenate and split ---------------------------------------------------------------------------
def _cat(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    dtype = same_dtype(types)
    rank = types[0].rank
    d = axis(attrs["dim"], rank)
    for t in types:
        if t.rank != rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, types[0].shape)) if i != d):
            raise ShapeError(f"cat on dim {d} needs equal shapes elsewhere")
    size = sym.add(*(t.shape[d] for t in types))
    return TensorType(dtype, (*types[0].shape[:d], size, *types[0].shape[d + 1 :]))


def _sample_cat(s: Sampler) -> Any:
    """Concatenation on the channel axis, of a value with itself or a peer of another width."""
    x = s.value(is_feature_map)
    if x is None:
        return None
    n, _, h, w = x.shape
    y = s.value(lambda v: is_feature_map(v) and v.shape[0] == n and v.shape[2:] == (h, w)) or x
    return [x, y], {"dim": 1}


define("cat", _cat, lambda *xs, dim: np.concatenate(xs, axis=dim), attrs={"dim": attr_int(0)},
       arity=(1, None), channel=ChannelRule.CONCAT, sample=_sample_cat)


def _split(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
    t, sizes = types[0], attrs["split_sizes"]
    d = axis(attrs["dim"], t.rank)
    if sum(sizes) != static(t.shape[d], "split dim") or any(s < 0 for s in sizes):
        raise ShapeError(f"split_sizes {fmt_shape(sizes)} do not add up to dim {d} of size {t.shape[d]}")
    return [t.with_shape((*t.shape[:d], s, *t.shape[d + 1 :])) for s in sizes]


def split(x: np.ndarray, split_sizes: tuple[int, ...], dim: int) -> tuple[np.ndarray, ...]:
    return tuple(np.split(x, np.cumsum(split_sizes)[:-1], axis=dim))


def _sample_split(s: Sampler) -> Any:
    x = s.value(lambda v: is_feature_map(v) and v.shape[1] >= 2)
    if x is None:
        return None
    first = s.integer(1, x.shape[1] - 1)
    return [x], {"split_sizes": (first, x.shape[1] - first), "dim": 1}


define("split", _split, split, attrs={"split_sizes": attr_ints(), "dim": attr_int(0)},
       channel=ChannelRule.SPLIT, sample=_sample_split)


# --- slicing and indexing -----------------------------------------------------------------------------
def _slice_range(size: Dim, start: Dim | None, end: Dim | None, step: int) -> Dim:
    """The length of x[start:end:step] along a dim of `size`. A symbolic size is taken to be at
    least the static bounds counted from its end; a symbolic bound to lie within the dim (the
    interpreter checks both on every run)."""
    if step <= 0:
        raise ShapeError(f"slice step must be positive, got {step}")
    if all(isinstance(v, int | None) for v in (size, start, end)):
        return len(range(*slice(start, end, step).indices(size)))  # type: ignore[arg-type]
    first = 0 if start is None else sym.add(size, start) if isinstance(start, int) and start < 0 else start
    if end is None or (isinstance(end, int) and end >= 2**62):
        last: Dim = size
    elif isinstance(end, int):
        last = sym.add(size, end) if end < 0 else sym.minimum(end, size)
    else:
        last = end
    return sym.ceildiv(sym.sub(last, first), step)


def _slice(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t = types[0]
    d = axis(attrs["dim"], t.rank)
    n = _slice_range(t.shape[d], attrs["start"], attrs["end"], attrs["step"])
    return t.with_shape((*t.shape[:d], n, *t.shape[d + 1 :]))


def slice_(x: np.ndarray, dim: int, start: int | None, end: int | None, step: int) -> np.ndarray:
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    return x[tuple(index)]


define("slice", _slice, slice_,
       attrs={"dim": attr_int(0), "start": attr_dim(None), "end": attr_dim(None), "step": attr_int(1)},
       channel=ChannelRule.NORMALIZE)


def _select(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t = types[0]
    d = axis(attrs["dim"], t.rank)
    size = t.shape[d]
    if isinstance(size, int) and not -size <= attrs["index"] < size:
        raise ShapeError(f"index {attrs['index']} is out of range for dim {d} of size {size}")
    return t.with_shape(t.shape[:d] + t.shape[d + 1 :])


define("select", _select, lambda x, dim, index: np.take(x, index, axis=dim),
       attrs={"dim": attr_int(), "index": attr_int()}, channel=ChannelRule.REDUCE)


def _need_int_index(t: TensorType) -> None:
    if t.dtype not in (DType.int64, DType.int32):
        raise ShapeError(f"index tensors must be int64 or int32, got {t.dtype}")


def _index(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    """Advanced indexing: x[..., i0, i1, ...] with index tensors at the axes `dims`."""
    x, indices = types[0], types[1:]
    dims = [axis(d, x.rank) for d in attrs["dims"]]
    if len(dims) != len(indices) or sorted(set(dims)) != dims:
        raise ShapeError(f"dims {fmt_shape(attrs['dims'])} must list one increasing axis per index tensor")
    for t in indices:
        _need_int_index(t)
    bshape = broadcast_shapes(*(t.shape for t in indices))
    rest = [d for i, d in enumerate(x.shape) if i not in dims]
    if dims == list(range(dims[0], dims[-1] + 1)):
        return x.with_shape((*x.shape[: dims[0]], *bshape, *x.shape[dims[-1] + 1 :]))
    return x.with_shape((*bshape, *rest))


def index(x: np.ndarray, *indices: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    key: list[Any] = [slice(None)] * x.ndim
    for d, i in zip(dims, indices):
        key[d] = i
    return x[tuple(key)]


define("index", _index, index, attrs={"dims": attr_ints()}, arity=(2, None))


def _index_select(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x, idx = types
    _need_int_index(idx)
    if idx.rank != 1:
        raise ShapeError(f"index_select takes a 1-D index, got rank {idx.rank}")
    d = axis(attrs["dim"], x.rank)
    return x.with_shape((*x.shape[:d], idx.shape[0], *x.shape[d + 1 :]))


define("index_select", _index_select, lambda x, i, dim: np.take(x, i, axis=dim),
       attrs={"dim": attr_int()}, arity=(2, 2), channel=ChannelRule.NORMALIZE)


def _gather(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x, idx = types
    _need_int_index(idx)
    if idx.rank != x.rank:
        raise ShapeError(f"gather index rank {idx.rank} differs from input rank {x.rank}")
    axis(attrs["dim"], x.rank)
    return x.with_shape(idx.shape)


define("gather", _gather, lambda x, i, dim: np.take_along_axis(x, i, axis=dim),
       attrs={"dim": attr_int()}, arity=(2, 2))


# --- padding, rolling, flipping -------------------------------------------------------------------------
def _pad(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    t, pad = types[0], attrs["pad"]
    if len(pad) % 2 or len(pad) // 2 > t.rank or any(isinstance(p, int) and p < 0 for p in pad):
        raise ShapeError(f"pad {fmt_shape(pad)} must be non-negative (before, after) pairs, last dim first")
    shape = list(t.shape)
    for i in range(len(pad) // 2):
        d = t.rank - 1 - i
        shape[d] = sym.add(shape[d], pad[2 * i], pad[2 * i + 1])
    return t.with_shape(shape)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad(x: np.ndarray, pad: tuple[int, ...], mode: str, value: float) -> np.ndarray:
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=value)
    return np.pad(x, widths, mode=_PAD_MODES[mode])  # type: ignore[call-overload]


define("pad", _pad, pad,
       attrs={"pad": attr_dims(), "mode": attr_str("constant", *_PAD_MODES), "value": attr_float(0.0)},
       channel=ChannelRule.ELEMENTWISE)


def _check_axes(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    for d in attrs["dims"]:
        axis(d, types[0].rank)
    return types[0]


define("roll", _check_axes, lambda x, shifts, dims: np.roll(x, shifts, axis=dims),
       attrs={"shifts": attr_ints(), "dims": attr_ints()},
       verify=lambda ts, a: [] if len(a["shifts"]) == len(a["dims"]) else ["shifts and dims differ in length"],
       channel=ChannelRule.NORMALIZE)
define("flip", _check_axes, lambda x, dims: np.flip(x, axis=dims), attrs={"dims": attr_ints()},
       channel=ChannelRule.NORMALIZE)


# --- einsum -------------------------------------------------------------------------------------------
def _einsum(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    eq = attrs["equation"].replace(" ", "")
    if "..." in eq:
        raise ShapeError(f"einsum ellipsis is not supported ({eq!r}); spell the axes out")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(types):
        raise ShapeError(f"equation {eq!r} has {len(terms)} operands, got {len(types)}")
    sizes: dict[str, Dim] = {}
    for term, t in zip(terms, types):
        if len(term) != t.rank:
            raise ShapeError(f"term {term!r} does not match rank {t.rank}")
        for letter, d in zip(term, t.shape):
            if sizes.get(letter, d) != d and d != 1 and sizes[letter] != 1:
                raise ShapeError(f"axis {letter!r} has sizes {sizes[letter]} and {d}")
            if sizes.get(letter, 1) == 1:
                sizes[letter] = d
    if "->" not in eq:
        counts = Counter(lhs.replace(",", ""))
        rhs = "".join(sorted(c for c, n in counts.items() if n == 1))
    return TensorType(same_dtype(types), tuple(sizes[c] for c in rhs))


define("einsum", _einsum, lambda *xs, equation: np.einsum(equation, *xs, optimize=True),
       attrs={"equation": attr_str()}, arity=(1, None))


def _slice_scatter(types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    x, src = types
    same_dtype(types)
    d = axis(attrs["dim"], x.rank)
    n = _slice_range(x.shape[d], attrs["start"], attrs["end"], attrs["step"])
    if src.shape != (*x.shape[:d], n, *x.shape[d + 1 :]):
        raise ShapeError(f"source {fmt_shape(src.shape)} does not fit the slice of {fmt_shape(x.shape)}")
    return x


def slice_scatter(x: np.ndarray, src: np.ndarray, dim: int, start: int | None, end: int | None,
                  step: int) -> np.ndarray:
    out = x.copy()
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    out[tuple(index)] = src
    return out


define("slice_scatter", _slice_scatter, slice_scatter, arity=(2, 2),
       attrs={"dim": attr_int(0), "start": attr_int(None), "end": attr_int(None), "step": attr_int(1)},
       doc="x with x[..., start:end:step, ...] (on `dim`) replaced by src (torch.slice_scatter).")
