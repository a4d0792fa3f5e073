"""Draw the accuracy-energy front from the Markdown tables ``benchmarks/energy.py`` wrote (its recorded
output), e.g. when a long run was stopped before it drew its plot, or several runs' tables together (the
same models on the same test images; each configuration at the T its run measured).

    python benchmarks/plot_front.py docs/energy_sparse_cnn.md docs/energy_sparse_cnn.png
    python benchmarks/plot_front.py docs/energy_sparse_cnn.md docs/energy_graded_cnn.md docs/energy_graded_front.png
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import energy  # this folder: a script's own folder is on sys.path

_SECTION = re.compile(r"^## (\S+)(?: \(ANN ([0-9.]+)%\))?")
_CELL = re.compile(r"([0-9.]+)% / ([0-9.]+)x")


def parse(text: str):
    """``(args, results)`` in the shape ``energy.plot`` takes."""
    names, labels, steps, results = [], [], [], {}
    name = None
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            name = m.group(1)
            names.append(name)
            if m.group(2):
                results[name, "ann"] = float(m.group(2)) / 100
            continue
        if name is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "configuration":
            steps = [int(c[2:]) for c in cells[1:-1]]
            continue
        rows = {t: (float(m.group(1)) / 100, float(m.group(2)), None)
                for t, c in zip(steps, cells[1:-1]) if (m := _CELL.match(c))}
        if rows:
            results[name, cells[0]] = (rows, 0.0)
            if cells[0] not in labels:
                labels.append(cells[0])
    return SimpleNamespace(names=names, labels=labels, steps=steps), results


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit(__doc__)
    args, results = merge([parse(Path(f).read_text()) for f in argv[:-1]])
    energy.plot(args, results, Path(argv[-1]))
    return 0


def merge(parsed):
    """One ``(args, results)`` from several ``parse`` results: the models and configurations of all, in order,
    every T any of them measured (a configuration is drawn at the T its run has)."""
    names, labels, steps, results = [], [], set(), {}
    for args, res in parsed:
        names += [n for n in args.names if n not in names]
        labels += [c for c in args.labels if c not in labels]
        steps |= set(args.steps)
        for key, value in res.items():
            results.setdefault(key, value)
    return SimpleNamespace(names=names, labels=labels, steps=sorted(steps)), results


if __name__ == "__main__":
    raise SystemExit(main())
