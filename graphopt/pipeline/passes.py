"""The pass base class, pass contracts, analyses and their registries.

A pass is a frozen dataclass: its fields are its options, so `prune{ratio=0.5,round-to=8}` builds
`Prune(ratio=0.5, round_to=8)` and `spec()` prints it back for reports."""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from graphopt.errors import OptionError, PipelineError
from graphopt.ir.graph import Graph

if TYPE_CHECKING:
    from graphopt.pipeline.manager import PassContext

ALL = "*"


@dataclass(frozen=True)
class Contract:
    """What a pass promises, checked by graphopt.testing.check_pass on generated graphs:
    `exact` (same outputs up to float rounding, within rtol/atol), `masked` (same outputs as the
    model with the removed parts zeroed), `bounded` (outputs within rtol/atol of the original), or
    `trained` (parameter values change toward a training objective; the structure stays)."""

    semantics: Literal["exact", "masked", "bounded", "trained"]
    idempotent: bool = True
    rtol: float = 1e-5
    atol: float = 1e-5


@dataclass(frozen=True)
class PassResult:
    """`preserved` names the analyses still valid after the pass (ALL keeps every one); `details`
    is what the pass reports beyond the graph (it lands in the pipeline's PassRecord)."""

    changed: bool
    preserved: frozenset[str] | str = frozenset()
    details: Any = None

    @classmethod
    def unchanged(cls) -> PassResult:
        return cls(False, ALL)


@dataclass(frozen=True)
class Allowed:
    """The values an option accepts: a numeric range (each end open or closed) or a set of choices.
    Float options are always finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()

    def admits(self, value: Any) -> bool:
        if isinstance(value, tuple):
            return all(self.admits(v) for v in value)
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.choices:
            return "one of " + ", ".join(format_option(c) for c in self.choices)
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        opening = "(" if self.low_open or self.low is None else "["
        closing = ")" if self.high_open or self.high is None else "]"
        return f"{opening}{lo}, {hi}{closing}"


def option(default: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, choices: tuple[Any, ...] = ()) -> Any:
    """A pass option's default and allowed values, declared once on the dataclass field; every
    construction of the pass (pipeline string or Python) is checked against them."""
    allowed = Allowed(low, high, low_open, high_open, tuple(choices))
    return dataclasses.field(default=default, metadata={"allowed": allowed})


@dataclass(frozen=True)
class OptionSpec:
    """One option as pipelines spell it: its type, default and allowed values."""

    type: Any
    default: Any
    allowed: Allowed | None = None

    def describe(self) -> str:
        kind = getattr(self.type, "__name__", str(self.type))
        if self.allowed is None:
            return f"{kind} = {self.default!r}"
        return f"{kind} = {self.default!r} " + (f"({self.allowed})" if self.allowed.choices else f"in {self.allowed}")


@dataclass(frozen=True)
class Pass(ABC):
    name: ClassVar[str]
    contract: ClassVar[Contract]
    needs_received: ClassVar[bool] = False  # reads ctx.received, the graph as the pipeline got it (a teacher)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, spelled = getattr(self, f.name), f.name.replace("_", "-")
            allowed: Allowed | None = f.metadata.get("allowed")
            items = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in items):
                raise OptionError(f"{self.name}: option {spelled}={format_option(value)} must be a finite number"
                                  + (f"; allowed: {allowed}" if allowed else ""))
            if allowed is not None and not allowed.admits(value):
                verdict = "is not a choice" if allowed.choices else "is out of range"
                raise OptionError(f"{self.name}: option {spelled}={format_option(value)} {verdict}; "
                                  f"allowed: {allowed}")

    @abstractmethod
    def run(self, graph: Graph, ctx: PassContext) -> PassResult: ...

    def spec(self) -> str:
        """The pipeline text of this pass: its name and its non-default options."""
        opts = [f"{f.name.replace('_', '-')}={format_option(getattr(self, f.name))}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        return f"{self.name}{{{','.join(opts)}}}" if opts else self.name

    @classmethod
    def options(cls) -> dict[str, OptionSpec]:
        """Option name (as spelled in pipelines) -> its type, default and allowed values."""
        hints = typing.get_type_hints(cls)
        return {f.name.replace("_", "-"): OptionSpec(hints[f.name], f.default, f.metadata.get("allowed"))
                for f in dataclasses.fields(cls)}


def format_option(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ",".join(format_option(v) for v in value) + "]"
    return str(value)


_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator adding a pass to the registry under `cls.name`."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise PipelineError(f"pass {cls.__name__} must be a frozen dataclass")
    if not isinstance(getattr(cls, "contract", None), Contract):
        raise PipelineError(f"pass {cls.__name__} must state its contract (a Contract class attribute)")
    if cls.name in _PASSES and _PASSES[cls.name] is not cls:
        raise PipelineError(f"pass name {cls.name!r} is already registered by {_PASSES[cls.name].__name__}")
    _PASSES[cls.name] = cls
    return cls


def _load_builtin_passes() -> None:
    # A plugin-style load: the core never imports graphopt.passes statically (dependency direction).
    importlib.import_module("graphopt.passes")


def pass_class(name: str) -> type[Pass]:
    _load_builtin_passes()
    try:
        return _PASSES[name]
    except KeyError:
        known = ", ".join(sorted(_PASSES))
        raise OptionError(f"unknown pass {name!r}; available passes: {known}") from None


def registered_passes() -> dict[str, type[Pass]]:
    _load_builtin_passes()
    return dict(sorted(_PASSES.items()))


class Analysis(ABC):
    """A cached fact about a graph, computed on demand through PassContext.analysis."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def compute(cls, graph: Graph, ctx: PassContext) -> Any: ...

