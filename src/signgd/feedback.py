"""Feedback on long work (calibration, schedule tuning, a whole conversion): a user who waits must see
that something happens and, at the end, what was done.

``progress=None`` (the default everywhere): tqdm bars when stderr is a terminal, and one summary line
on stderr when the work is done, terminal or not (a log file or a notebook gets the line, not a wall
of bar updates); ``True``: bars even when stderr is not a terminal, and the line; ``False``: silence.
In a torch.distributed group only rank 0 speaks.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from . import distributed as dist

__all__ = ["show_bars", "bar", "say", "seconds"]


def show_bars(progress: bool | None) -> bool:
    """Whether to draw bars: asked for, or by default when stderr is a terminal; rank 0 only."""
    if progress is False:
        return False
    return (progress is True or sys.stderr.isatty()) and dist.is_main()


def bar(iterable=None, progress: bool | None = None, **kwargs):
    """A tqdm bar over ``iterable`` that disappears when done (the summary line says what happened)."""
    return tqdm(iterable, disable=not show_bars(progress), leave=False, **kwargs)


def say(line: str, progress: bool | None) -> None:
    """Print the summary ``line`` on stderr unless ``progress`` is False (rank 0 only)."""
    if progress is not False and dist.is_main():
        print(line, file=sys.stderr, flush=True)


def seconds(start: float) -> str:
    """Time since ``start`` (``time.perf_counter()``) as a summary writes it: ``0.4 s``, ``2 min 5 s``."""
    s = time.perf_counter() - start
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {round(s % 60)} s"
