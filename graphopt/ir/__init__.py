"""The graph IR: types, values, nodes, graphs, and their text form and verifier."""

from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.parser import parse
from graphopt.ir.printer import print_graph
from graphopt.ir.serialize import load, save
from graphopt.ir.types import DType, TensorType
from graphopt.ir.value import Use, Value
from graphopt.ir.verifier import find_problems, verify

__all__ = [
    "DType", "Graph", "Node", "TensorType", "Use", "Value", "find_problems", "load", "parse",
    "print_graph", "save", "verify",
]
