"""Passes, the pass manager, instruments, analyses and bisection."""

from graphopt.pipeline.bisect import BisectResult, bisect
from graphopt.pipeline.instruments import DumpToFolder, Instrument, PrintAfter, Timing
from graphopt.pipeline.manager import PassContext, PassManager, PassRecord, PipelineResult, run_pipeline
from graphopt.pipeline.passes import (
    ALL,
    Analysis,
    Contract,
    Pass,
    PassResult,
    register_pass,
    registered_passes,
)
from graphopt.pipeline.spec import parse_pipeline

__all__ = [
    "ALL", "Analysis", "BisectResult", "Contract", "DumpToFolder", "Instrument", "Pass", "PassContext",
    "PassManager", "PassRecord", "PassResult", "PipelineResult", "PrintAfter", "Timing", "bisect",
    "parse_pipeline", "register_pass", "registered_passes", "run_pipeline",
]
