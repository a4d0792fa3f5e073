"""The error a command raises for a mistake in what the user asked for (a name, a path, an option)."""
from __future__ import annotations

from ..errors import SigngdError


class UsageError(SigngdError, ValueError):
    """A command-line argument names something that does not exist or does not fit; the message
    says which and how to fix it."""
