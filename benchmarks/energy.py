"""Accuracy against energy (the Pareto front) on the Fashion-MNIST models of the benchmarks.

For each model (``benchmarks/architectures.py``: vgg, resnet, mixer, vit, ...) and configuration,
the SNN's test accuracy and its energy per sample relative to the ANN's at each T, by the cost model
of ``signgd.report.energy`` (``docs/energy.md``):

- ``default``: ``convert(model, calibration)`` (one schedule tuned across T = 8..64);
- ``exponential float``: the default before it was tuned (``schedule="exponential", encoding="float"``);
- ``convert(T=T)``: the low-latency configuration, tuned for each T of ``--tuned-T`` (tuning tries
  22 schedules at that T, so it is measured at the low T it is for);
- ``paper``: ``preset="paper"``;
- ``subgradient``: the integrate-and-fire baseline of the paper (``dynamics="subgradient"``, ReLU nets);
- ``low-energy``: ``preset="low-energy"`` (sparse neurons; schedule, tolerance and T tuned for the least
  energy that agrees with the ANN, ``signgd.energy_tuning.tune_energy``), measured at every T; ``low-energy(T=T)``
  tuned for each T of ``--tuned-T``;
- ``sparse tol0.5``, ``sparse floor+pow2 tol0.75``: the sparse neuron with fixed schedules (docs/sparse.md),
  its variance neurons starting at their calibration mean (``start="variance"``, the default then, kept); ``start=zero``
  / ``start=mean``: every estimate starting at 0 / at its calibration mean; ``start=active`` (the sparse
  default since it was measured): as ``variance``, and the ReLU/max elements positive on most calibration
  samples at their mean;
- ``graded``: the graded neuron (``dynamics="graded"``: a spike carries a sign and a power of two; its
  default band, ``tolerance * 1/64`` = 1/128 of each neuron's scale); ``graded band1/64``, ``band1/256``:
  coarser and finer bands; ``graded mean-scale`` (and ``band1/16``, ``band1/32``, ``band1/64``): each element
  normalized by its calibration mean ``|f(x)|`` instead of its maximum (``convert(scale="mean")``), so the band
  resolves its usual values; ``graded window3 band1/64``, ``graded mean-scale window3 band1/16``, ``... window4
  band1/32``: with layer windows (``convert(window=k)``, docs/windows.md), final at the step they settle;
- ``spikingjelly``: SpikingJelly's IF conversion (``benchmarks/_peers.py``), its spikes counted by
  ``count_spikingjelly`` below with the same rules (ReLU nets only).

Writes a Markdown table (``--out``) and a plot of the front (``--plot``)::

    python benchmarks/energy.py --models vgg,mixer --limit 500 --out docs/energy_results.md \\
        --plot docs/energy_front.png
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import _peers as peers  # noqa: E402
import architectures as arch  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import signgd  # noqa: E402
from signgd.convert import TUNING_SAMPLES  # noqa: E402
from signgd.costs import EnergyModel, ann_costs  # noqa: E402
from signgd.report import make_report  # noqa: E402
from signgd.tuning import tune_schedule  # noqa: E402

DEFAULT_T = (4, 8, 16, 32, 64, 128)
CONFIGS = {"default": {}, "exponential float": {"schedule": "exponential", "encoding": "float"},
           "convert(T=T)": {"encoding": "analog"}, "paper": {"preset": "paper"},
           "subgradient": {"preset": "paper", "dynamics": "subgradient"}, "spikingjelly": None,
           "sparse tol0.5": {"dynamics": "sparse", "schedule": "exponential:lr=0.3,decay=0.87", "start": "variance"},
           "sparse floor+pow2 tol0.75": {"dynamics": "sparse", "tolerance": 0.75, "start": "variance",
                                          "schedule": "exponential:lr=0.5,decay=0.87,floor=0.03125,pow2=1"},
           "sparse start=zero tol0.5": {"dynamics": "sparse", "schedule": "exponential:lr=0.3,decay=0.87",
                                        "start": "zero"},
           "sparse start=mean tol0.5": {"dynamics": "sparse", "schedule": "exponential:lr=0.3,decay=0.87",
                                        "start": "mean"},
           "sparse start=mean floor+pow2 tol0.75": {"dynamics": "sparse", "tolerance": 0.75, "start": "mean",
                                                    "schedule": "exponential:lr=0.5,decay=0.87,floor=0.03125,pow2=1"},
           "sparse start=active tol0.5": {"dynamics": "sparse", "schedule": "exponential:lr=0.3,decay=0.87",
                                          "start": "active"},
           "sparse start=active floor+pow2 tol0.75": {"dynamics": "sparse", "tolerance": 0.75, "start": "active",
                                                      "schedule": "exponential:lr=0.5,decay=0.87,floor=0.03125,pow2=1"},
           "sparse": {"dynamics": "sparse"}, "low-energy": {"preset": "low-energy"},
           "graded": {"dynamics": "graded"},
           "graded band1/64": {"dynamics": "graded", "schedule": "exponential:lr=0.03125,decay=1.0"},
           "graded band1/256": {"dynamics": "graded", "schedule": "exponential:lr=0.0078125,decay=1.0"},
           # each element divided by its calibration mean |f(x)|, not its maximum (convert(scale="mean"))
           "graded mean-scale band1/16": {"dynamics": "graded", "scale": "mean",
                                          "schedule": "exponential:lr=0.125,decay=1.0"},
           "graded mean-scale band1/32": {"dynamics": "graded", "scale": "mean",
                                          "schedule": "exponential:lr=0.0625,decay=1.0"},
           "graded mean-scale band1/64": {"dynamics": "graded", "scale": "mean",
                                          "schedule": "exponential:lr=0.03125,decay=1.0"},
           "graded mean-scale": {"dynamics": "graded", "scale": "mean"},
           # layer windows (convert(window=k), docs/windows.md): measure them at the step they settle (1 + depth (k-1);
           # Fashion-MNIST: VGG 23, ResNet 15, Mixer 53, ViT 77 with k=3; ViT 115 with k=4), given in --T
           "graded window3 band1/64": {"dynamics": "graded", "window": 3,
                                       "schedule": "exponential:lr=0.03125,decay=1.0"},
           "graded mean-scale window3 band1/16": {"dynamics": "graded", "scale": "mean", "window": 3,
                                                  "schedule": "exponential:lr=0.125,decay=1.0"},
           "graded mean-scale window4 band1/32": {"dynamics": "graded", "scale": "mean", "window": 4,
                                                  "schedule": "exponential:lr=0.0625,decay=1.0"},
           "low-energy(T=T)": {"preset": "low-energy"}}
TUNED = {"convert(T=T)", "low-energy(T=T)"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="vgg,resnet,mixer,vit", help="comma-separated architectures")
    p.add_argument("--T", default=",".join(map(str, DEFAULT_T)), help="comma-separated time steps")
    p.add_argument("--limit", type=int, default=1000, help="test images (a seeded random subset)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    p.add_argument("--tuned-T", default="4,8,16,32",
                   help="the T at which convert(T=T) is tuned and measured (tuning runs 22 candidates at T)")
    p.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args(argv)
    args.names = [m.strip() for m in args.models.split(",") if m.strip()]
    args.labels = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [m for m in args.names if m not in arch.ARCHITECTURES] + [c for c in args.labels if c not in CONFIGS]
    if bad:
        p.error(f"unknown model(s) or configuration(s) {bad}")
    args.steps = sorted({int(t) for t in args.T.split(",") if t.strip()})
    args.tuned_steps = sorted({int(t) for t in args.tuned_T.split(",") if t.strip()} & set(args.steps))
    return args


def _signgd_rows(model, calibration, test_set, steps, label, batch_size):
    """``{T: (accuracy, energy ratio, ann accuracy)}`` from signgd's report."""
    snn = signgd.convert(model, calibration, **CONFIGS[label])
    if label not in TUNED:
        rep = make_report(snn, test_set, steps, batch_size=batch_size, progress=False)
        en = rep["energy"]
        return {t: (a, r, rep["accuracy"]["ann"]) for t, a, r in
                zip(steps, rep["accuracy"]["snn"], en["energy_ratio_to_ann"])}
    rows = {}
    for T in steps:
        if label == "low-energy(T=T)":
            snn = signgd.convert(model, calibration, T=T, **CONFIGS[label])
        else:
            snn.schedule = tune_schedule(snn, calibration[:TUNING_SAMPLES], T).schedule
        rep = make_report(snn, test_set, [T], batch_size=batch_size, progress=False)
        rows[T] = (rep["accuracy"]["snn"][0], rep["energy"]["energy_ratio_to_ann"][0], rep["accuracy"]["ann"])
    return rows


