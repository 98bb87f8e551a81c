"""Passes, the pass manager, instruments, analyses and bisection."""

from graphopt.pipeline.bisect import BisectResult, bisect
from graphopt.pipeline.instruments import DumpToFolder, Instrument, PrintAfter, StepCost, StepCosts, Timing
from graphopt.pipeline.manager import PassContext, PassManager, PassRecord, PipelineResult, run_pipeline
from graphopt.pipeline.passes import (
    ALL,
    Allowed,
    Analysis,
    Contract,
    OptionSpec,
    Pass,
    PassResult,
    option,
    register_pass,
    registered_passes,
)
from graphopt.pipeline.spec import parse_pipeline

__all__ = [
    "ALL",
    "Allowed",
    "Analysis",
    "BisectResult",
    "Contract",
    "DumpToFolder",
    "Instrument",
    "OptionSpec",
    "Pass",
    "PassContext",
    "PassManager",
    "PassRecord",
    "PassResult",
    "PipelineResult",
    "PrintAfter",
    "StepCost",
    "StepCosts",
    "Timing",
    "bisect",
    "option",
    "parse_pipeline",
    "register_pass",
    "registered_passes",
    "run_pipeline",
]
