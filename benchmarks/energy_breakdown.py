"""Where a sparse or graded network's energy goes: synapses against neuron work, the neuron work split by
event (input elements that received something, targets evaluated again, spikes, checks of the gap) and by
target (gelu, square, divide_sqrt, relu, ...), and how often each target's neurons were evaluated and fired.

The counts are the report's (``signgd.report.energy.EnergyProbe``: ``signgd.costs.StepCounter`` on the run
loop), priced by ``signgd.costs.event_costs``; the split is only a different sum of the same numbers. Used to
see why the LayerNorm networks stay above their ANN's energy (docs/sparse.md)::

    python benchmarks/energy_breakdown.py --model mixer --limit 100 --T 8 --dynamics graded
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402

import signgd  # noqa: E402
from signgd import runner  # noqa: E402
from signgd.costs import EVENT_KINDS, EnergyModel, ann_energy, event_costs  # noqa: E402
from signgd.report.energy import EnergyProbe  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mixer", choices=sorted(arch.ARCHITECTURES))
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--dynamics", default="graded", choices=("sparse", "graded"))
    p.add_argument("--schedule", default=None, help="default: the dynamics' own")
    p.add_argument("--tolerance", type=float, default=None)
    p.add_argument("--start", default=None, help="where the estimates start (signgd.options.STARTS); default: the "
                   "dynamics' own")
    p.add_argument("--scale", default=None, choices=("max", "mean"), help="what each normalized element is divided by "
                   "(convert(scale=...)); default: max")
    common.add_subset_arguments(p, limit=100)
    return p.parse_args(argv)


class _SizedProbe(EnergyProbe):
    """The report's energy probe, also noting each neuron layer's size (neurons per sample)."""

    def __init__(self, snn, T: int):
        super().__init__(snn, T)
        self.sizes: dict[str, int] = {}

    def layer(self, name, t0, out):  # out: [steps, batch, ...]
        self.sizes[name] = out[0, 0].numel()
        super().layer(name, t0, out)


def breakdown(snn, data, T: int, model: EnergyModel = EnergyModel()) -> dict:
    """``{"ann_pj", "synapses_pj", "neurons": {(target, event): pj}, "per_neuron": {target: (evaluations,
    spikes)}, "sizes": {target: neurons per sample}, "accuracy", "samples"}`` per sample after ``T`` steps."""
    probe = _SizedProbe(snn, T)
    counts = runner.run(snn, data, [T], probe=probe, progress=False)
    n = counts.n
    synapses = probe.reduced.sum((0, 1)) / n  # [2]: ACs, MACs
    unit = event_costs(snn)
    neurons: dict[tuple[str, str], float] = defaultdict(float)
    evaluated: dict[str, float] = defaultdict(float)
    spikes: dict[str, float] = defaultdict(float)
    size: dict[str, int] = defaultdict(int)
    for name, ev in probe.events.items():
        total = ev.sum(0) / n  # [4]
        target = snn.neurons[name].target if name in snn.neurons else "readout"
        for k, what in enumerate(EVENT_KINDS):
            if what in unit.get(name, {}):
                neurons[target, what] += model.energy(*unit[name][what]) * float(total[k])
        if name in snn.neurons:
            evaluated[target] += float(total[1])
            spikes[target] += float(total[2])
            size[target] += probe.sizes[name]
    per_neuron = {t: (evaluated[t] / size[t], spikes[t] / size[t]) for t in size}
    return {"ann_pj": ann_energy(snn, model), "synapses_pj": model.energy(float(synapses[0]), float(synapses[1])),
            "neurons": dict(neurons), "per_neuron": per_neuron, "sizes": dict(size),
            "accuracy": counts.snn_correct[T] / n, "ann_accuracy": counts.ann_correct / n, "samples": n}


def main(argv=None) -> int:
    args = parse_args(argv)
    common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    model, _, subset, calibration = arch.prepared(args.model, arch.parse_args([]), train28, test28, idx_test, idx_cal)
    kwargs = {"dynamics": args.dynamics, "schedule": args.schedule, "tolerance": args.tolerance, "start": args.start,
              "scale": args.scale}
    snn = signgd.convert(model, calibration, **{k: v for k, v in kwargs.items() if v is not None})
    b = breakdown(snn, subset, args.T)
    ann = b["ann_pj"]
    neuron_total = sum(b["neurons"].values())
    lines = [f"`{common.command_line()}`", "", f"{args.model}, {snn.settings['dynamics']} neurons, {snn.schedule!r}, "
             f"tolerance {snn.settings['tolerance']:g}, scale {snn.settings.get('scale', 'max')}, T={args.T}, "
             f"{b['samples']} test images: SNN "
             f"{100 * b['accuracy']:.2f}% (ANN {100 * b['ann_accuracy']:.2f}%); energy per sample / the ANN's: "
             f"**{(b['synapses_pj'] + neuron_total) / ann:.3f}x** = synapses {b['synapses_pj'] / ann:.3f}x + neuron "
             f"work {neuron_total / ann:.3f}x", "",
             "| target | " + " | ".join(EVENT_KINDS) + " | all | evaluations per neuron | spikes per neuron |",
             "|---|" + "---:|" * (len(EVENT_KINDS) + 3)]
    for target in sorted({t for t, _ in b["neurons"]}, key=lambda t: -sum(v for (u, _), v in b["neurons"].items()
                                                                          if u == t)):
        cells = [b["neurons"].get((target, what), 0.0) / ann for what in EVENT_KINDS]
        ev, sp = (f"{v:.2f}" for v in b["per_neuron"][target]) if target in b["per_neuron"] else ("-", "-")
        lines.append(f"| {target} | " + " | ".join(f"{c:.3f}x" for c in cells)
                     + f" | {sum(cells):.3f}x | {ev} | {sp} |")
    common.append_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
