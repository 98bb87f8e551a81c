"""Range observers on streaming histograms: memory stays `bins` counts a tensor however many
calibration batches are seen, and every method (minmax, percentile, entropy, mse) is computed from
the same histogram, so trying another method never re-runs the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir.types import DType

Method = Literal["minmax", "percentile", "entropy", "mse"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")
CANDIDATES = np.linspace(0.1, 1.0, 91)  # clipping ratios tried by entropy and mse


class Histogram:
    """Counts of one tensor's values on bins of width 2^level aligned at multiples of it: bin j holds
    [j 2^level, (j + 1) 2^level). The level is the smallest that fits the values seen into `capacity`
    bins (and resolves their magnitude to 2^-FINEST), so when the range grows adjacent bins merge
    exactly. Infinite values (attention masks' -inf) are left out: they are sentinels, not data.
    The counts then depend only on the values seen, not on their order or grouping: histograms of
    disjoint shards of the calibration set `merge` into exactly the one-process histogram
    (distributed calibration, bitwise identical scales)."""

    FINEST = 40  # a bin is at least max|x| * 2^-40 wide (a constant tensor still gets a finite level)

    def __init__(self, bins: int = 2048) -> None:
        self.capacity = bins
        self.level: int | None = None
        self.start = 0  # index of the first bin at this level
        self.counts = np.zeros(0, dtype=np.float64)
        self.min, self.max = np.inf, -np.inf
        # observe_range's answers, kept until the next add: mixed precision re-plans the model once
        # per layer, and the entropy search costs a third of a second a tensor
        self.ranges: dict[tuple[str, int, float], tuple[float, float]] = {}

    @property
    def empty(self) -> bool:
        return not np.isfinite(self.min)

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def lo(self) -> float:
        return float(np.ldexp(float(self.start), self.level or 0))

    @property
    def hi(self) -> float:
        return float(np.ldexp(float(self.start + self.bins), self.level or 0))

    @property
    def edges(self) -> np.ndarray:
        return np.ldexp(np.arange(self.start, self.start + self.bins + 1, dtype=np.float64), self.level or 0)

    @property
    def centers(self) -> np.ndarray:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    def _fits(self, level: int, lo: float, hi: float) -> bool:
        return np.floor(np.ldexp(hi, -level)) - np.floor(np.ldexp(lo, -level)) < self.capacity

    def _level_for(self, lo: float, hi: float) -> int:
        """The finest level that resolves [lo, hi] to 2^-FINEST of its peak and fits it into
        `capacity` bins: a function of the range alone, never below an earlier range's (both limits
        only rise as the range grows)."""
        peak = max(abs(lo), abs(hi))
        level = int(np.frexp(peak)[1]) - self.FINEST if peak > 0 else -1000
        while not self._fits(level, lo, hi):
            level += 1
        return level

    def _cover(self, level: int) -> None:
        """Move to `level` (merging bins) and cover [min, max]."""
        first, last = (int(np.floor(np.ldexp(v, -level))) for v in (self.min, self.max))
        if level == self.level and first >= self.start and last < self.start + self.bins:
            return
        counts = np.zeros(last - first + 1, dtype=np.float64)
        if self.bins:
            assert self.level is not None
            np.add.at(counts, (np.arange(self.start, self.start + self.bins) >> (level - self.level)) - first,
                      self.counts)
        self.level, self.start, self.counts = level, first, counts

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).ravel()
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)):  # -inf masks and the like are sentinels, not data
            x = x[np.isfinite(x)]
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if x.size == 0:
            return
        self.ranges.clear()
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self._cover(self._level_for(self.min, self.max))
        self.counts += np.bincount(self._bin(x), minlength=self.bins)

    def _bin(self, x: np.ndarray) -> np.ndarray:
        """Each value's bin: floor(x / 2^level) - start, exact (a power-of-two scaling), in float32
        where 2^-level is a normal float32 (10x faster than ldexp), else in float64."""
        assert self.level is not None
        if -127 <= self.level <= 126:
            q = x * np.float32(2.0 ** -self.level)
            np.floor(q, out=q)
            return q.astype(np.int64) - self.start
        return np.floor(np.ldexp(x.astype(np.float64), -self.level)).astype(np.int64) - self.start

    def merge(self, other: Histogram) -> None:
        """Add `other`'s counts (a histogram of other values): the result is the histogram of both."""
        if other.empty:
            return
        assert other.level is not None
        self.ranges.clear()
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self._cover(self._level_for(self.min, self.max))
        assert self.level is not None
        index = (np.arange(other.start, other.start + other.bins) >> (self.level - other.level)) - self.start
        np.add.at(self.counts, index, other.counts)

    def quantile(self, q: float) -> float:
        cumulative = np.concatenate([[0.0], np.cumsum(self.counts)])
        return float(np.interp(q * cumulative[-1], cumulative, self.edges))


