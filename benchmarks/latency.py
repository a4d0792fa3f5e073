"""Accuracy at few time steps: the paper preset, the default, each remedy alone, and convert(T=...).

For the Fashion-MNIST VGG of ``benchmarks/accuracy.py`` and the models of
``benchmarks/architectures.py`` (trained or loaded from ``benchmarks/.cache/``), prints ANN accuracy
and SNN accuracy at T = 4, 8, 16, 32, 64 for these configurations of ``signgd.convert``:

- ``paper``: ``preset="paper"`` (ReLUs normalized only, float encoding, exponential(0.15, 0.95));
- ``default``: ``convert(model, calibration)`` (every neuron normalized, analog encoding, one schedule
  tuned across T in {8, 16, 32, 64} on the first 256 calibration samples);
- ``untuned default``: the default before it was tuned (every neuron normalized, float encoding, the
  paper's schedule), ``convert(..., schedule="exponential", encoding="float")``;
- the remedies alone, each added to the paper preset: ``normalize="all"``; ``encoding="analog"``;
  the schedule tuned for each T (``signgd.tuning``);
- ``convert(T=T)``: the low-latency configuration (every neuron normalized, analog encoding, the
  schedule tuned for that T on the first 256 calibration samples);
- ``default + adaptive``: the default with a fixed ``adaptive(0.2, 1.1, 0.6)`` schedule, to test
  whether per-neuron steps could be the default without T.

A tuned configuration is converted once and its schedule tuned for each T in turn (exactly what
``convert(..., T=T)`` does, without recalibrating), then evaluated at that T only. Writes the
Markdown report (``--out``) and a plot of accuracy against T (``--plot``)::

    python benchmarks/latency.py --models vgg --limit 10000 --out docs/latency_vgg.md
    python benchmarks/latency.py --models resnet,convnext,mixer,resmlp,vit --limit 1000 \\
        --out docs/latency.md --plot docs/latency.png
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402

import signgd  # noqa: E402
from signgd.convert import TUNING_SAMPLES  # noqa: E402
from signgd.tuning import tune_schedule  # noqa: E402

DEFAULT_T = (4, 8, 16, 32, 64)
# label -> (convert kwargs, tune the schedule for each T, ablation row)
CONFIGS = {
    "paper": ({"preset": "paper"}, False, False),
    "default": ({}, False, False),
    # the default before issue 17: every neuron normalized, float input, the paper's schedule untuned
    "untuned default": ({"schedule": "exponential", "encoding": "float"}, False, False),
    "paper + normalize all": ({"preset": "paper", "normalize": "all"}, False, True),
    "paper + analog": ({"preset": "paper", "encoding": "analog"}, False, True),
    "paper + tuned schedule": ({"preset": "paper"}, True, True),
    "convert(T=T)": ({"encoding": "analog"}, True, False),
    # would a fixed adaptive schedule make a better default (no T given)?
    "default + adaptive": ({"schedule": "adaptive:lr=0.2,grow=1.1,shrink=0.6"}, False, False),
    # the same with the tail the tuner now gives adaptive candidates (the base step lr * 64 / t past T=64)
    "default + adaptive tail": ({"schedule": "adaptive:lr=0.2,grow=1.1,shrink=0.6,tail=64"}, False, False),
}
MAIN = ("paper", "untuned default", "default", "convert(T=T)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=",".join(arch.ARCHITECTURES), help="comma-separated architectures")
    p.add_argument("--T", default=",".join(map(str, DEFAULT_T)), help="comma-separated time steps")
    p.add_argument("--limit", type=int, default=1000, help="test images (a seeded random subset)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    p.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    p.add_argument("--batch-size", type=int, default=250, help="evaluation batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    p.add_argument("--plot", type=Path, default=None, help="write accuracy against T to this PNG")
    args = p.parse_args(argv)
    args.names = [m.strip() for m in args.models.split(",") if m.strip()]
    args.labels = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [m for m in args.names if m not in arch.ARCHITECTURES] + [c for c in args.labels if c not in CONFIGS]
    if bad:
        p.error(f"unknown model(s) or configuration(s) {bad}; models: {list(arch.ARCHITECTURES)}, "
                f"configurations: {list(CONFIGS)}")
    try:
        args.steps = sorted({int(t) for t in args.T.split(",") if t.strip()})
    except ValueError:
        p.error(f"--T must be comma-separated integers, got {args.T!r}")
    return args


def run_config(model, calibration, test_set, steps, label, batch_size):
    """SNN accuracy per T for one configuration, and the schedule used at each T."""
    kwargs, tuned, _ = CONFIGS[label]
    snn = signgd.convert(model, calibration, **kwargs)
    if not tuned:
        report = signgd.evaluate(snn, test_set, T=steps, batch_size=batch_size, progress=False)
        return report.ann_accuracy, report.snn_accuracy, {t: snn.schedule for t in steps}
    accuracy, schedules, ann = {}, {}, None
    for T in steps:
        snn.schedule = tune_schedule(snn, calibration[:TUNING_SAMPLES], T).schedule
        report = signgd.evaluate(snn, test_set, T=[T], batch_size=batch_size, progress=False)
        accuracy[T], schedules[T], ann = report.snn_accuracy[T], snn.schedule, report.ann_accuracy
    return ann, accuracy, schedules


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    results = {}  # (model, label) -> (ann, {T: acc}, {T: schedule}, seconds)
    for name in args.names:
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        for label in args.labels:
            start = time.perf_counter()
            ann, acc, schedules = run_config(model, calibration, subset, args.steps, label, args.batch_size)
            seconds = time.perf_counter() - start
            results[name, label] = (ann, acc, schedules, seconds)
            common.log(f"{name} [{label}]: ANN {100 * ann:.2f}%, SNN "
                       + ", ".join(f"T={t}: {100 * a:.2f}" for t, a in acc.items())
                       + f" ({common.fmt_seconds(seconds)})")
    common.emit(render(args, results, threads), args.out)
    if args.plot:
        plot(args, results, args.plot)
    return 0


def _row(name, label, results, steps):
    ann, acc, _, seconds = results[name, label]
    cells = " | ".join(f"{100 * acc[t]:.2f}" for t in steps)
    return f"| {name} | {label} | {100 * ann:.2f} | {cells} | {common.fmt_seconds(seconds)} |"


def render(args, results, threads) -> str:
    head = "| model | configuration | ANN | " + " | ".join(f"T={t}" for t in args.steps) + " | time |"
    rule = "|---|---|---:|" + "---:|" * len(args.steps) + "---:|"
    lines = [
        "# Latency: SNN accuracy at few time steps on Fashion-MNIST",
        "",
        f"Generated by `benchmarks/latency.py`; rerun to refresh. Command: `{common.command_line()}`",
        "",
        f"Machine: {common.machine_line()} ({threads} torch threads)",
        "",
        f"Models as in docs/architectures.md (the VGG as in docs/accuracy.md), calibrated on {args.calibration} "
        f"training images, evaluated on {args.limit} test images (a subset fixed by seed {args.seed}). "
        f"Tuned rows: the schedule tuned for each T on the first {TUNING_SAMPLES} calibration images "
        f"(`signgd.tuning`), then evaluated at that T.",
        "",
        "## Paper preset, default, and convert(T=T)",
        "",
        head, rule,
    ]
    for name in args.names:
        lines += [_row(name, label, results, args.steps) for label in args.labels if not CONFIGS[label][2]]
    ablation = [label for label in args.labels if CONFIGS[label][2]]
    if ablation:
        lines += ["", "## Ablation: each remedy alone, added to the paper preset", "", head, rule]
        for name in args.names:
            lines += [_row(name, label, results, args.steps) for label in ("paper", *ablation)
                      if (name, label) in results]
    tuned = [label for label in args.labels if CONFIGS[label][1]]
    if tuned:
        lines += ["", "## Schedules chosen by tuning", "",
                  "exp: `exponential(lr, decay)`; ada: `adaptive(lr, grow, shrink)` (per-neuron steps, "
                  "`signgd.schedules.adaptive`).", "",
                  "| model | configuration | " + " | ".join(f"T={t}" for t in args.steps) + " |",
                  "|---|---|" + "---|" * len(args.steps)]
        for name in args.names:
            for label in tuned:
                schedules = results[name, label][2]
                lines.append(f"| {name} | {label} | " + " | ".join(
                    _short(schedules[t]) for t in args.steps) + " |")
    return "\n".join(lines)


def _short(schedule) -> str:
    name = {"exponential": "exp", "adaptive": "ada"}.get(schedule.name, schedule.name)
    return f"{name} " + ", ".join(f"{v:g}" for v in schedule.params.values())


def plot(args, results, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(args.names)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, args.names):
        ann = None
        for label in args.labels:
            if label in MAIN and (name, label) in results:
                ann, acc, _, _ = results[name, label]
                ax.plot(args.steps, [100 * acc[t] for t in args.steps], marker="o", label=label)
        if ann is not None:
            ax.axhline(100 * ann, color="k", ls="--", lw=1, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.steps, [str(t) for t in args.steps])
        ax.set_title(name)
        ax.set_xlabel("time steps T")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    common.log(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
