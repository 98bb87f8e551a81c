"""The op registry and the built-in ops (importing this package registers them)."""

from graphopt.ops import elementwise, layout, nn, quant, reduce, tensor  # noqa: F401  (registration)
from graphopt.ops.registry import (
    REQUIRED,
    Attr,
    AttrKind,
    ChannelRule,
    OpDef,
    Sampler,
    get_op,
    register_op,
    registered_ops,
)

__all__ = [
    "REQUIRED", "Attr", "AttrKind", "ChannelRule", "OpDef", "Sampler", "get_op", "register_op",
    "registered_ops",
]
