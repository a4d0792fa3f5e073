"""The ``signgd`` command (also ``python -m signgd``): demo, convert, evaluate, report, export.

``main(argv)`` parses, runs the command, and turns the usual mistakes (an unknown model, missing data,
weights that do not fit, an unsupported operation, a damaged file) into one line on stderr with the fix
and exit status 1 (2 for a bad argument); ``--traceback`` shows the full traceback instead.

Started by torchrun, ``demo``, ``convert`` and ``evaluate`` run data-parallel (``signgd.distributed``):
each rank simulates its shard of the test data, rank 0 prints and writes the report and the network.
"""
from __future__ import annotations

import sys

from .. import distributed as _dist
from .commands import run_convert, run_demo_command, run_evaluate, run_export, run_report
from .errors import EXIT_FAILURE, EXIT_USAGE, error_message
from .parser import build_parser
from .usage import UsageError

__all__ = ["main", "UsageError"]

_COMMANDS = {"demo": run_demo_command, "convert": run_convert, "evaluate": run_evaluate, "report": run_report,
             "export": run_export}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ..version import __version__
        print(f"signgd {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        # Under torchrun: join the process group for the command (NCCL on CUDA, gloo on CPU) and
        # leave it at the end; every rank computes, rank 0 prints and writes.
        with _dist.launched(getattr(args, "device", None)):
            log = print if _dist.is_main() else _silent
            return _COMMANDS[args.command](args, argv, log=log)
    except KeyboardInterrupt:
        print("signgd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the boundary: known mistakes become one line
        message = error_message(exc)
        if message is None or getattr(args, "traceback", False):
            raise
        print(f"signgd {args.command}: error{_dist.rank_label()}: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0: they compute, rank 0 speaks."""
