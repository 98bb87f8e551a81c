"""Every error graphopt raises on bad input derives from GraphoptError, so callers can catch one type
and the CLI can print one clear line instead of a traceback. Each class carries the CLI's exit code
for its kind of failure: usage 2, bad input 3, unsupported model 4, internal error (a bug) 70."""

from __future__ import annotations

from typing import ClassVar

EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_UNSUPPORTED = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class GraphoptError(Exception):
    """Base of graphopt's user-facing errors: input graphopt cannot use (exit code 3)."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class UsageError(GraphoptError, ValueError):
    """A bad command-line argument or pass option; the message names it and its allowed values."""

    exit_code = EXIT_USAGE


class ArgumentError(UsageError, TypeError):
    """A Python API argument of the wrong kind (a graph expected, a string given, ...)."""


class FileError(GraphoptError, OSError):
    """A file or folder that cannot be read or written (missing, unreadable, a directory, an output
    that would replace an input)."""


class UnsupportedError(GraphoptError):
    """A valid model that uses something graphopt does not handle (an op, control flow, a dynamic
    shape); the message says what and how to get past it."""

    exit_code = EXIT_UNSUPPORTED


class InternalError(GraphoptError):
    """A failure inside graphopt that no input should cause: a bug to report."""

    exit_code = EXIT_INTERNAL


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
    """A pass that failed; its exit code is that of the error that stopped it."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


class OptionError(PipelineError, UsageError):
    """A malformed pipeline string, an unknown pass, or an option that is unknown or out of range."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class VerifyError(GraphoptError):
    """A graph that breaks an invariant; `problems` lists every one found, each naming its node."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"graph failed verification with {len(self.problems)} problem(s):\n{lines}")


def located(error: GraphoptError, where: str) -> GraphoptError:
    """`error` with `where` (a node, a file) put in front of its message; class and exit code kept."""
    error.args = (f"{where}: {error}",)
    return error


def expect_type(value: object, kind: type | tuple[type, ...], what: str) -> None:
    """Raise ArgumentError unless `value` is a `kind`: API misuse named at the call, not deep inside."""
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = " or ".join(k.__name__ for k in kinds)
        raise ArgumentError(f"{what} must be a {names}, got {type(value).__name__}")
