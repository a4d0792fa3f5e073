"""Accuracy of signGD vs. subgradient (integrate-and-fire) conversion on Fashion-MNIST, per T.

Trains a VGG-style CNN with batch norm and max pooling (``signgd.models.vgg``) on Fashion-MNIST, or
reuses the weights cached in ``benchmarks/.cache/`` for the same training configuration; converts it
twice with ``signgd.convert`` (the paper preset: signGD dynamics, float input encoding, ReLU
max-normalization; and ``dynamics="subgradient"``), calibrated on a fixed, seeded subset of the
training images; and evaluates both on the test set at each T. Prints a Markdown report to stdout
(progress goes to stderr)::

    python benchmarks/accuracy.py                          # full run: 10k test images, T = 1..128
    python benchmarks/accuracy.py --limit 500 --T 8,64     # quick check
    python benchmarks/accuracy.py --out docs/accuracy.md   # also write the report to a file

Fashion-MNIST is read by ``signgd.data.fashion_mnist`` (Debian's ``dataset-fashion-mnist`` in
/usr/share/datasets/fashion-mnist, or ``$SIGNGD_DATA``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import signgd  # noqa: E402
from signgd import data, models, training  # noqa: E402

DEFAULT_T = (1, 2, 4, 8, 16, 32, 64, 128)
# Architecture: signgd.models.vgg's defaults (16-M-32-32-M-64-M conv widths, 128 hidden units).
DEFAULT_WIDTHS = "16,M,32,32,M,64,M"
DEFAULT_HIDDEN = 128


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate on the first N test images only; None: all 10000")
    p.add_argument("--T", default=",".join(map(str, DEFAULT_T)),
                   help="comma-separated numbers of time steps")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    p.add_argument("--out", type=Path, default=None,
                   help="also write the Markdown report (with command line and machine) to this file; "
                        "None: stdout only")
    g = p.add_argument_group("training (the cache key)")
    g.add_argument("--epochs", type=int, default=15, help="training epochs")
    g.add_argument("--train-batch-size", type=int, default=128, help="training batch size")
    g.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, one-cycle)")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--widths", default=DEFAULT_WIDTHS,
                   help="conv widths for signgd.models.vgg, 'M' = 2x2 max pooling")
    g.add_argument("--hidden", type=int, default=DEFAULT_HIDDEN, help="hidden units of the MLP head")
    g.add_argument("--seed", type=int, default=0, help="seed of initialization, shuffling and calibration subset")
    g.add_argument("--retrain", action="store_true", help="ignore (and overwrite) the cached weights")
    c = p.add_argument_group("conversion")
    c.add_argument("--calibration", type=int, default=1000,
                   help="number of training images (a seeded random subset) used for calibration")
    o = p.add_argument_group("other")
    o.add_argument("--threads", type=int, default=None, help="torch threads; None: one per CPU this process may use")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress bars on stderr; None: when stderr is a terminal")
    args = p.parse_args(argv)
    try:
        args.steps = sorted({int(t) for t in args.T.split(",") if t.strip()})
    except ValueError:
        p.error(f"--T must be comma-separated integers, got {args.T!r}")
    if not args.steps or min(args.steps) < 1:
        p.error("--T needs at least one number of time steps >= 1")
    try:
        args.widths_tuple = tuple(w if w == "M" else int(w) for w in
                                  (s.strip().upper() for s in args.widths.split(",")) if w)
    except ValueError:
        p.error(f"--widths must be comma-separated integers and M, got {args.widths!r}")
    if not any(w != "M" for w in args.widths_tuple):
        p.error("--widths needs at least one conv width")
    for name in ("limit", "batch_size", "epochs", "train_batch_size", "hidden", "calibration"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    return args


def train_model(args, train_set: TensorDataset, test_set: TensorDataset):
    config = {
        "dataset": "fashion-mnist", "train_samples": len(train_set),
        "model": "signgd.models.vgg", "widths": list(args.widths_tuple), "hidden": args.hidden,
        "epochs": args.epochs, "batch_size": args.train_batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "optimizer": "AdamW+OneCycleLR", "seed": args.seed,
    }

    def build():
        torch.manual_seed(args.seed)  # vgg() initializes its weights from the global RNG
        return models.vgg(widths=args.widths_tuple, hidden=args.hidden)

    def fit(model):
        common.log(f"training {config['model']}(widths={args.widths}, hidden={args.hidden}) for "
                   f"{args.epochs} epochs (cache miss)")
        training.train(model, train_set, epochs=args.epochs, batch_size=args.train_batch_size,
                       lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                       log=lambda m: common.log("  " + m))

    model, info = common.train_cached("fmnist-vgg", config, build, fit,
                                      lambda m: training.accuracy(m, test_set), refresh=args.retrain)
    how = "loaded from" if info["cached"] else "saved to"
    common.log(f"model {how} {info['path']} (trained in {common.fmt_seconds(info['train_seconds'])}, "
               f"test accuracy {100 * info['test_accuracy']:.2f}%)")
    return model, info


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    train_set = data.fashion_mnist("train")
    test_set = data.fashion_mnist("test")
    if args.limit is not None:
        test_set = TensorDataset(*(t[:args.limit] for t in test_set.tensors))
    n_test = len(test_set)

    model, info = train_model(args, train_set, data.fashion_mnist("test"))
    n_params = sum(p.numel() for p in model.parameters())

    idx = common.seeded_subset(len(train_set), args.calibration, args.seed)
    calibration = train_set.tensors[0][idx]

    reports, conv_time, eval_time, described = {}, {}, {}, {}
    for label, dynamics in (("signGD", "signgd"), ("subgradient", "subgradient")):
        start = time.perf_counter()
        # The paper's preset for signGD (ReLUs normalized only), the reference baseline for IF.
        snn = signgd.convert(model, calibration, dynamics=dynamics, normalize="relu")
        conv_time[label] = time.perf_counter() - start
        described[label] = snn.extra_repr()
        common.log(f"{label}: converted in {common.fmt_seconds(conv_time[label])}: {snn.extra_repr()}")
        common.log(f"{label}: evaluating {n_test} test images at T = {args.steps}")
        start = time.perf_counter()
        reports[label] = signgd.evaluate(snn, test_set, T=args.steps, batch_size=args.batch_size,
                                         progress=args.progress)
        eval_time[label] = time.perf_counter() - start
        common.log(f"{label}: evaluated in {common.fmt_seconds(eval_time[label])}")

    ann_acc = reports["signGD"].ann_accuracy
    warnings = []
    if abs(reports["subgradient"].ann_accuracy - ann_acc) > 1e-12:
        warnings.append(f"the two conversions' ANN accuracies differ: signGD graph "
                        f"{100 * ann_acc:.2f}%, subgradient graph "
                        f"{100 * reports['subgradient'].ann_accuracy:.2f}%")
    orig_acc = training.accuracy(model, test_set)
    if abs(orig_acc - ann_acc) * n_test > 1:  # more than one image changed its prediction
        warnings.append(f"the converted graph run as an ANN ({100 * ann_acc:.2f}%) does not match the "
                        f"original model ({100 * orig_acc:.2f}%)")

    text = render(args, info, n_params, threads, n_test, ann_acc, reports, conv_time, eval_time,
                  described, warnings)
    common.emit(text, args.out)
    return 0


def render(args, info, n_params, threads, n_test, ann_acc, reports, conv_time, eval_time,
                  described, warnings) -> str:
    widths = ", ".join(repr(w) if w == "M" else str(w) for w in args.widths_tuple)
    trained = (f"loaded from the cache (`{Path(info['path']).name}`; training took "
               f"{common.fmt_seconds(info['train_seconds'])} with {info['threads']} threads, "
               f"torch {info['torch']})" if info["cached"] else
               f"trained in {common.fmt_seconds(info['train_seconds'])} on this machine")
    subset = "" if args.limit is None else f" (the first {n_test}: `--limit {args.limit}`)"
    lines = [
        "# Accuracy: signGD vs. subgradient conversion on Fashion-MNIST",
        "",
        f"Generated by `benchmarks/accuracy.py`; rerun to refresh. Command: `{common.command_line()}`",
        "",
        f"Machine: {common.machine_line()}",
        "",
        f"- Model: `signgd.models.vgg(widths=({widths}), hidden={args.hidden})`: 3x3 conv + BN + ReLU "
        f"blocks with 2x2 max pooling, MLP head; {n_params:,} parameters. Trained {args.epochs} epochs "
        f"on the 60k training images (AdamW, one-cycle lr {args.lr:g}, weight decay "
        f"{args.weight_decay:g}, batch {args.train_batch_size}, seed {args.seed}); {trained}.",
        f"- Conversion: `signgd.convert(model, calibration, normalize=\"relu\")`, the paper preset "
        f"({described['signGD']}), and "
        f"`signgd.convert(model, calibration, dynamics=\"subgradient\", normalize=\"relu\")`, "
        f"integrate-and-fire ({described['subgradient']}). Calibration: {args.calibration} training "
        f"images, a random subset fixed by seed {args.seed}.",
        f"- Test images: {n_test}{subset}. Each batch is simulated once for max(T) = "
        f"{max(args.steps)} steps; the outputs at every T come from that run.",
        "",
        f"**ANN accuracy: {100 * ann_acc:.2f}%** ({n_test} test images)",
        "",
        "| T | signGD accuracy (%) | subgradient accuracy (%) |",
        "|---:|---:|---:|",
    ]
    sg, sub = reports["signGD"], reports["subgradient"]
    for t in args.steps:
        lines.append(f"| {t} | {100 * sg.snn_accuracy[t]:.2f} | {100 * sub.snn_accuracy[t]:.2f} |")
    lines += [
        "",
        "Evaluation wall time (all T, including the ANN pass): "
        f"signGD {common.fmt_seconds(eval_time['signGD'])}, "
        f"subgradient {common.fmt_seconds(eval_time['subgradient'])} "
        f"(batch size {args.batch_size}, {threads} threads). Conversion: "
        f"signGD {common.fmt_seconds(conv_time['signGD'])}, "
        f"subgradient {common.fmt_seconds(conv_time['subgradient'])}.",
        "",
        "Agreement of the SNN's prediction with the ANN's (% of test images):",
        "",
        "| T | signGD | subgradient |",
        "|---:|---:|---:|",
    ]
    for t in args.steps:
        lines.append(f"| {t} | {100 * sg.agreement[t]:.2f} | {100 * sub.agreement[t]:.2f} |")
    if warnings:
        lines += ["", *(f"**Warning:** {w}." for w in warnings)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
