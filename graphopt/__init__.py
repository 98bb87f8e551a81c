"""graphopt: a compiler-style graph transformation framework for neural-network compression.

The core (IR, op registry, interpreter, rewriter, pass manager) needs only numpy; frontends and
backends load torch and onnx on first use, so `import graphopt` stays fast."""

from graphopt.analysis import Cost, graph_cost
from graphopt.errors import (
    ArgumentError,
    FileError,
    GraphoptError,
    InternalError,
    InterpretError,
    IRError,
    OpError,
    OptionError,
    ParseError,
    PipelineError,
    ShapeError,
    UnsupportedError,
    UsageError,
    VerifyError,
)
from graphopt.interp import Interpreter, interpret
from graphopt.ir import DType, Graph, Node, TensorType, Value, load, parse, print_graph, save, verify
from graphopt.ops import Attr, AttrKind, ChannelRule, OpDef, get_op, register_op, registered_ops
from graphopt.pipeline import (
    Contract,
    Pass,
    PassContext,
    PassResult,
    bisect,
    option,
    register_pass,
    run_pipeline,
)

__version__ = "0.1.0"

_LAZY = {
    "from_torch": "graphopt.frontends.torch",
    "from_onnx": "graphopt.frontends.onnx",
    "to_onnx": "graphopt.backends.onnx",
    "to_torch": "graphopt.backends.torch",
}


def __getattr__(name: str) -> object:
    """Frontends and backends load torch or onnx, so they are imported on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")

__all__ = [
    "ArgumentError",
    "Attr",
    "AttrKind",
    "ChannelRule",
    "Contract",
    "Cost",
    "DType",
    "FileError",
    "Graph",
    "GraphoptError",
    "IRError",
    "InternalError",
    "InterpretError",
    "Interpreter",
    "Node",
    "OpDef",
    "OpError",
    "OptionError",
    "ParseError",
    "Pass",
    "PassContext",
    "PassResult",
    "PipelineError",
    "ShapeError",
    "TensorType",
    "UnsupportedError",
    "UsageError",
    "Value",
    "VerifyError",
    "bisect",
    "from_onnx",
    "from_torch",
    "get_op",
    "graph_cost",
    "interpret",
    "load",
    "option",
    "parse",
    "print_graph",
    "register_op",
    "register_pass",
    "registered_ops",
    "run_pipeline",
    "save",
    "to_onnx",
    "to_torch",
    "verify",
]
