"""The errors signgd raises. Each message names the problem and the fix, in one line where it can."""
from __future__ import annotations

__all__ = ["SigngdError", "ConversionError", "UnsupportedOperationError", "TraceError",
           "CalibrationError", "InputError", "DatasetNotFoundError", "DistributedError", "ReportError",
           "UsageError", "KernelUnavailableError", "ExportError", "one_line"]


class SigngdError(Exception):
    """Base class of every error signgd raises on purpose.

    Its text is the message it was raised with, on one line: torch.fx's Interpreter appends the
    failing node and a blank line to the ``args`` of an exception raised inside a graph, and a
    wrapped torch error may span lines; signgd's messages name the node themselves.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.message = one_line(str(args[0])) if args else ""

    def __str__(self) -> str:
        return self.message


def one_line(text: str) -> str:
    """``text`` with its lines joined by single spaces, blank lines and list markers (a line's
    leading ``- ``) dropped; an option's dashes (``--weights``) stay."""
    return " ".join(ln.strip().removeprefix("- ") for ln in str(text).splitlines() if ln.strip())


class ConversionError(SigngdError):
    """The model cannot be converted as it is."""


class TraceError(ConversionError):
    """torch.fx could not trace the model."""


class UnsupportedOperationError(ConversionError):
    """The graph holds operations the converter has no neuron or affine rule for.

    ``nodes`` lists ``(node name, op kind, target)`` for every offending node.
    """

    def __init__(self, message: str, nodes: list[tuple[str, str, str]] = ()):
        super().__init__(message)
        self.nodes = list(nodes)

    def __reduce__(self):  # picklable with its nodes (errors cross process boundaries)
        return type(self), (self.message, self.nodes)


class CalibrationError(SigngdError, ValueError):
    """The calibration data is empty, malformed or not finite."""


class InputError(SigngdError, ValueError):
    """An input to a converted network (or its arguments) is malformed."""


class DatasetNotFoundError(SigngdError, FileNotFoundError):
    """A dataset's files are not on disk and could not be downloaded. A ``FileNotFoundError`` too, so
    callers that already handle missing files keep working."""


class DistributedError(SigngdError, RuntimeError):
    """Distributed evaluation was asked for but cannot run as set up; the message says why and the fix."""


class ReportError(SigngdError, ValueError):
    """A report folder or file is missing or is not a signgd report."""


class UsageError(SigngdError, ValueError):
    """A command-line argument names something that does not exist or does not fit; the message
    says which and how to fix it."""


class KernelUnavailableError(SigngdError, RuntimeError):
    """A kernel backend was asked for by name but cannot run on these inputs or on this machine."""


class ExportError(SigngdError, ValueError):
    """The network has no exact form in the interchange format asked for (``signgd.nir``): the message
    names the nodes and what the format lacks."""