def observe_range(hist: Histogram, method: str, levels: int, percentile: float = 99.999) -> tuple[float, float]:
    """The (lo, hi) clipping range `method` picks for `levels` quantization steps (computed once per
    histogram state)."""
    key = (method, levels, percentile)
    if key not in hist.ranges:
        hist.ranges[key] = _observe_range(hist, method, levels, percentile)
    return hist.ranges[key]


def _observe_range(hist: Histogram, method: str, levels: int, percentile: float) -> tuple[float, float]:
    if hist.empty:
        raise GraphoptError("no calibration values were observed for this tensor")
    if method == "minmax":
        return hist.min, hist.max
    if method == "percentile":
        tail = (100.0 - percentile) / 100.0
        return min(hist.quantile(tail), 0.0), max(hist.quantile(1.0 - tail), 0.0)
    if method not in ("mse", "entropy"):
        raise GraphoptError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    cost = _mse if method == "mse" else _kl
    # Each end separately (an outlier on one side must not clip the other), the upper end first.
    lo, hi = min(hist.min, 0.0), max(hist.max, 0.0)
    hi = hi * CANDIDATES[int(np.argmin([cost(hist, lo, a * hi, levels) for a in CANDIDATES]))]
    lo = lo * CANDIDATES[int(np.argmin([cost(hist, a * lo, hi, levels) for a in CANDIDATES]))]
    return lo, hi


def _mse(hist: Histogram, lo: float, hi: float, levels: int) -> float:
    """Expected squared error of quantizing to `levels` steps over [lo, hi]: step**2 / 12 for the
    values inside (rounding, values spread within their bins) plus the clipping error outside."""
    step = (hi - lo) / (levels - 1) or 1.0
    c = hist.centers
    clipped = np.clip(c, lo, hi)
    error = np.where(c == clipped, step * step / 12, (c - clipped) ** 2)
    return float(np.dot(hist.counts, error))


def _kl(hist: Histogram, lo: float, hi: float, levels: int) -> float:
    """KL(P || Q) as TensorRT calibrates: P the histogram clipped to [lo, hi] with the outliers piled
    on the edge bins, Q the clipped histogram without them, merged into `levels` groups spread evenly
    over their non-empty bins (so clipping mass and rounding both cost)."""
    i0 = int(np.floor((lo - hist.lo) / (hist.hi - hist.lo) * hist.bins))
    i1 = int(np.ceil((hi - hist.lo) / (hist.hi - hist.lo) * hist.bins))
    i0, i1 = max(i0, 0), min(max(i1, i0 + 1), hist.bins)
    if i1 - i0 < levels:
        return np.inf
    inside = hist.counts[i0:i1]
    p = inside.copy()
    p[0] += hist.counts[:i0].sum()
    p[-1] += hist.counts[i1:].sum()
    q = np.zeros_like(p)
    for chunk in np.array_split(np.arange(p.size), levels):
        nonzero = chunk[inside[chunk] > 0]
        if nonzero.size:
            q[nonzero] = inside[chunk].sum() / nonzero.size
    mask = p > 0
    p, q = p[mask] / p.sum(), np.maximum(q[mask], 1e-12) / q.sum()
    return float(np.sum(p * np.log(p / q)))


