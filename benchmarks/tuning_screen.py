"""What the tuner's screen (successive halving) costs and saves: the default ``convert`` with and without it.

``signgd.tuning.tune_schedule`` first scores every candidate schedule on ``SCREEN_SAMPLES`` samples and the
first half of ``DEFAULT_STEPS``, then the ``SURVIVORS`` best (and the paper's) in full. For each model this
runs the default tuning (T in ``DEFAULT_STEPS``) both ways on the same calibration samples, in one process,
and reports:

- the tuning time with and without the screen (a ratio measured in one run);
- the schedule each picks, and the full score (agreement with the ANN, relative error; mean over the T)
  that the unscreened tuner measured for both: the screen loses nothing when it picks the same schedule or
  one whose full score ties the best;
- Fashion-MNIST models (``vgg``, ``resnet``, ``mixer``; calibration: 256 training images, the default's
  tuning samples): test accuracy of both choices at each T; zoo models (``torchvision:NAME`` or
  ``timm:NAME``: random init, ``torch.randn(16, ...)`` as in benchmarks/zoo.py): the tracking error at T=32
  and T=256 on another random batch of 4.

    python benchmarks/tuning_screen.py --models vgg,resnet,mixer,torchvision:resnet18,torchvision:mobilenet_v2 \\
        --out docs/tuning_screen.md
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
import torch  # noqa: E402
import zoo_models  # noqa: E402

import signgd  # noqa: E402
from signgd.convert import TUNING_SAMPLES  # noqa: E402
from signgd.tuning import DEFAULT_STEPS, tune_schedule  # noqa: E402

STEPS = (8, 16, 32, 64)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg,resnet,mixer,torchvision:resnet18,torchvision:mobilenet_v2")
    p.add_argument("--limit", type=int, default=1000, help="test images for the Fashion-MNIST models")
    p.add_argument("--calibration", type=int, default=TUNING_SAMPLES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def _prepared(name, args, data):
    """``(snn, calibration, evaluate)``: the converted network (schedule fixed, so nothing is tuned yet), its
    tuning samples, and a function giving a choice's test result as text."""
    if ":" not in name:
        train28, test28, idx_test, idx_cal = data
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        snn = signgd.convert(model, calibration, schedule="exponential", encoding="analog", progress=False)

        def evaluate(schedule):
            snn.schedule = schedule
            report = signgd.evaluate(snn, subset, T=list(STEPS), batch_size=250, progress=False)
            return (f"ANN {100 * report.ann_accuracy:.2f}; "
                    + ", ".join(f"{100 * report.snn_accuracy[t]:.2f}" for t in STEPS))
        return snn, calibration[:TUNING_SAMPLES], evaluate
    model, side, _ = zoo_models.build_sized(name, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    calibration = torch.randn(16, 3, side, side, generator=gen)
    x = torch.randn(4, 3, side, side, generator=gen)
    snn = signgd.convert(model, calibration, schedule="exponential", encoding="analog", progress=False)
    with torch.inference_mode():
        reference = model(x)

    def evaluate(schedule):
        snn.schedule = schedule
        outs = snn(x, T=[32, 256])
        errors = [float((outs[t] - reference).norm() / reference.norm()) for t in (32, 256)]
        return f"error T=32 {errors[0]:.3g}, T=256 {errors[1]:.3g}"
    return snn, calibration, evaluate


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    data = arch.splits(args) if any(":" not in n for n in names) else None
    lines = ["# The tuner's screen: what it saves and what it costs", "", f"`{common.command_line()}`", "",
             f"Machine: {common.machine_line()}", "",
             f"{threads} torch threads. The default tuning (T in {set(DEFAULT_STEPS)}) with and without the screen "
             "on the same samples, in one process. Full score: agreement with the ANN (%) / relative error, mean "
             "over the T, as the unscreened tuner measured it on all tuning samples. Test: Fashion-MNIST accuracy "
             f"at T={', '.join(map(str, STEPS))} on {args.limit} test images (ANN first), or for random-init zoo "
             "models the tracking error on another random batch.", "",
             "| model | samples | time full | time screened | ratio | full's choice | screened's choice | "
             "full score (full's / screened's) | test (full's choice) | test (screened's choice) |",
             "|---|---:|---:|---:|---:|---|---|---|---|---|"]
    for name in names:
        snn, calibration, evaluate = _prepared(name, args, data)
        t0 = time.perf_counter()
        full = tune_schedule(snn, calibration, DEFAULT_STEPS, screen=False, progress=False)
        t1 = time.perf_counter()
        screened = tune_schedule(snn, calibration, DEFAULT_STEPS, progress=False)
        t2 = time.perf_counter()
        scores = {repr(c.schedule): c for c in full.candidates}
        a, b = full.best, scores[repr(screened.schedule)]
        same = repr(full.schedule) == repr(screened.schedule)
        test_full = evaluate(full.schedule)
        test_screened = test_full if same else evaluate(screened.schedule)
        row = (f"| {name} | {calibration.shape[0]} | {t1 - t0:.1f} s | {t2 - t1:.1f} s | {(t2 - t1) / (t1 - t0):.2f} | "
               f"{full.schedule!r} | {'same' if same else repr(screened.schedule)} | "
               f"{100 * a.agreement:.2f} / {a.error:.4f}; {100 * b.agreement:.2f} / {b.error:.4f} | {test_full} | "
               f"{'same' if same else test_screened} |")
        lines.append(row)
        common.log(row)
        common.save_partial(lines, args.out)
    common.emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
