"""Where sparse signGD estimates start (``convert(start=...)``): accuracy and energy against the ANN.

A sparse neuron pays for every step it moves, so where its estimate starts decides much of its cost, and a
start on the wrong side of a target it then settles within ``tolerance * eta_t`` of biases what it sends.
For one fixed sparse configuration (``--schedule``, ``--tolerance``: nothing tuned), this converts the model
once per start and measures accuracy (``signgd.evaluate``) and energy (``signgd.report.make_report``, the
counter of ``signgd.costs``) at each T:

- ``zero`` (the paper's start), ``variance`` (the norms' variance neurons at their mean), ``mean`` (every
  neuron at its calibration mean);
- ``active@q``: every element at its calibration mean where its output was positive on at least a share ``q``
  of the calibration samples, else 0 (``start="active"``, whose share is ``signgd.options.ACTIVE_SHARE``;
  the other shares are set here to measure the choice).

    python benchmarks/sparse_start.py --models resnet --limit 1000 --T 16,32 \\
        --starts zero,mean,active@0.5,active@0.65,active@0.8,active@0.9,active@0.95 --out docs/sparse_start.md
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
import torch  # noqa: E402

import signgd  # noqa: E402
import signgd.options  # noqa: E402
from signgd.report import make_report  # noqa: E402

SCHEDULE = "exponential:lr=0.5,decay=0.87,floor=0.03125,pow2=1"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet")
    p.add_argument("--T", default="16,32")
    p.add_argument("--limit", type=int, default=1000, help="test images for accuracy (a seeded subset)")
    p.add_argument("--energy-limit", type=int, default=500, help="of those, the images the energy is counted on")
    p.add_argument("--calibration", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--schedule", default=SCHEDULE)
    p.add_argument("--tolerance", type=float, default=0.75)
    p.add_argument("--starts", default="zero,mean,active@0.5,active@0.8,active@0.95")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def _start(spec: str) -> tuple[str, float | None]:
    """``"active@0.8"`` -> ("active", 0.8); ``"mean"`` -> ("mean", None)."""
    name, _, share = spec.partition("@")
    return name, (float(share) if share else None)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    steps = [int(t) for t in args.T.split(",") if t.strip()]
    train28, test28, idx_test, idx_cal = arch.splits(args)
    default_share = signgd.options.ACTIVE_SHARE
    lines = ["# Where sparse estimates start: accuracy and energy", "", f"`{common.command_line()}`", "",
             f"Machine: {common.machine_line()}", "",
             f"Fashion-MNIST, {args.limit} test images (seeded subset; energy on the first {args.energy_limit}), "
             f"calibration {args.calibration} training images, {threads} threads. Fixed sparse configuration "
             f"`{args.schedule}`, tolerance {args.tolerance:g} (nothing tuned). Each cell: SNN accuracy (points vs "
             f"the ANN) / energy relative to the ANN's (signgd.costs, docs/energy.md). `active@q`: an element starts "
             f"at its calibration mean where its output was positive on at least a share q of the calibration "
             f"samples, else at 0 (the library's `start=\"active\"` uses q = {default_share:g}).", ""]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        energy_subset = torch.utils.data.Subset(subset, range(min(args.energy_limit, len(subset))))
        ann = None
        rows = []
        for spec in [s.strip() for s in args.starts.split(",") if s.strip()]:
            start, share = _start(spec)
            signgd.options.ACTIVE_SHARE = default_share if share is None else share
            t0 = time.perf_counter()
            try:
                snn = signgd.convert(model, calibration, dynamics="sparse", schedule=args.schedule,
                                     tolerance=args.tolerance, start=start, progress=False)
            finally:
                signgd.options.ACTIVE_SHARE = default_share
            started = sum(int(m.start.ne(0).sum()) for m in snn.neurons.values() if m.start.dim())
            accuracy = signgd.evaluate(snn, subset, T=steps, batch_size=250, progress=False)
            rep = make_report(snn, energy_subset, steps, batch_size=250, progress=False)
            ann = accuracy.ann_accuracy
            cells = [f"{100 * accuracy.snn_accuracy[t]:.2f}% ({100 * (accuracy.snn_accuracy[t] - ann):+.2f}) / "
                     f"{rep['energy']['energy_ratio_to_ann'][i]:.3f}x" for i, t in enumerate(steps)]
            rows.append(f"| {spec} | {started} | " + " | ".join(cells) + " |")
            common.log(f"{name} {spec}: {cells} ({time.perf_counter() - t0:.0f} s; {started} "
                       f"elements started away from 0)")
        lines += [f"## {name} (ANN {100 * ann:.2f}%)", "",
                  "| start | neurons not started at 0 (per sample) | " + " | ".join(f"T={t}" for t in steps) + " |",
                  "|---|---:|" + "---:|" * len(steps), *rows, ""]
        common.save_partial(lines, args.out)
    common.emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