class _SpikeCounter:
    """Synaptic operations of SpikingJelly's network by our rules: forward pre-hooks on its Conv/Linear
    layers count, per step, the synapses the non-zero inputs reach (a binary copy of the layer on the
    0/1 input pattern); an input whose values are one constant per layer times 0/1 (scaled spikes) costs
    ACs, any other (the analog image at the first layer) MACs. Its IF neurons integrate (1 AC),
    compare (1 AC) and reset by subtraction when they fire (1 AC); the readout averages (1 AC, 1 MAC)."""

    def __init__(self, net):
        self.ac = self.mac = 0.0
        self.handles = []
        for mod in net.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                self.handles.append(mod.register_forward_pre_hook(self._hook))

    def _hook(self, mod, inputs):
        x = inputs[0]
        pattern = (x != 0).to(x.dtype)
        w = (mod.weight != 0).to(x.dtype)
        out = F.conv2d(pattern, w, None, mod.stride, mod.padding, mod.dilation, mod.groups) \
            if isinstance(mod, torch.nn.Conv2d) else F.linear(pattern, w)
        synapses = float(out.sum(dtype=torch.float64))
        values = x[x != 0].abs()
        spikes = values.numel() == 0 or bool((values == values.max()).all())
        if spikes:
            self.ac += synapses
        else:
            self.mac += synapses


