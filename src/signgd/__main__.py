"""``python -m signgd``: the same command as the ``signgd`` console script (``signgd.cli``)."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