@dataclass(frozen=True)
class QParams:
    """Per-tensor quantization parameters: x ~ (q - zero_point) * scale, q in [qmin, qmax]."""

    scale: float
    zero_point: int
    dtype: DType


def _usable_scale(scale: float) -> float:
    """`scale` in float32, or 1 where that is not a normal positive number (a tensor that is always
    0: any scale represents it)."""
    single = float(np.float32(scale))
    return single if single >= float(np.finfo(np.float32).tiny) else 1.0


def affine_qparams(lo: float, hi: float, dtype: DType, symmetric: bool) -> QParams:
    """Parameters covering [lo, hi] (widened to include 0, which must be exact: zero padding and
    relu outputs). Symmetric ones have zero point 0 and a range of +-127, except on a non-negative
    tensor (a relu's output): it gets the whole type from 0 up, twice the resolution, with the zero
    point at the type's minimum -- the form in which runtimes drop a relu in front of the quantize."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric and lo < 0:
        return QParams(_usable_scale(max(-lo, hi) / 127.0), 0, dtype)
    info = np.iinfo(dtype.numpy)
    scale = _usable_scale((hi - lo) / (info.max - info.min))
    zero_point = int(np.clip(np.rint(info.min - lo / scale), info.min, info.max))
    return QParams(scale, zero_point, dtype)


def symmetric_scales(weight: np.ndarray, axis: int | None, bound: int = 127) -> np.ndarray:
    """Per-channel (along `axis`) or per-tensor (axis None) scales mapping max |w| to `bound`."""
    w = np.abs(weight.astype(np.float32))
    amax = w.max() if axis is None else w.max(axis=tuple(d for d in range(w.ndim) if d != axis % w.ndim))
    scales = np.asarray(amax, dtype=np.float32) / np.float32(bound)
    return np.where(scales > 0, scales, np.float32(1.0)).astype(np.float32)


CLIP_RATIOS = np.linspace(1.0, 0.5, 26, dtype=np.float32)


def clipped_scales(weight: np.ndarray, axis: int | None, bound: int) -> np.ndarray:
    """Like symmetric_scales, with each channel's range clipped to the fraction of its max |w| that
    minimizes the squared rounding error: at 4 bits the few largest weights would otherwise
    stretch the step for all the rest (at 8 bits the max is already close to the best)."""
    w = weight.astype(np.float32)
    flat = w.reshape(-1, 1) if axis is None else np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).T
    peak = symmetric_scales(flat, 1, bound)  # [channels]
    best, best_error = peak, np.full(peak.shape, np.inf, np.float32)
    for ratio in CLIP_RATIOS:
        scales = peak * ratio
        error = np.square(np.clip(np.rint(flat / scales), -bound, bound) * scales - flat).sum(axis=0)
        better = error < best_error
        best, best_error = np.where(better, scales, best), np.where(better, error, best_error)
    return best.astype(np.float32) if axis is not None else best.reshape(())


def expected_sqnr_db(hist: Histogram, qp: QParams) -> float:
    """The SQNR (dB) quantizing the histogram's values with `qp` would have: rounding inside the
    representable range, clipping outside it."""
    info = np.iinfo(qp.dtype.numpy)
    lo, hi = (info.min - qp.zero_point) * qp.scale, (info.max - qp.zero_point) * qp.scale
    noise = _mse(hist, lo, hi, info.max - info.min + 1)
    signal = float(np.dot(hist.counts, hist.centers ** 2))
    return float("inf") if noise == 0 else 10 * float(np.log10(max(signal, 1e-30) / noise))
