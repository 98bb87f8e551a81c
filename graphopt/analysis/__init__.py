"""Analyses over graphs (cached by the pass manager)."""

from graphopt.analysis.channels import ChannelAnalysis, ChannelGroup, ChannelGroups, analyze_channels
from graphopt.analysis.cost import Cost, CostAnalysis, graph_cost

__all__ = ["ChannelAnalysis", "ChannelGroup", "ChannelGroups", "Cost", "CostAnalysis", "analyze_channels", "graph_cost"]
