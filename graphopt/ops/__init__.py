"""The op registry and the built-in ops (importing this package registers them)."""

from graphopt.ops import elementwise, layout, nn, quant, reduce, tensor  # noqa: F401  (registration)
from graphopt.ops.registry import (
    REQUIRED,
    Attr,
    AttrKind,
    ChannelRule,
    OpDef,
    Sampler,
    find_op,
    get_op,
    register_op,
    registered_ops,
)

BUILTIN_OPS = frozenset(registered_ops())

__all__ = [
    "BUILTIN_OPS",
    "REQUIRED", "Attr", "AttrKind", "ChannelRule", "OpDef", "Sampler", "find_op", "get_op", "register_op",
    "registered_ops",
]
