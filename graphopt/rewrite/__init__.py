"""Pattern rewriting: Pattern / Declined / Rewriter and the greedy fixpoint driver."""

from graphopt.rewrite.driver import Trace, TraceEvent, apply_patterns
from graphopt.rewrite.pattern import Declined, Pattern, Rewriter

__all__ = ["Declined", "Pattern", "Rewriter", "Trace", "TraceEvent", "apply_patterns"]
