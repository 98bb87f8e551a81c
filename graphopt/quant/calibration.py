"""Calibration: representative inputs, checked against the graph before any work, and the
histogram and per-channel (last axis) absolute maximum of every float tensor they produce. Under
torchrun the ranks split the samples and merge what they observed exactly (graphopt.parallel).
Statistics are cached on the Calibration by graph fingerprint, so trying another observer or
scheme on the same model never re-runs it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.ir.printer import print_graph
from graphopt.ir.types import DType, fmt_shape
from graphopt.ir.value import Value
from graphopt.parallel import gather, ranks
from graphopt.progress import progress
from graphopt.quant.observers import Histogram
from graphopt.quant.runner import Runner


class CalibrationError(GraphoptError):
    """Calibration data that does not fit the model."""


def tracked_values(graph: Graph) -> list[Value]:
    """The float tensors calibration observes, in a fixed order (inputs, then node results)."""
    values = list(graph.inputs) + [r for node in graph for r in node.results]
    return [v for v in values if v.dtype in (DType.float32, DType.float16, DType.float64)]


def fingerprint(graph: Graph) -> str:
    digest = hashlib.blake2b(print_graph(graph, inline_limit=0).encode(), digest_size=16)
    for p in graph.parameters:
        if p.data is not None:
            digest.update(np.ascontiguousarray(p.data))
    return digest.hexdigest()


class ChannelMax:
    """Running per-channel absolute maximum over a tensor's last axis (all other axes reduced)."""

    def __init__(self) -> None:
        self.values: np.ndarray | None = None

    def add(self, array: np.ndarray) -> None:
        if array.ndim == 0:
            return
        self.merge_values(np.abs(array).max(axis=tuple(range(array.ndim - 1))).astype(np.float64))

    def merge_values(self, m: np.ndarray | None) -> None:
        if m is not None:
            self.values = m if self.values is None or self.values.shape != m.shape else np.maximum(self.values, m)


@dataclass
class Observed:
    """What calibration saw of one tensor."""

    histogram: Histogram = field(default_factory=Histogram)
    channels: ChannelMax = field(default_factory=ChannelMax)

    def add(self, array: np.ndarray) -> None:
        self.histogram.add(array)
        self.channels.add(array)

    def merge(self, other: Observed) -> None:
        """What both saw (exact: histograms merge bin for bin, maxima by max)."""
        self.histogram.merge(other.histogram)
        self.channels.merge_values(other.channels.values)


class Statistics:
    """What calibration saw of a graph's float tensors (`of(value)` the histogram, `channel_absmax`
    the per-channel maxima) and the float model's outputs on every sample, the reference quantized
    models are scored against."""

    def __init__(self, graph: Graph, observed: Sequence[Observed], outputs: Sequence[list[np.ndarray]],
                 ran_by: Sequence[int] = ()) -> None:
        self.observed = list(observed)
        self.outputs = list(outputs)
        self.ran_by = list(ran_by) or [0] * len(self.outputs)  # the torchrun rank that ran each sample
        self.by_value = {id(v): o for v, o in zip(tracked_values(graph), observed)}

    def rebind(self, clone: Graph) -> Statistics:
        """The same statistics for a clone of the graph they were taken on."""
        return Statistics(clone, self.observed, self.outputs, self.ran_by)

    def _lookup(self, value: Value) -> Observed:
        try:
            return self.by_value[id(value)]
        except KeyError:
            raise GraphoptError(f"no calibration statistics for %{value.name}; it was not observed") from None

    def of(self, value: Value) -> Histogram:
        return self._lookup(value).histogram

    def channel_absmax(self, value: Value) -> np.ndarray | None:
        """max |value| per index of its last axis over every sample (None for a scalar)."""
        return self._lookup(value).channels.values


