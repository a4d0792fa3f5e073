"""How many target evaluations a lazy sparse neuron would skip: a measurement for the next cost rule.

A sparse neuron evaluates its target again whenever an input changed (``costs.changed``). A GELU is
Lipschitz (``|gelu'| <= 1.13``), so a neuron that keeps the input ``x_k`` of its last evaluation can bound
its gap without evaluating: ``|f(x_t)/s - y| <= |f(x_k)/s - y| + 1.13/s * |x_t - x_k|``. While the bound is
inside the band ``tolerance * eta_t`` it is certainly silent and need not evaluate; its spikes are the same.
This script runs the sparse network on test images, reads every GELU layer's input and output sequences,
and counts the evaluations the bound would still need against those the current rule charges.

The graded neuron (``--dynamics graded``) is silent while its step ``graded_step(d)`` is below the threshold, i.e.
while ``|d| < threshold * 2**(-1/64)``: the same bound, against that smaller band.

    python benchmarks/sparse_lazy_eval.py --model mixer --images 32 --T 32
    python benchmarks/sparse_lazy_eval.py --model mixer --images 32 --T 5 --dynamics graded --scale mean \
        --schedule exponential:lr=0.0625,decay=1.0
"""
from __future__ import annotations

import argparse

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
import torch  # noqa: E402

import signgd  # noqa: E402
from signgd.neurons import SpikingNeuron  # noqa: E402

GELU_LIPSCHITZ = 1.13  # max |d gelu / dx| = 1.1289


#: The graded neuron fires when its step, the largest power of two not above ``2**(1/64) |d|``, reaches the threshold.
GRADED_MARGIN = 2 ** (-1 / 64)


def lazy_counts(inputs, outputs, etas, scale, tolerance, graded=False):
    """``(changed-input evaluations, lazy evaluations)`` of one GELU layer from its input sequence
    ``[T, B, ...]`` (raw), its output sequence (``scale * y_t``) and the steps (``graded``: the graded neuron's
    silence, ``GRADED_MARGIN``)."""
    band = tolerance * etas * (GRADED_MARGIN if graded else 1.0)
    f = torch.nn.functional.gelu(inputs) / scale
    y = outputs / scale
    x_k, f_k = inputs[0], f[0]
    charged = lazy = float(inputs[0].numel())  # step 1: every neuron evaluates
    for t in range(1, inputs.shape[0]):
        changed = inputs[t] != inputs[t - 1]
        bound = (f_k - y[t - 1]).abs() + (GELU_LIPSCHITZ / scale) * (inputs[t] - x_k).abs()
        need = changed & ((bound >= band[t]) if graded else (bound > band[t]))
        charged += float(changed.sum())
        lazy += float(need.sum())
        x_k, f_k = torch.where(need, inputs[t], x_k), torch.where(need, f[t], f_k)
    return charged, lazy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mixer")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--schedule", default="exponential:lr=0.3,decay=0.87")
    p.add_argument("--tolerance", type=float, default=0.5)
    p.add_argument("--dynamics", choices=("sparse", "graded"), default="sparse")
    p.add_argument("--scale", choices=("max", "mean"), default="max", help="convert(scale=...)")
    args = p.parse_args(argv)
    graded = args.dynamics == "graded"
    common.setup_torch(1)
    a = arch.parse_args([])
    a.limit = args.images
    train28, test28, idx_test, idx_cal = arch.splits(a)
    model, _, subset, calibration = arch.prepared(args.model, arch.parse_args([]), train28, test28, idx_test, idx_cal)
    snn = signgd.convert(model, calibration, dynamics=args.dynamics, schedule=args.schedule, tolerance=args.tolerance,
                         scale=args.scale, progress=False)
    gelus = {id(m): name for name, m in snn.neurons.items() if m.target == "gelu"}
    seen: dict[str, list] = {}
    run = SpikingNeuron._run_sparse

    def recording(self, state, xs, etas, spikes_out, owned, tolerance, graded=False):
        x = xs[0].clone() if id(self) in gelus else None
        out = run(self, state, xs, etas, spikes_out, False, tolerance, graded=graded)
        if x is not None:
            seen.setdefault(gelus[id(self)], []).append((x, out.clone(), etas.clone()))
        return out

    SpikingNeuron._run_sparse = recording
    totals = {name: [0.0, 0.0] for name in gelus.values()}
    images = subset.tensors[0][:args.images]
    with torch.no_grad():
        for i in range(0, images.shape[0], args.batch):
            seen.clear()
            snn.simulate(images[i:i + args.batch], args.T, batch_chunk=args.batch)
            for name, chunks in seen.items():
                xs, outs, etas = (torch.cat([c[k] for c in chunks]) for k in range(3))
                charged, lazy = lazy_counts(xs, outs, etas, snn.neurons[name].scale, args.tolerance, graded)
                totals[name][0] += charged
                totals[name][1] += lazy
    SpikingNeuron._run_sparse = run
    print(f"`{common.command_line()}`\n\n{common.machine_line()}\n")
    print(f"{args.model}, {args.images} test images, T={args.T}, {args.dynamics} neurons, {args.schedule}, tolerance "
          f"{args.tolerance}, scale {args.scale}\n")
    print("| GELU layer | evaluations charged (changed input) | with the Lipschitz bound | ratio |")
    print("|---|---:|---:|---:|")
    for name, (charged, lazy) in totals.items():
        print(f"| {name} | {charged:.0f} | {lazy:.0f} | {lazy / charged:.2f} |")
    charged, lazy = (sum(v[k] for v in totals.values()) for k in range(2))
    print(f"| all | {charged:.0f} | {lazy:.0f} | {lazy / charged:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
