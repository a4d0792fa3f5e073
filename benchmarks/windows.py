"""Graded networks with layer windows (``convert(window=k)``, ``signgd.windows``): accuracy and energy against the
ANN at the step their output settles, beside the graded network without windows.

For each model and configuration: ``convert(model, calibration, dynamics="graded", scale=..., schedule=
exponential(2 * band, 1), window=k)``; the accuracy (``signgd.evaluate``) on ``--limit`` test images at its settled
step ``snn.settled_step()`` (or at each of ``--T`` without windows), and the energy by the report's counter
(``energy_breakdown.breakdown``: synapses, neuron work, evaluations and spikes per neuron) on the first
``--energy-limit`` of them (an average that settles on far fewer images than the accuracy). Configurations are
``k<window>/band<1/n>`` (``none/band1/32`` for no windows)::

    python benchmarks/windows.py --models mixer --configs k3/band1/32,k4/band1/32 --out docs/windows.md
"""
from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
from energy_breakdown import breakdown  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

import signgd  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mixer,vit")
    p.add_argument("--configs", default="k3/band1/32,k4/band1/32,k4/band1/64",
                   help="comma-separated k<window>/band<fraction> (none: no windows)")
    p.add_argument("--T", default="4,6,8", help="the steps a configuration without windows is measured at")
    p.add_argument("--scale", default="mean", choices=("max", "mean"))
    common.add_full_test_arguments(p)
    p.add_argument("--plot", type=Path, default=None, help="draw accuracy against energy here (PNG)")
    args = p.parse_args(argv)
    args.steps = sorted({int(t) for t in args.T.split(",") if t.strip()})
    args.names = [m.strip() for m in args.models.split(",") if m.strip()]
    args.parsed = [parse_config(c.strip()) for c in args.configs.split(",") if c.strip()]
    return args


def parse_config(text: str) -> tuple[int | None, Fraction]:
    """``"k4/band1/32"`` -> ``(4, 1/32)``; ``"none/band1/32"`` -> ``(None, 1/32)``."""
    window, _, band = text.partition("/band")
    if not band or not (window == "none" or window.startswith("k")):
        raise SystemExit(f"bad configuration {text!r}: write k<window>/band<fraction>, e.g. k4/band1/32")
    return (None if window == "none" else int(window[1:])), Fraction(band)


def measure(model, calibration, subset, window, band, args) -> list[dict]:
    """One row per step measured: the settled step with windows, each of ``--T`` without."""
    kwargs = {"window": window} if window is not None else {}
    snn = signgd.convert(model, calibration, dynamics="graded", scale=args.scale,
                         schedule=f"exponential:lr={float(2 * band)},decay=1.0", tolerance=0.5, progress=False,
                         **kwargs)
    steps = [snn.settled_step()] if window is not None else args.steps
    began = time.perf_counter()
    rep = signgd.evaluate(snn, subset, steps, progress=False)
    rows = []
    for T in steps:
        b = breakdown(snn, Subset(subset, range(min(args.energy_limit, len(subset)))), T)
        ann = b["ann_pj"]
        neurons = sum(b["neurons"].values())
        total = sum(b["sizes"].values())
        rows.append({"T": T, "snn": rep.snn_accuracy[T], "ann": rep.ann_accuracy,
                     "energy": (b["synapses_pj"] + neurons) / ann, "synapses": b["synapses_pj"] / ann,
                     "neurons": neurons / ann, "seconds": time.perf_counter() - began,
                     "evaluations": sum(e * b["sizes"][t] for t, (e, _) in b["per_neuron"].items()) / total,
                     "spikes": sum(s * b["sizes"][t] for t, (_, s) in b["per_neuron"].items()) / total})
    return rows


def plot(names, results, path: Path) -> None:
    """Accuracy against energy per model: the graded network without windows over T (a line), each windowed
    configuration at its settled step (a point), the ANN's accuracy and the ANN's energy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        ann = None
        for window, band, rows in results[name]:
            ann = rows[0]["ann"]
            xs, ys = [r["energy"] for r in rows], [100 * r["snn"] for r in rows]
            if window is None:
                ax.plot(xs, ys, "o-", label=f"graded, band {band}, no windows (T={rows[0]['T']}..{rows[-1]['T']})")
            else:
                ax.plot(xs, ys, "s", markersize=8, label=f"graded, band {band}, window {window} (T={rows[0]['T']})")
        ax.axhline(100 * ann, color="black", linestyle="--", label="ANN")
        ax.axhline(100 * ann - 1, color="black", linestyle=":", linewidth=0.8, label="ANN - 1 point")
        ax.axvline(1.0, color="gray", linestyle=":")
        ax.set_xlabel("energy / ANN energy")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    lines = [f"`{common.command_line()}`", "", f"Machine: {common.machine_line()}", "",
             f"Fashion-MNIST, accuracy on {args.limit} test images, energy on the first {args.energy_limit} of them, "
             f"calibration {args.calibration} training images, {threads} threads; graded neurons, scale "
             f"{args.scale}, tolerance 0.5. Energy per sample relative to the ANN's (signgd.costs, docs/energy.md); "
             f"evaluations and spikes per neuron over the run, all neuron layers together.", ""]
    results = {}
    for name in args.names:
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        results[name] = []
        for window, band in args.parsed:
            common.log(f"{name}: window {window}, band {band}")
            rows = measure(model, calibration, subset, window, band, args)
            results[name].append((window, band, rows))
            for r in rows:
                common.log(f"{name}: window {window}, band {band}: T={r['T']} {100 * r['snn']:.2f}% (ANN "
                           f"{100 * r['ann']:.2f}%) {r['energy']:.3f}x ({common.fmt_seconds(r['seconds'])})")
        ann = results[name][0][2][0]["ann"]
        lines += [f"## {name} (ANN {100 * ann:.2f}%)", "",
                  "| window | band | T | SNN accuracy | vs ANN (points) | energy / ANN | synapses | neuron work | "
                  "evaluations per neuron | spikes per neuron |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for window, band, rows in results[name]:
            lines += [f"| {window or 'none'} | {band} | {r['T']} | {100 * r['snn']:.2f}% | "
                      f"{100 * (r['snn'] - r['ann']):+.2f} | **{r['energy']:.3f}x** | {r['synapses']:.3f}x | "
                      f"{r['neurons']:.3f}x | {r['evaluations']:.2f} | {r['spikes']:.2f} |" for r in rows]
        lines.append("")
        common.save_partial(lines, args.out)
        if args.plot:
            plot([n for n in args.names if n in results], results, args.plot)
    common.emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