def _spikingjelly_rows(model, calibration, test_set, steps, batch_size, ann_energy, em):
    from spikingjelly.activation_based import functional, neuron
    net = peers.convert(model, calibration[:batch_size])
    counter = _SpikeCounter(net)
    n_if = {}

    def count_if(mod, inputs, output):
        n_if[id(mod)] = n_if.get(id(mod), 0) + output.numel()
        counter.ac += float((output != 0).sum())  # reset by subtraction on a spike
    for mod in net.modules():
        if isinstance(mod, neuron.IFNode):
            mod.register_forward_hook(count_if)
    functional.set_step_mode(net, "s")
    x_all, y_all = test_set.tensors
    rows, correct, n = {}, dict.fromkeys(steps, 0), 0
    ac_at, mac_at = dict.fromkeys(steps, 0.0), dict.fromkeys(steps, 0.0)
    with torch.no_grad():
        for i in range(0, len(x_all), batch_size):
            x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
            functional.reset_net(net)
            total = None
            for t in range(1, max(steps) + 1):
                out = net(x)
                total = out if total is None else total + out
                if t in steps:
                    correct[t] += int(((total / t).argmax(-1) == y).sum())
                    neuron_ops = 2 * sum(n_if.values())
                    readout = out.numel() * t
                    ac_at[t] += counter.ac + neuron_ops + readout
                    mac_at[t] += counter.mac + readout
            n += len(x)
            n_if.clear()
            counter.ac = counter.mac = 0.0
    for t in steps:
        energy = em.energy(ac_at[t] / n, mac_at[t] / n)
        rows[t] = (correct[t] / n, energy / ann_energy, None)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    results = {}
    for name in args.names:
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        ann_acc = results.get((name, "ann"))
        for label in args.labels:
            start = time.perf_counter()
            try:
                if label == "spikingjelly":
                    why = peers.unavailable()
                    if why:
                        raise RuntimeError(why)
                    ref = signgd.convert(model, calibration[:64], schedule="exponential")
                    ann = ann_costs(ref)
                    em = EnergyModel()
                    ann_energy = em.energy(sum(a for a, _ in ann.values()), sum(m for _, m in ann.values()))
                    rows = _spikingjelly_rows(model, calibration, subset, args.steps, args.batch_size, ann_energy, em)
                else:
                    steps = args.tuned_steps if label in TUNED else args.steps
                    rows = _signgd_rows(model, calibration, subset, steps, label, args.batch_size)
                    ann_acc = next(iter(rows.values()))[2]
                    results[name, "ann"] = ann_acc
            except Exception as exc:  # a configuration that does not apply (subgradient on a GELU net)
                common.log(f"{name} [{label}]: skipped ({type(exc).__name__}: {str(exc)[:120]})")
                continue
            results[name, label] = (rows, time.perf_counter() - start)
            common.log(f"{name} [{label}]: " + ", ".join(f"T={t}: {100 * a:.2f}% {r:.2f}x"
                                                         for t, (a, r, _) in rows.items()))
            if args.out:  # what is measured so far, in case a long run is stopped
                args.out.write_text(render(args, results, threads) + "\n")
    common.emit(render(args, results, threads), args.out)
    if args.plot:
        plot(args, results, args.plot)
    return 0


def render(args, results, threads) -> str:
    lines = ["# Accuracy and energy (the cost model of signgd.costs)", "",
             f"`{common.command_line()}`", "",
             f"Fashion-MNIST, {args.limit} test images (seeded subset), calibration {args.calibration} "
             f"training images, {threads} threads; energy per sample relative to the ANN's, both counted "
             "by the same rules (docs/energy.md).", ""]
    for name in args.names:
        ann = results.get((name, "ann"))
        lines += [f"## {name}" + (f" (ANN {100 * ann:.2f}%)" if ann is not None else ""), "",
                  "| configuration | " + " | ".join(f"T={t}" for t in args.steps) + " | within 1 pt of the ANN |",
                  "|---|" + "---:|" * (len(args.steps) + 1)]
        for label in args.labels:
            if (name, label) not in results:
                continue
            rows, _ = results[name, label]
            cells = " | ".join(f"{100 * rows[t][0]:.2f}% / {rows[t][1]:.2f}x" if t in rows else "-"
                               for t in args.steps)
            first = next((t for t in args.steps if t in rows and ann is not None and rows[t][0] >= ann - 0.01),
                         None)
            verdict = f"T={first}: {rows[first][1]:.2f}x the ANN's energy" if first else "not reached"
            lines.append(f"| {label} | {cells} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


def plot(args, results, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(args.names), figsize=(5 * len(args.names), 4), squeeze=False)
    for ax, name in zip(axes[0], args.names):
        for label in args.labels:
            if (name, label) not in results:
                continue
            rows, _ = results[name, label]
            ts = [t for t in args.steps if t in rows]
            ax.plot([rows[t][1] for t in ts], [100 * rows[t][0] for t in ts], "o-", label=label)
        ann = results.get((name, "ann"))
        if ann is not None:
            ax.axhline(100 * ann, color="black", linestyle="--", label="ANN")
            ax.set_ylim(max(0, 100 * ann - 15), 100 * ann + 2)
        ax.axvline(1.0, color="gray", linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("energy / ANN energy")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
