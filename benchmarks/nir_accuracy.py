"""The IF dynamics against the subgradient baseline, and the exported NIR file run by other libraries.

For the Fashion-MNIST models of ``benchmarks/nir_models.py`` (the benchmarks' SmallResNet, and the
benchmarks' VGG with average pooling), on a seeded test subset:

1. ANN accuracy, and SNN accuracy per T for ``convert(dynamics="subgradient")`` (the paper's IF baseline)
   and ``convert(dynamics="if")`` (classic IF, reset by subtraction: what ``signgd.nir.export`` writes);
   with ``--max-thresholds`` also the IF network with each channel's max calibration maximum as threshold;
2. the IF network exported with ``signgd.nir.write``, read back with ``nir.read`` and run for T steps by
   ``benchmarks/_nir_peer.py``: snnTorch's ``Leaky`` (beta = 1, reset by subtraction) through nirtorch,
   and Norse's ``IAFCell`` (reset to v_reset, the letter of NIR's IF) through nirtorch: accuracy,
   agreement with signgd's decisions, and the spikes of each library against signgd's.

Writes the Markdown report (``--out``)::

    python benchmarks/nir_accuracy.py --models resnet --limit 500 --T 32,64 --peer-T 64 --threads 1 \\
        --max-thresholds --out docs/nir_benchmark.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import _nir_peer as peer  # noqa: E402
import architectures as arch  # noqa: E402
import nir  # noqa: E402
import nir_models  # noqa: E402
import torch  # noqa: E402

import signgd  # noqa: E402
import signgd.nir  # noqa: E402
from signgd.graph.calibrate import activation_ranges  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=",".join(nir_models.MODELS), help="comma-separated: resnet, vgg-avg")
    p.add_argument("--T", default="16,32,64,128", help="comma-separated time steps for signgd's simulations")
    p.add_argument("--peer-T", type=int, default=64, help="time steps the other libraries run the NIR file for")
    p.add_argument("--peers", default="snntorch,norse", help="comma-separated: snntorch, norse")
    p.add_argument("--limit", type=int, default=2000, help="test images (a seeded random subset)")
    p.add_argument("--max-thresholds", action="store_true",
                   help="also evaluate the IF network with each channel's max (not median) calibration maximum")
    p.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    args.names = [m.strip() for m in args.models.split(",") if m.strip()]
    args.peer_names = [m.strip() for m in args.peers.split(",") if m.strip()]
    args.steps = sorted({int(t) for t in args.T.split(",") if t.strip()})
    bad = [m for m in args.names if m not in nir_models.MODELS] + [q for q in args.peer_names
                                                                  if q not in ("snntorch", "norse")]
    if bad:
        p.error(f"unknown model(s) or peer(s) {bad}")
    return args


def with_channel_max_thresholds(snn, calibration):
    """The IF network with each channel's threshold the max, not the median, of its positions' calibration
    maxima (the alternative ``signgd.convert`` does not take: see ``convert._per_channel``)."""
    ranges, _ = activation_ranges(snn.graph_module, calibration.split(256))
    for name, neuron in snn.neurons.items():
        r = ranges[name]
        r = r.amax(dim=tuple(range(1, r.dim())), keepdim=True) if r.dim() >= 2 else r
        neuron.set_scale(torch.where(r <= 1e-5, torch.ones_like(r), r))
    return snn


def peer_run(kind: str, path: Path, snn, subset, T: int, batch_size: int) -> dict:
    """Accuracy of library ``kind`` running the NIR file, its agreement with signgd, and how its spikes
    compare with signgd's (the total over the test images, and the largest per-layer difference)."""
    module = peer.snntorch_module(path) if kind == "snntorch" else peer.norse_module(path)
    names = {n.name: n.target for n in snn.graph_module.graph.nodes
             if n.op == "call_module" and n.target.startswith("neurons.")}
    correct = agree = n = 0
    ours_total = theirs_total = 0.0
    layer_diff = {name: 0.0 for name in names}
    start = time.perf_counter()
    for x, y in torch.utils.data.DataLoader(subset, batch_size=batch_size):
        decoded, counts = peer.run(module, x, T, spikes=True)
        ours = snn.simulate(x, T=[T], stats=True)
        correct += int((decoded[T].argmax(1) == y).sum())
        agree += int((decoded[T].argmax(1) == ours.outputs[T].argmax(1)).sum())
        n += len(y)
        for node, target in names.items():
            mine, theirs = float(ours.spikes[target].sum()), float(counts[node].sum())
            ours_total, theirs_total = ours_total + mine, theirs_total + theirs
            layer_diff[node] += abs(mine - theirs)
    return {"accuracy": correct / n, "agreement": agree / n, "ours": ours_total, "theirs": theirs_total,
            "max_layer_diff": max(layer_diff.values()), "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    rows, peers = [], []
    for name in args.names:
        model, info, subset, calibration = nir_models.prepared(name, args, train28, test28, idx_test, idx_cal)
        nets = {}
        for dynamics in ("subgradient", "if"):
            start = time.perf_counter()
            snn = nets[dynamics] = signgd.convert(model, calibration, dynamics=dynamics)
            report = signgd.evaluate(snn, subset, T=args.steps, batch_size=args.batch_size, progress=False)
            seconds = time.perf_counter() - start
            rows.append((name, dynamics, report, seconds))
            common.log(f"{name} [{dynamics}]: ANN {100 * report.ann_accuracy:.2f}%, SNN "
                       + ", ".join(f"T={t}: {100 * a:.2f}" for t, a in report.snn_accuracy.items())
                       + f" ({common.fmt_seconds(seconds)})")
        if args.max_thresholds:
            start = time.perf_counter()
            snn = with_channel_max_thresholds(signgd.convert(model, calibration, dynamics="if"), calibration)
            report = signgd.evaluate(snn, subset, T=args.steps, batch_size=args.batch_size, progress=False)
            rows.append((name, "if, channel-max thresholds", report, time.perf_counter() - start))
            common.log(f"{name} [if, channel max]: " + ", ".join(f"T={t}: {100 * a:.2f}"
                                                                 for t, a in report.snn_accuracy.items()))
        with tempfile.TemporaryDirectory() as tmp:
            path = signgd.nir.write(nets["if"], Path(tmp) / f"{name}.nir")
            graph = nir.read(str(path))
            kinds = sorted({type(n).__name__ for n in graph.nodes.values()})
            for kind in args.peer_names:
                result = peer_run(kind, path, nets["if"], subset, args.peer_T, args.batch_size)
                peers.append((name, kind, kinds, result))
                common.log(f"{name} NIR file in {kind}: {100 * result['accuracy']:.2f}% at T={args.peer_T}, "
                           f"agreement {100 * result['agreement']:.2f}%, spikes {result['theirs']:.0f} "
                           f"(signgd {result['ours']:.0f}) ({common.fmt_seconds(result['seconds'])})")
    common.emit(render(args, rows, peers, threads), args.out)
    return 0


def render(args, rows, peers, threads) -> str:
    lines = [
        "# NIR export: IF dynamics and the exported file in other libraries (Fashion-MNIST)",
        "",
        f"Generated by `benchmarks/nir_accuracy.py`. Command: `{common.command_line()}`",
        "",
        f"Machine: {common.machine_line()}",
        "",
        f"Calibrated on {args.calibration} training images, evaluated on {args.limit} test images (a subset "
        f"fixed by seed {args.seed}); analog input (the image at every step) for both dynamics.",
        "",
        "| model | dynamics | ANN | " + " | ".join(f"T={t}" for t in args.steps) + " | time |",
        "|---|---|---:|" + "---:|" * len(args.steps) + "---:|",
    ]
    for name, dynamics, rep, seconds in rows:
        accs = " | ".join(f"{100 * rep.snn_accuracy[t]:.2f}" for t in args.steps)
        lines.append(f"| {name} | {dynamics} | {100 * rep.ann_accuracy:.2f} | {accs} | {common.fmt_seconds(seconds)} |")
    lines += ["", "IF minus subgradient, in points:", "",
              "| model | " + " | ".join(f"T={t}" for t in args.steps) + " |",
              "|---|" + "---:|" * len(args.steps)]
    by = {(name, dyn): rep for name, dyn, rep, _ in rows}
    for name in args.names:
        diffs = " | ".join(f"{100 * (by[name, 'if'].snn_accuracy[t] - by[name, 'subgradient'].snn_accuracy[t]):+.2f}"
                           for t in args.steps)
        lines.append(f"| {name} | {diffs} |")
    lines += ["", f"The IF network written with `signgd.nir.write`, read with `nir.read` and run for T={args.peer_T} "
              "steps by another library (`benchmarks/_nir_peer.py`):", "",
              "| model | NIR nodes | library (IF as) | accuracy | signgd IF at same T | agreement with signgd | "
              "spikes (library) | spikes (signgd) | largest per-layer spike difference | time |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    label = {"snntorch": "snnTorch Leaky, beta=1, reset by subtraction",
             "norse": "Norse IAFCell, reset to v_reset = 0"}
    for name, kind, kinds, r in peers:
        ours = by[name, "if"].snn_accuracy.get(args.peer_T)
        ours_text = f"{100 * ours:.2f}" if ours is not None else "-"
        lines.append(f"| {name} | {', '.join(kinds)} | {label[kind]} | {100 * r['accuracy']:.2f} | {ours_text} | "
                     f"{100 * r['agreement']:.2f} | {r['theirs']:.0f} | {r['ours']:.0f} | {r['max_layer_diff']:.0f} | "
                     f"{common.fmt_seconds(r['seconds'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
