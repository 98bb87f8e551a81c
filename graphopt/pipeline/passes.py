"""The pass base class, pass contracts, analyses and their registries.

A pass is a frozen dataclass: its fields are its options, so `prune{ratio=0.5,round-to=8}` builds
`Prune(ratio=0.5, round_to=8)` and `spec()` prints it back for reports."""

from __future__ import annotations

import dataclasses
import importlib
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from graphopt.errors import PipelineError
from graphopt.ir.graph import Graph

if TYPE_CHECKING:
    from graphopt.pipeline.manager import PassContext

ALL = "*"


@dataclass(frozen=True)
class Contract:
    """What a pass promises, checked by graphopt.testing.check_pass on generated graphs:
    `exact` (same outputs up to float rounding, within rtol/atol), `masked` (same outputs as the
    model with the removed parts zeroed), or `bounded` (outputs within rtol/atol of the original)."""

    semantics: Literal["exact", "masked", "bounded"]
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
class Pass(ABC):
    name: ClassVar[str]
    contract: ClassVar[Contract]

    @abstractmethod
    def run(self, graph: Graph, ctx: PassContext) -> PassResult: ...

    def spec(self) -> str:
        """The pipeline text of this pass: its name and its non-default options."""
        opts = [f"{f.name.replace('_', '-')}={format_option(getattr(self, f.name))}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        return f"{self.name}{{{','.join(opts)}}}" if opts else self.name

    @classmethod
    def options(cls) -> dict[str, tuple[Any, Any]]:
        """Option name (as spelled in pipelines) -> (type, default)."""
        hints = typing.get_type_hints(cls)
        return {f.name.replace("_", "-"): (hints[f.name], f.default) for f in dataclasses.fields(cls)}


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
        raise PipelineError(f"unknown pass {name!r}; available passes: {known}") from None


def registered_passes() -> dict[str, type[Pass]]:
    _load_builtin_passes()
    return dict(sorted(_PASSES.items()))


class Analysis(ABC):
    """A cached fact about a graph, computed on demand through PassContext.analysis."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def compute(cls, graph: Graph, ctx: PassContext) -> Any: ...

