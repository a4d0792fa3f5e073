"""Power-of-two adaptive gains: what they cost in accuracy and what they save in energy.

An adaptive neuron (``signgd.schedules.adaptive``) steps by ``lr * g`` with its own gain ``g``, so every
receiver multiplies each synapse by the sender's step: a MAC per synapse per step. With
``adaptive(..., pow2=True)`` every step is a power of two and that multiply is an exponent add (an AC,
``signgd.costs``). This script converts the Fashion-MNIST VGG and ResNet with the tuner's adaptive
candidates, power-of-two versions of them and the paper's exponential schedule (also rounded), and reports accuracy and
energy per sample against the ANN (``signgd.report.make_report``, the honest counter) at each T, on a
seeded test subset (``--limit``).

    python benchmarks/adaptive_pow2.py --models vgg,resnet --limit 500 --threads 1 --out docs/adaptive_pow2.md
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402

import signgd  # noqa: E402
from signgd.report import make_report  # noqa: E402

#: The configurations: the tuner's adaptive candidates (signgd.tuning.ADAPTIVE), the same at lr 0.25 (what
#: pow2 rounds 0.2 to), their power-of-two versions (lr and each step's gain rounded), gains restricted to
#: exact powers of two (grow 2, shrink 0.5: no rounding needed), and the paper's exponential schedule.
CONFIGS = (
    ("adaptive 0.1/1.2/0.5", "adaptive:lr=0.1,grow=1.2,shrink=0.5"),
    ("adaptive 0.2/1.2/0.5", "adaptive:lr=0.2,grow=1.2,shrink=0.5"),
    ("adaptive 0.25/1.2/0.5", "adaptive:lr=0.25,grow=1.2,shrink=0.5"),
    ("pow2 0.125/1.2/0.5", "adaptive:lr=0.125,grow=1.2,shrink=0.5,pow2=1"),
    ("pow2 0.25/1.2/0.5", "adaptive:lr=0.25,grow=1.2,shrink=0.5,pow2=1"),
    ("pow2 0.25/1.1/0.6", "adaptive:lr=0.25,grow=1.1,shrink=0.6,pow2=1"),
    ("pow2 0.25/2/0.5", "adaptive:lr=0.25,grow=2,shrink=0.5,pow2=1"),
    ("exponential", "exponential"),
    ("exponential pow2", "exponential:lr=0.15,decay=0.95,pow2=1"),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg,resnet")
    p.add_argument("--T", default="8,16,32,64")
    p.add_argument("--limit", type=int, default=500, help="test images (a seeded subset)")
    p.add_argument("--calibration", type=int, default=1000)
    p.add_argument("--configs", default=None, help="comma-separated labels of CONFIGS to run (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    steps = sorted({int(t) for t in args.T.split(",") if t.strip()})
    configs = CONFIGS if not args.configs else [c for c in CONFIGS if c[0] in args.configs.split(",")]
    train28, test28, idx_test, idx_cal = arch.splits(args)
    began = time.perf_counter()
    lines = ["# Power-of-two adaptive gains: accuracy and energy", "", f"`{common.command_line()}`", "",
             f"Machine: {common.machine_line()}", "",
             f"Fashion-MNIST, {args.limit} test images (seeded subset), calibration {args.calibration} training "
             f"images, {threads} threads, float input. Energy per sample relative to the ANN's, both counted by "
             "`signgd.costs` (docs/energy.md): a pow2 adaptive receiver scales by the sender's step with an "
             "exponent add (an AC per synapse), a plain adaptive one multiplies (a MAC).", ""]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        header = "| schedule | " + " | ".join(f"T={t} acc / energy" for t in steps) + " |"
        rows, ann = [], None
        for label, spec in configs:
            start = time.perf_counter()
            snn = signgd.convert(model, calibration, schedule=spec)
            rep = make_report(snn, subset, steps, batch_size=250, progress=False)
            ann = rep["accuracy"]["ann"]
            cells = [f"{100 * a:.2f}% / {r:.3f}x" for a, r in zip(rep["accuracy"]["snn"],
                                                                 rep["energy"]["energy_ratio_to_ann"])]
            rows.append(f"| {label} (`{spec}`) | " + " | ".join(cells) + " |")
            common.log(f"{name} {label}: {common.fmt_seconds(time.perf_counter() - start)}")
        lines += [f"## {name} (ANN {100 * ann:.2f}% on these images)", "", header,
                  "|---|" + "---:|" * len(steps), *rows, ""]
        common.save_partial(lines, args.out)
    lines += [f"Total time: {common.fmt_seconds(time.perf_counter() - began)}.", ""]
    common.emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
