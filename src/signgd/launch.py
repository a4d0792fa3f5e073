"""How the ``signgd`` command starts its process: the OpenMP wait policy, chosen before torch loads.

torch's OpenMP runtime (libgomp) reads ``OMP_WAIT_POLICY`` once, when ``import torch`` loads it. Its
default lets an idle worker thread spin for a while before it sleeps; on a machine whose cores are
all taken (another process computing), a spinning thread holds the core that the thread it waits
for needs, and the demo took 281 s instead of 16 s on 2 cores (docs/first_contact.md). The command
(``python -m signgd`` and the ``signgd`` console script) owns its process, so it asks for
``PASSIVE`` (sleep at once) unless the user chose a policy. This runs from ``signgd/__init__.py``
before anything imports torch, and only when the process was started as the command: importing
signgd as a library changes nothing (set ``OMP_WAIT_POLICY=PASSIVE`` yourself on a shared machine).

No torch and no other signgd import here: this module must run before them.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["started_as_command", "choose_wait_policy", "WAIT_POLICY"]

#: The policy the command sets when the user set none.
WAIT_POLICY = "PASSIVE"
_MODULES = ("signgd", "signgd.__main__")
_SCRIPTS = ("signgd", "signgd.exe", "signgd-script.py")


def started_as_command(orig_argv: list[str] | None = None, argv0: str | None = None) -> bool:
    """Whether this process is the ``signgd`` command: ``python -m signgd ...`` (torchrun's workers
    too) or the console script (its file is named ``signgd``)."""
    orig_argv = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    argv0 = (sys.argv[0] if sys.argv else "") if argv0 is None else argv0
    for i, arg in enumerate(orig_argv[1:], 1):
        if arg == "-m":
            return i + 1 < len(orig_argv) and orig_argv[i + 1] in _MODULES
        if arg.startswith("-m") and len(arg) > 2:  # python -msigngd
            return arg[2:] in _MODULES
        if arg == "-c" or not arg.startswith("-"):  # a script or -c: the options of python end here
            break
    return Path(argv0).name in _SCRIPTS


def choose_wait_policy(environ=None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for the command when the user has not set it; True if set here."""
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in environ or not started_as_command():
        return False
    environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True
