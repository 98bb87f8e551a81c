"""The built-in passes, one per module (file dce.py <-> pipeline name dce <-> class
DeadCodeElimination). Importing this package registers them."""

from __future__ import annotations

from dataclasses import dataclass

from graphopt.passes import (  # noqa: F401  (registration)
    canonicalize,
    cluster,
    cse,
    dce,
    distill,
    equalize,
    fold_bn,
    fold_constants,
    fuse_activation,
    prune,
    qat,
    quantize,
    remove_blocks,
    remove_identity,
    sparsify,
)

from graphopt.pipeline import Contract, registered_passes
from graphopt.pipeline.passes import OptionSpec


@dataclass(frozen=True)
class PassInfo:
    name: str
    doc: str
    contract: Contract
    options: dict[str, OptionSpec]

    def __str__(self) -> str:
        opts = ", ".join(f"{k}: {spec.describe()}" for k, spec in self.options.items())
        return f"{self.name:<24} {self.doc}  [contract: {self.contract.semantics}]" + (
            f"\n{'':<24} options: {opts}" if opts else "")


def available() -> list[PassInfo]:
    """Every registered pass with its options, contract and one-line description."""
    return [PassInfo(name, (cls.__doc__ or "").strip().splitlines()[0], cls.contract, cls.options())
            for name, cls in registered_passes().items()]
