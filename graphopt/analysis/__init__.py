"""Analyses over graphs (cached by the pass manager)."""

from graphopt.analysis.cost import Cost, CostAnalysis, graph_cost

__all__ = ["Cost", "CostAnalysis", "graph_cost"]
