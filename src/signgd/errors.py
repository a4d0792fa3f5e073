"""The errors signgd raises. Each message names the problem and the fix, in one line where it can."""
from __future__ import annotations

__all__ = ["SigngdError", "ConversionError", "UnsupportedOperationError", "TraceError",
           "CalibrationError", "InputError"]


class SigngdError(Exception):
    """Base class of every error signgd raises on purpose."""


class ConversionError(SigngdError):
    """The model cannot be converted as it is."""


class TraceError(ConversionError):
    """torch.fx could not trace the model."""


class UnsupportedOperationError(ConversionError):
    """The graph holds operations the converter has no neuron or affine rule for.

    ``nodes`` lists ``(node name, op kind, target)`` for every offending node.
    """

    def __init__(self, message: str, nodes: list[tuple[str, str, str]]):
        super().__init__(message)
        self.nodes = nodes


class CalibrationError(SigngdError, ValueError):
    """The calibration data is empty, malformed or not finite."""


class InputError(SigngdError, ValueError):
    """An input to a converted network (or its arguments) is malformed."""
