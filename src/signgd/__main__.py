"""``python -m signgd`` / ``signgd``: the command entry (``--version``, ``demo``)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="signgd",
        description="Convert trained PyTorch networks into spiking neural networks with "
                    "sign-gradient-descent neuronal dynamics (Oh & Lee, ICML 2024).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="train a small CNN on scikit-learn's digits, convert it, and "
                                       "print ANN and SNN accuracy per number of time steps")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__
        print(f"signgd {__version__}")
        return 0
    if args.command == "demo":
        from .demo import run_demo
        run_demo(epochs=args.epochs, seed=args.seed)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
