"""``preset="low-energy"`` on the full Fashion-MNIST test set: accuracy, energy against the ANN, and the
firing rate once the network has settled.

For each model: ``convert(model, calibration, preset="low-energy")`` (the tuning picks the schedule,
tolerance and T), then the accuracy (``signgd.evaluate``) on all 10 000 test images at the tuned T and
at 16, 32 and 64, and the report (``signgd.report.make_report``: energy by the counter of
``signgd.costs``, spike counts) on ``--energy-limit`` of them (a seeded subset: the energy per sample
is an average that settles on far fewer images than the accuracy, and counting costs about a pass of
the graph per step). The firing rate "at convergence" is the spikes per neuron per step over the second
half of the run (steps T/2+1..T); the cumulative rate is over steps 1..T.

    python benchmarks/sparse_full.py --models vgg,resnet --out docs/sparse_full.md

``--schedule S --tolerance F`` measures a fixed sparse configuration instead of the preset (nothing tuned;
``--T`` gives the steps; ``--dynamics graded``: the graded neuron):

    python benchmarks/sparse_full.py --models resnet --schedule exponential:lr=0.5,decay=0.87,floor=0.03125,pow2=1 \
        --tolerance 0.75 --start mean --T 16,32,64
"""
from __future__ import annotations

import argparse
import time

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
import torch  # noqa: E402

import signgd  # noqa: E402
from signgd.report import make_report  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg,resnet")
    p.add_argument("--T", default="16,32,64", help="steps measured besides the tuned T")
    common.add_full_test_arguments(p)
    p.add_argument("--schedule", default=None, help="a fixed sparse schedule instead of the preset's tuning")
    p.add_argument("--dynamics", default="sparse", choices=("sparse", "graded"),
                   help="with --schedule: the dynamics (graded: spikes that carry a power of two); without: "
                        "graded restricts the preset to graded neurons (default: it picks sparse or graded)")
    p.add_argument("--tolerance", type=float, default=0.5, help="with --schedule: the sparse tolerance")
    p.add_argument("--start", default=None, help="where the estimates start (convert's start; default: its default)")
    return p.parse_args(argv)


def _late_rate(layers, steps, t_hi) -> float:
    """Spikes per neuron per step over steps t_hi/2+1 .. t_hi (needs t_hi/2 among the steps)."""
    t_lo = t_hi // 2
    i_lo, i_hi = steps.index(t_lo), steps.index(t_hi)
    neurons = sum(layer["neurons"] for layer in layers)
    spikes = sum(layer["spikes_per_sample"][i_hi] - layer["spikes_per_sample"][i_lo] for layer in layers)
    return spikes / (neurons * (t_hi - t_lo))


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    what = (f"{args.dynamics} `{args.schedule}`, tolerance {args.tolerance:g}, start {args.start or 'default'}"
            if args.schedule
            else '`preset="low-energy"`' + (", graded neurons only" if args.dynamics == "graded" else "")
            + (f", start {args.start!r}" if args.start else ""))
    lines = [f"# {what} on the full test set", "", f"`{common.command_line()}`", "",
             f"Machine: {common.machine_line()}", "",
             f"Fashion-MNIST, {args.limit} test images, calibration {args.calibration} training images, {threads} "
             "threads. Energy per sample relative to the ANN's, both counted by `signgd.costs` (docs/energy.md). "
             "Firing: spikes per neuron per step, over steps 1..T (cumulative) and over the second half "
             "T/2+1..T (settled).", ""]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        start = time.perf_counter()
        if args.schedule:
            snn = signgd.convert(model, calibration, dynamics=args.dynamics, schedule=args.schedule,
                                 tolerance=args.tolerance, start=args.start)
        else:
            # dynamics="sparse" (the default): the preset tries sparse and graded neurons; "graded": graded only
            snn = signgd.convert(model, calibration, preset="low-energy", dynamics=args.dynamics, start=args.start)
        seconds = time.perf_counter() - start
        tuned = snn.settings.get("tuned_for")
        wanted = sorted({*([tuned] if tuned else []), *(int(t) for t in args.T.split(",") if t.strip())})
        steps = sorted({*wanted, *(t // 2 for t in wanted if t > 1)})
        accuracy = signgd.evaluate(snn, subset, T=steps, batch_size=250)
        energy_subset = torch.utils.data.Subset(subset, range(min(args.energy_limit, len(subset))))
        rep = make_report(snn, energy_subset, steps, batch_size=250, progress=False)
        ann = accuracy.ann_accuracy
        chosen = (f"Fixed (no tuning): {snn.settings['dynamics']} neurons, {snn.schedule!r}, tolerance "
                  f"{snn.settings['tolerance']:g}, start "
                  f"{snn.settings.get('start', 'zero')!r} (conversion: {common.fmt_seconds(seconds)})." if args.schedule
                  else f"Chosen: {snn.settings['dynamics']} neurons, {snn.schedule!r}, tolerance "
                  f"{snn.settings['tolerance']:g}, scale {snn.settings.get('scale', 'max')}, layer windows "
                  f"{snn.settings.get('window') or 'none'}, tuned T={tuned} "
                  f"(conversion with tuning: {common.fmt_seconds(seconds)}; on the tuning samples "
                  f"{100 * snn.tuning.best.agreement:.1f}% agreement, {snn.tuning.best.energy_ratio:.3f}x).")
        lines += [f"## {name} (ANN {100 * ann:.2f}%)", "", chosen, "",
                  f"Accuracy on {accuracy.n} test images; energy and firing on {rep['samples']} of them.", "",
                  "| T | SNN accuracy | vs ANN (points) | energy / ANN | firing 1..T | firing T/2+1..T |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for t in wanted:
            i = steps.index(t)
            acc = accuracy.snn_accuracy[t]
            cumulative = sum(layer["spikes_per_sample"][i] for layer in rep["layers"]) / (
                sum(layer["neurons"] for layer in rep["layers"]) * t)
            late = _late_rate(rep["layers"], steps, t) if t > 1 else cumulative
            lines.append(f"| {t}{' (tuned)' if t == tuned else ''} | {100 * acc:.2f}% | {100 * (acc - ann):+.2f} | "
                         f"{rep['energy']['energy_ratio_to_ann'][i]:.3f}x | {100 * cumulative:.1f}% | "
                         f"{100 * late:.1f}% |")
        lines.append("")
        common.log(f"{name}: done")
        common.save_partial(lines, args.out)
    common.emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
