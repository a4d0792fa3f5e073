"""ANN vs. SNN accuracy of every architecture family signgd converts, on Fashion-MNIST, per T.

Trains (or loads from ``benchmarks/.cache/``) a small ResNet, the VGG of ``benchmarks/accuracy.py``
(max pooling), and timm's ConvNeXt, MLP-Mixer, ResMLP and ViT in tiny configurations
(``signgd.models.tiny_*``; images zero-padded to 32x32), converts each with ``signgd.convert`` under
each normalization asked for, and evaluates ANN and SNN accuracy at every T on a seeded subset of
the test set. Prints a Markdown report (progress on stderr)::

    python benchmarks/architectures.py --out docs/architectures.md   # the recorded run
    python benchmarks/architectures.py --models vit --limit 200 --T 8,64
    python benchmarks/architectures.py --train-only                  # fill the cache

Options that are not given use ``signgd.convert``'s defaults, so the default run measures the
library's defaults.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import signgd  # noqa: E402
from signgd import data, models, training  # noqa: E402

DEFAULT_T = (8, 16, 32, 64, 128, 256)
# name -> (builder, description, image side the model takes)
ARCHITECTURES = {
    "resnet": (lambda: models.SmallResNet(1, 10), "signgd.models.SmallResNet (BN, ReLU, residual adds, "
                                                  "global average pooling)", 32),
    "vgg": (None, "signgd.models.vgg of benchmarks/accuracy.py (BN, ReLU, 2x2 max pooling), 28x28", 28),
    "convnext": (models.tiny_convnext, "timm ConvNeXt (LayerNorm2d, LayerNorm, GELU, layer scale)", 32),
    "mixer": (models.tiny_mixer, "timm MlpMixer (LayerNorm, GELU token and channel MLPs)", 32),
    "resmlp": (models.tiny_resmlp, "timm ResMLP (Affine norm, GELU, layer scale)", 32),
    "vit": (models.tiny_vit, "timm VisionTransformer (softmax attention, LayerNorm, GELU)", 32),
    "mobilenetv2": (lambda: models.tiny_mobilenet(kind="v2"), "signgd.models.tiny_mobilenet('v2'): MobileNetV2 "
                    "(depthwise convs, ReLU6, linear bottlenecks)", 32),
    "efficientnet": (lambda: models.tiny_mobilenet(kind="efficientnet"), "signgd.models.tiny_mobilenet("
                     "'efficientnet'): EfficientNet MBConv (depthwise convs, SiLU, squeeze-excitation)", 32),
    "mobilenetv3": (lambda: models.tiny_mobilenet(kind="v3"), "signgd.models.tiny_mobilenet('v3'): MobileNetV3 "
                    "(depthwise convs, hardswish, hardsigmoid squeeze-excitation)", 32),
}
#: Training overrides by architecture (the mobile nets: depthwise convs train slowly on a CPU).
TRAINING = {name: {"train_samples": 20000, "epochs": 3} for name in ("mobilenetv2", "efficientnet", "mobilenetv3")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=",".join(ARCHITECTURES), help="comma-separated architectures")
    p.add_argument("--T", default=",".join(map(str, DEFAULT_T)), help="comma-separated time steps")
    p.add_argument("--limit", type=int, default=2000, help="test images (a seeded random subset)")
    p.add_argument("--normalize", default=None,
                   help="comma-separated normalizations to compare (relu,all,none); None: the default only")
    p.add_argument("--encoding", default=None, help="input encoding; None: convert's default")
    p.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (the cache key)")
    p.add_argument("--train-samples", type=int, default=60000,
                   help="training images (a seeded subset of the 60k; the cache key)")
    p.add_argument("--batch-size", type=int, default=250, help="evaluation batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-only", action="store_true", help="train and cache the models, evaluate nothing")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    args.names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.names if m not in ARCHITECTURES]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(ARCHITECTURES)}")
    try:
        args.steps = sorted({int(t) for t in args.T.split(",") if t.strip()})
    except ValueError:
        p.error(f"--T must be comma-separated integers, got {args.T!r}")
    args.norms = [n.strip() for n in args.normalize.split(",")] if args.normalize else [None]
    return args


def pad32(ds: TensorDataset) -> TensorDataset:
    x, y = ds.tensors
    return TensorDataset(F.pad(x, (2, 2, 2, 2)), y)


def trained(name: str, args, train28, test28):
    """The trained model (cached by its training configuration) and its training info."""
    if name == "vgg":
        import accuracy  # the same configuration, hence the same cache file, as benchmarks/accuracy.py

        return accuracy.train_model(accuracy.parse_args([]), train28, test28)
    build, _, _ = ARCHITECTURES[name]
    epochs = TRAINING.get(name, {}).get("epochs", args.epochs)
    train_samples = TRAINING.get(name, {}).get("train_samples", args.train_samples)
    idx = common.seeded_subset(len(train28), train_samples, args.seed)
    train_set = pad32(TensorDataset(*(t[idx] for t in train28.tensors)))
    test_set = pad32(test28)
    config = {"dataset": "fashion-mnist-pad32", "train_samples": len(train_set), "model": f"architectures.{name}",
              "epochs": epochs, "batch_size": 128, "lr": 2e-3, "weight_decay": 0.05,
              "optimizer": "AdamW+OneCycleLR", "seed": args.seed}

    def fresh():
        torch.manual_seed(args.seed)
        return build()

    def fit(model):
        common.log(f"training {name} for {epochs} epochs on {len(train_set)} images (cache miss)")
        training.train(model, train_set, epochs=epochs, batch_size=128, lr=2e-3, weight_decay=0.05,
                       seed=args.seed, log=lambda m: common.log("  " + m))

    model, info = common.train_cached(f"fmnist-{name}", config, fresh, fit,
                                      lambda m: training.accuracy(m, test_set))
    common.log(f"{name}: {'cached' if info['cached'] else 'trained'} ({info['path']}), "
               f"test accuracy {100 * info['test_accuracy']:.2f}%")
    return model, info


def splits(args):
    """Fashion-MNIST train and test sets and the seeded test subset and calibration indices that
    ``args.limit``, ``args.calibration`` and ``args.seed`` choose."""
    train28, test28 = data.fashion_mnist("train"), data.fashion_mnist("test")
    idx_test = common.seeded_subset(len(test28), args.limit, args.seed)
    idx_cal = common.seeded_subset(len(train28), args.calibration, args.seed)
    return train28, test28, idx_test, idx_cal


def prepared(name: str, args, train28, test28, idx_test, idx_cal):
    """``(model, test subset, calibration inputs)`` for one architecture: the trained model, the seeded
    test subset and calibration images at the side the model takes (28, or zero-padded to 32)."""
    model, info = trained(name, args, train28, test28)
    side = ARCHITECTURES[name][2]
    train_set, test_set = (train28, test28) if side == 28 else (pad32(train28), pad32(test28))
    subset = TensorDataset(*(t[idx_test] for t in test_set.tensors))
    return model, info, subset, train_set.tensors[0][idx_cal]


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = splits(args)
    rows = []
    for name in args.names:
        model, info, subset, calibration = prepared(name, args, train28, test28, idx_test, idx_cal)
        if args.train_only:
            continue
        for norm in args.norms:
            kw = {k: v for k, v in (("normalize", norm), ("encoding", args.encoding)) if v is not None}
            start = time.perf_counter()
            snn = signgd.convert(model, calibration, **kw)
            report = signgd.evaluate(snn, subset, T=args.steps, batch_size=args.batch_size, progress=False)
            seconds = time.perf_counter() - start
            common.log(f"{name} [{snn.settings['normalize']}]: ANN {100 * report.ann_accuracy:.2f}%, SNN "
                       + ", ".join(f"T={t}: {100 * a:.2f}" for t, a in report.snn_accuracy.items())
                       + f" ({common.fmt_seconds(seconds)})")
            rows.append((name, snn, report, seconds, sum(p.numel() for p in model.parameters())))
    if args.train_only:
        return 0
    text = render(args, rows, threads)
    common.emit(text, args.out)
    return 0


def render(args, rows, threads) -> str:
    lines = [
        "# Architectures: ANN vs. SNN accuracy on Fashion-MNIST",
        "",
        f"Generated by `benchmarks/architectures.py`; rerun to refresh. Command: `{common.command_line()}`",
        "",
        f"Machine: {common.machine_line()}",
        "",
        f"Each model trained {args.epochs} epochs on "
        f"{'all 60000' if args.train_samples >= 60000 else f'{args.train_samples} (a seeded subset of the)'}"
        " training images ("
        "AdamW, one-cycle lr 2e-3, weight decay 0.05, batch 128; the VGG: 15 epochs on all 60k, "
        "see docs/accuracy.md; the mobile nets: 3 epochs on a seeded 20000, `TRAINING`), "
        f"calibrated on {args.calibration} training images, evaluated on {args.limit} test images "
        f"(a subset fixed by seed {args.seed}). One simulation of max(T) steps per batch gives every T.",
        "",
        "| model | params | normalize | encoding | ANN | " + " | ".join(f"T={t}" for t in args.steps)
        + " | ANN - SNN at T=128 | time |",
        "|---|---:|---|---|---:|" + "---:|" * len(args.steps) + "---:|---:|",
    ]
    for name, snn, rep, seconds, params in rows:
        accs = " | ".join(f"{100 * rep.snn_accuracy[t]:.2f}" for t in args.steps)
        gap = f"{100 * (rep.ann_accuracy - rep.snn_accuracy[128]):.2f}" if 128 in rep.snn_accuracy else "-"
        lines.append(f"| {name} | {params:,} | {snn.settings['normalize']} | {snn.settings['encoding']} | "
                     f"{100 * rep.ann_accuracy:.2f} | {accs} | {gap} | {common.fmt_seconds(seconds)} |")
    lines += ["", "Models:", ""]
    lines += [f"- `{name}`: {ARCHITECTURES[name][1]}" for name in args.names]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
