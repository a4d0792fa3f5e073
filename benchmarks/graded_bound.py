"""How cheap could any graded network be? A lower bound on the energy of a graded SNN (a spike carries a sign
and a power of two, ``dynamics="graded"``), next to what the graded neuron spends.

A neuron that must end within its band of its target ``v`` (normalized units, from its start ``y0``) sends
signed powers of two no smaller than its threshold ``u = tolerance * eta`` (a power of two here). Their sum is
``y0 + k u`` for an integer ``k``, and the neuron is settled only where ``|v - y0 - k u| < u``: ``k`` is
``floor`` or ``ceil`` of ``(v - y0) / u``. The fewest signed powers of two that sum to ``k`` is the weight of
``k``'s non-adjacent form (NAF), so no sequence of graded spikes, however well timed, settles a neuron with
fewer: even a neuron that knew its final target from the first step (no upstream still moving). The bound
counts, per sample, by the library's own cost model (``signgd.costs``, docs/energy.md):

- synapses: each layer's fewest spikes times the ACs one spike of that layer costs downstream (its fan-out,
  counted by ``signgd.costs.synapses.SynapseCounter`` with that layer alone sending);
- neuron work: one evaluation of every neuron's target (the ANN's own cost of that layer) and
  ``GRADED_SPIKE`` per spike (the receivers' integration and the checks are left out: the bound stays below).

The "greedy" column is what the graded neuron's own rule (``2**floor(log2|d| + 1/64)``) sends for a target
that never moves; the measured columns are a real run (``energy_breakdown.breakdown``), whose targets move
while the layers before them settle::

    python benchmarks/graded_bound.py --model mixer --bands 1/64,1/128,1/256 --T 8 --limit 100
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from fractions import Fraction

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
import energy_breakdown  # noqa: E402
import torch  # noqa: E402

import signgd  # noqa: E402
from signgd.costs import EnergyModel, ann_costs, ann_energy, counting_copy, node_of  # noqa: E402
from signgd.costs import op_costs as oc  # noqa: E402
from signgd.costs.counting import _neuron_shapes, kinds  # noqa: E402
from signgd.costs.synapses import SynapseCounter  # noqa: E402
from signgd.kernels.reference import graded_move  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mixer", choices=sorted(arch.ARCHITECTURES))
    p.add_argument("--bands", default="1/64,1/128,1/256", help="thresholds u = tolerance * eta (powers of two)")
    p.add_argument("--T", type=int, default=8, help="the measured run's steps")
    common.add_subset_arguments(p, limit=100)
    return p.parse_args(argv)


def naf_weight(k: torch.Tensor) -> torch.Tensor:
    """The number of non-zero digits of each integer's non-adjacent form: the fewest signed powers of two
    that sum to it."""
    n, count = k.abs().to(torch.int64), torch.zeros_like(k, dtype=torch.int64)
    while bool((n != 0).any()):
        odd = (n & 1) == 1
        digit = torch.where(odd, 2 - (n & 3), torch.zeros_like(n))  # +1 or -1 where odd
        count += odd.to(torch.int64)
        n = (n - digit) >> 1
    return count


def fewest_spikes(v: torch.Tensor, y0: torch.Tensor, u: float) -> torch.Tensor:
    """Per element: the fewest graded spikes (signed powers of two >= u) that leave ``v`` within ``u`` of the
    estimate (the module docstring)."""
    q = (v - y0) / u
    lo, hi = torch.floor(q), torch.ceil(q)
    exact = (q == lo)  # then only k = q settles strictly within u
    w_lo, w_hi = naf_weight(lo.to(torch.int64)), naf_weight(hi.to(torch.int64))
    return torch.where(exact, w_lo, torch.minimum(w_lo, w_hi))


def greedy_spikes(v: torch.Tensor, y0: torch.Tensor, u: float) -> torch.Tensor:
    """Per element: the graded neuron's own spikes for a target that never moves."""
    y, count = y0.clone(), torch.zeros_like(v)
    for _ in range(200):
        step, fired = graded_move(v - y, u)
        if not bool(fired.any()):
            break
        count += fired
        y = y + step * fired
    return count


