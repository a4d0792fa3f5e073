"""The command line's error boundary: a known mistake becomes one line on stderr (what is wrong and
the fix), not a traceback. Anything not listed here is a bug and keeps its traceback."""
from __future__ import annotations

from ..errors import (
    CalibrationError,
    ConversionError,
    DatasetNotFoundError,
    InputError,
    SigngdError,
    TraceError,
    UnsupportedOperationError,
    one_line,
)

__all__ = ["error_message", "EXIT_USAGE", "EXIT_FAILURE"]

EXIT_FAILURE = 1
EXIT_USAGE = 2

# (exception class, prefix): the first match wins, so subclasses come before their bases.
_KNOWN = (
    (UnsupportedOperationError, "unsupported operation"),
    (TraceError, "cannot trace the model"),
    (CalibrationError, "calibration data"),
    (ConversionError, "conversion failed"),
    (InputError, "bad input"),
    (DatasetNotFoundError, "data not found"),
    (SigngdError, None),
)


def _file_error(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    path = f": {exc.filename}" if exc.filename else ""
    return (f"cannot read or write a file ({what}{path}); check the paths given (--out, --json, --weights, "
            f"the data folder) and their permissions")


def error_message(exc: BaseException) -> str | None:
    """The one-line message for a known mistake, or None for an unexpected error."""
    for cls, prefix in _KNOWN:
        if isinstance(exc, cls):
            message = one_line(str(exc)) or type(exc).__name__
            return f"{prefix}: {message}" if prefix else message
    if isinstance(exc, OSError) and exc.filename is not None:  # a path that exists as a file, a folder...
        return _file_error(exc)
    return None
