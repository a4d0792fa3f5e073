"""The error a command raises for a mistake in what the user asked for (a name, a path, an option),
and the argument parser that reports a malformed argument on one line."""
from __future__ import annotations

import argparse

from ..errors import UsageError

__all__ = ["OneLineParser", "UsageError"]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, the problem and where to read the fix
    (``--help``), with exit status 2: argparse's default prints the whole usage block first."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