def targets(snn, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (v, y0)}``: every neuron's exact target and its start, normalized, float64."""
    caught = {}
    hooks = [mod.register_forward_hook(lambda m, i, out, n=name: caught.__setitem__(n, out.detach()))
             for name, mod in snn.neurons.items()]
    try:
        with torch.no_grad():
            snn.ann(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, v in caught.items():
        mod = snn.neurons[name]
        vn = (v / mod.scale if mod.normalized else v).double()
        out[name] = (vn, mod.initial_estimate(vn).double())
    return out


def fan_out(snn) -> dict[str, float]:
    """``{layer: synaptic ACs + MACs per sample when every element of that layer alone sends once}``."""
    gm = counting_copy(snn)
    input_kind, neuron_kind = kinds(snn)
    x = torch.zeros((1, *snn.input_shape), dtype=torch.float64)
    shapes = _neuron_shapes(gm, torch.ones_like(x)).outputs
    out = {}
    for layer in shapes:
        counter = SynapseCounter(gm, input_kind=input_kind)
        counter.neuron_patterns = {n: (torch.ones if n == layer else torch.zeros)((1, *s), dtype=torch.float64)
                                   for n, s in shapes.items()}
        counter.neuron_kinds = dict.fromkeys(shapes, neuron_kind)
        with torch.no_grad():
            counter.run(x)
        out[layer] = sum(ac + mac for ac, mac in counter.ops.values())
    return out


def bound(snn, x: torch.Tensor, u: float, model: EnergyModel = EnergyModel()) -> dict:
    """The lower bound (pJ per sample) and the fewest and greedy spikes per neuron, by target."""
    per_layer = fan_out(snn)
    ann = ann_costs(snn)
    gm = snn.graph_module
    n = x.shape[0]
    syn_ac = neuron_ac = neuron_mac = 0.0
    spikes, greedy, sizes = defaultdict(float), defaultdict(float), defaultdict(int)
    for name, (v, y0) in targets(snn, x).items():
        fewest = fewest_spikes(v, y0, u).to(torch.float64)
        per_sample = float(fewest.sum()) / n
        syn_ac += per_layer[name] / v[0].numel() * per_sample  # every element of a layer reaches as many synapses
        eval_ac, eval_mac = ann[node_of(gm, name)]
        neuron_ac += eval_ac + per_sample * oc.GRADED_SPIKE[0]
        neuron_mac += eval_mac + per_sample * oc.GRADED_SPIKE[1]
        target = snn.neurons[name].target
        spikes[target] += per_sample
        greedy[target] += float(greedy_spikes(v, y0, u).sum()) / n
        sizes[target] += v[0].numel()
    return {"synapses_pj": model.energy(syn_ac, 0.0), "neurons_pj": model.energy(neuron_ac, neuron_mac),
            "fewest": {t: spikes[t] / sizes[t] for t in sizes}, "greedy": {t: greedy[t] / sizes[t] for t in sizes},
            "sizes": dict(sizes),
            "ann_pj": ann_energy(snn, model)}


def main(argv=None) -> int:
    args = parse_args(argv)
    common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    model, _, subset, calibration = arch.prepared(args.model, arch.parse_args([]), train28, test28, idx_test, idx_cal)
    x = torch.stack([subset[i][0] for i in range(len(subset))])
    lines = [f"`{common.command_line()}`", "", common.machine_line(), "",
             f"{args.model}, {len(subset)} test images; energy per sample / the ANN's; spikes per neuron, all "
             f"neuron layers together (each target's in the last column: fewest / greedy / measured)", "",
             f"| band u | measured at T={args.T}: accuracy (ANN) | measured energy | lower bound (synapses + neurons) "
             f"| spikes per neuron: fewest | greedy, static target | measured at T={args.T} | by target |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for text in args.bands.split(","):
        u = float(Fraction(text))
        snn = signgd.convert(model, calibration, dynamics="graded", schedule=f"exponential:lr={2 * u!r},decay=1.0",
                             tolerance=0.5)
        b = bound(snn, x, u)
        m = energy_breakdown.breakdown(snn, subset, args.T)
        ann = b["ann_pj"]
        measured = (m["synapses_pj"] + sum(m["neurons"].values())) / ann
        sizes = b["sizes"]
        total = sum(sizes.values())

        def mean(d):
            return sum(d[t] * sizes[t] for t in sizes) / total

        measured_spikes = {t: sp for t, (_, sp) in m["per_neuron"].items()}
        by_target = ", ".join(f"{t} {b['fewest'][t]:.2f} / {b['greedy'][t]:.2f} / {measured_spikes[t]:.2f}"
                              for t in sorted(sizes, key=lambda t: -sizes[t]))
        lines.append(f"| {text} | {100 * m['accuracy']:.2f}% ({100 * m['ann_accuracy']:.2f}%) | {measured:.3f}x | "
                     f"**{(b['synapses_pj'] + b['neurons_pj']) / ann:.3f}x** ({b['synapses_pj'] / ann:.3f}x + "
                     f"{b['neurons_pj'] / ann:.3f}x) | {mean(b['fewest']):.2f} | {mean(b['greedy']):.2f} | "
                     f"{mean(measured_spikes):.2f} | {by_target} |")
        print(lines[-1], flush=True)
    common.append_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