class Calibration:
    """Calibration samples: each one a tuple with an array (numpy or torch) for every graph input.
    A single array stands for a one-input sample. Pass the same Calibration to several pipelines to
    reuse its statistics."""

    def __init__(self, samples: Iterable[Any]) -> None:
        if isinstance(samples, Calibration):
            samples = samples.samples
        self.samples: list[tuple[np.ndarray, ...]] = [_as_sample(s) for s in samples]
        if not self.samples:
            raise CalibrationError("calibration data is empty; give at least one input sample")
        self._statistics: dict[str, tuple[list[Observed], list[list[np.ndarray]], list[int]]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def check(self, graph: Graph, what: str = "calibration") -> None:
        """Raise CalibrationError naming the sample and input when a sample does not fit `graph`."""
        for i, sample in enumerate(self.samples):
            if len(sample) != len(graph.inputs):
                raise CalibrationError(f"{what} sample {i} has {len(sample)} array(s); graph {graph.name} "
                                       f"takes {len(graph.inputs)} input(s): "
                                       f"{', '.join('%' + v.name for v in graph.inputs)}")
            for value, array in zip(graph.inputs, sample):
                where = f"{what} sample {i}, input %{value.name}"
                if array.dtype != value.dtype.numpy:
                    raise CalibrationError(f"{where}: dtype {array.dtype}, the model expects {value.dtype}; "
                                           f"convert with .astype(np.{np.dtype(value.dtype.numpy).name})")
                if array.ndim != value.type.rank or any(
                        isinstance(d, int) and d != s for d, s in zip(value.shape, array.shape)):
                    raise CalibrationError(f"{where}: shape {fmt_shape(array.shape)}, the model expects "
                                           f"{fmt_shape(value.shape)}")
                if array.dtype.kind == "f" and not np.isfinite(array).all():
                    raise CalibrationError(f"{where}: contains NaN or infinity; {what} needs finite inputs")

    def statistics(self, graph: Graph, known: Statistics | None = None) -> Statistics:
        """What every float tensor of `graph` holds over all samples (computed once per graph).
        `known`: statistics taken before an in-place change that left the tensors they cover as
        they were (smoothing adds multiplies and keeps every product): only the new tensors are
        observed."""
        key = fingerprint(graph)
        if key not in self._statistics:
            self.check(graph)
            values = tracked_values(graph)
            kept = {} if known is None else known.by_value
            observed = {id(v): kept.get(id(v)) or Observed() for v in values}
            inputs = {id(v) for v in graph.inputs}
            results = [v for v in values if id(v) not in inputs and id(v) not in kept]
            runner = Runner(graph, results)
            rank, world = ranks()
            outputs: dict[int, list[np.ndarray]] = {}
            mine = range(rank, len(self.samples), world)  # under torchrun each rank runs its share
            for i in progress(mine, len(mine), f"calibrating on {runner.backend}", hidden=rank != 0):
                sample = self.samples[i]
                for value, array in zip(graph.inputs, sample):
                    if id(value) in observed and id(value) not in kept:
                        observed[id(value)].add(array)
                graph_outputs, arrays = runner.run(*sample)
                for value, array in zip(results, arrays):
                    observed[id(value)].add(array)
                outputs[i] = graph_outputs
            fresh = [id(v) for v in values if id(v) not in kept]
            shares = gather(([observed[k] for k in fresh], outputs), world)
            if world > 1:  # every rank merges every share: the one-process statistics, bit for bit
                for k in fresh:
                    observed[k] = Observed()
                for share, _ in shares:
                    for k, seen in zip(fresh, share):
                        observed[k].merge(seen)
            ran = {i: r for r, (_, done) in enumerate(shares) for i in done}
            merged = {i: out for _, done in shares for i, out in done.items()}
            self._statistics[key] = ([observed[id(v)] for v in values], [merged[i] for i in range(len(self.samples))],
                                     [ran[i] for i in range(len(self.samples))])
        return Statistics(graph, *self._statistics[key])


def _as_sample(sample: Any) -> tuple[np.ndarray, ...]:
    items = sample if isinstance(sample, tuple | list) else (sample,)
    return tuple(_as_array(a) for a in items)


def _as_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, without importing torch
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def load_calibration(path: str | Path, graph: Graph, labels: bool = False) -> Calibration:
    """Samples from an .npz (arrays named after the graph inputs, or in input order, stacked along
    axis 0 and split into the inputs' batch size) or a folder of .npy/.npz files (one sample each).
    With `labels`, an array named `labels` (training data) ends each sample with its slice."""
    path = Path(path)

    def split(arrays: Mapping[str, np.ndarray], where: Path) -> tuple[np.ndarray, ...]:
        named = dict(arrays)
        label = named.pop("labels", None) if labels else None
        return (*_arrays_for(graph, named, where), *(() if label is None else (label,)))

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise CalibrationError(f"calibration folder {path} has no .npy or .npz files")
        return Calibration([split(_read(f), f) for f in files])
    if path.suffix != ".npz":
        raise CalibrationError(f"calibration file {path} must be an .npz or a folder of .npy/.npz files")
    arrays = split(_read(path), path)
    batch = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].type.rank else 1
    step = batch if isinstance(batch, int) else 1
    count = arrays[0].shape[0] // step if arrays[0].ndim else 0
    if any(a.ndim == 0 or a.shape[0] != arrays[0].shape[0] for a in arrays) or count == 0:
        raise CalibrationError(f"{path}: arrays must share a leading sample axis of at least {step}")
    return Calibration([tuple(a[i * step:(i + 1) * step] for a in arrays) for i in range(count)])


def _read(path: Path) -> Mapping[str, np.ndarray]:
    from graphopt.ir.serialize import read_npz

    if not path.exists():
        raise CalibrationError(f"calibration data {path} does not exist")
    if path.suffix == ".npy":
        try:
            return {"arr_0": np.load(path, allow_pickle=False)}
        except (OSError, ValueError, EOFError) as e:
            raise CalibrationError(f"cannot read calibration data {path}: {e}") from None
    return read_npz(path, "calibration data")


def _arrays_for(graph: Graph, arrays: Mapping[str, np.ndarray], where: Path) -> tuple[np.ndarray, ...]:
    """Arrays are matched to the inputs by name; unnamed ones (numpy's arr_0, arr_1, ...) by position."""
    names = [v.name for v in graph.inputs]
    if all(n in arrays for n in names) and set(arrays) <= set(names):
        return tuple(arrays[n] for n in names)
    if list(arrays) == [f"arr_{i}" for i in range(len(names))]:
        return tuple(arrays.values())
    unmatched = [k for k in arrays if k not in names]
    raise CalibrationError(f"{where}: array(s) {', '.join(unmatched) or 'none'} match no model input; the model inputs "
                           f"are {', '.join(names)} (name the arrays after the inputs, or save them unnamed, one per "
                           "input in order, with numpy.savez(path, *arrays))")
