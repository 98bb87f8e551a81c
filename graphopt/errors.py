"""Every error graphopt raises on bad input derives from GraphoptError, so callers can catch one type
and the CLI can print one clear line instead of a traceback."""

from __future__ import annotations


class GraphoptError(Exception):
    """Base of graphopt's user-facing errors."""


class IRError(GraphoptError):
    """An IR mutation that would break the graph's invariants (erasing a used node, ...)."""


class ShapeError(GraphoptError):
    """Operand types an op cannot accept (raised by shape/dtype inference)."""


class OpError(GraphoptError):
    """An op that is unknown, or called with the wrong operands or attributes."""


class ParseError(GraphoptError):
    """Malformed text IR; the message names the line and column."""


class InterpretError(GraphoptError):
    """The reference interpreter could not evaluate a node (bad inputs or a failing op)."""


class PipelineError(GraphoptError):
    """A malformed pipeline string, an unknown pass or option, or a pass that failed."""


class VerifyError(GraphoptError):
    """A graph that breaks an invariant; `problems` lists every one found, each naming its node."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"graph failed verification with {len(self.problems)} problem(s):\n{lines}")
