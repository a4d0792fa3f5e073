"""What a band costs in accuracy under each scale rule, without simulating: every neuron's output rounded to a
multiple of ``band x scale``, as a settled sparse or graded neuron leaves it (within its band of the target), the
scale being each element's calibration ``max |f(x)|`` (``convert``'s default), its mean ``|f(x)|``
(``convert(scale="mean")``) or its root mean square; optionally only for some targets.

Why: on the Fashion-MNIST ViT the graded neuron settled 2 points below its ANN at every band tried with the max
rule (docs/energy_graded_vit.md). A softmax's exp neurons have calibration maxima 1e3-1e7 times their medians, so a
fraction of the maximum leaves their usual values unresolved. This separates the band's rounding from the
dynamics::

    python benchmarks/scale_rule.py --models vit,mixer --bands 1/32,1/64,1/128,1/256 --limit 1000
"""
from __future__ import annotations

import argparse
from fractions import Fraction

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402
import torch  # noqa: E402

import signgd  # noqa: E402

RULES = ("max", "mean", "rms")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vit,mixer")
    p.add_argument("--bands", default="1/32,1/64,1/128,1/256")
    common.add_subset_arguments(p, limit=1000)
    return p.parse_args(argv)


def calibration_statistics(snn, calibration: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """Per neuron and element: the calibration max, mean and root mean square of ``|f(x)|`` (float64)."""
    acc: dict[str, list] = {}

    def hook(mod, inputs, out, name=None):
        a = out.detach().abs().double()
        s = acc.setdefault(name, [torch.zeros_like(a[0]), torch.zeros_like(a[0]), torch.zeros_like(a[0]), 0])
        s[0] = torch.maximum(s[0], a.amax(0))
        s[1] += a.sum(0)
        s[2] += (a * a).sum(0)
        s[3] += a.shape[0]

    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n)) for n, m in snn.neurons.items()]
    try:
        with torch.no_grad():
            for batch in calibration.split(250):
                snn.ann(batch)
    finally:
        for h in hooks:
            h.remove()
    return {n: {"max": s[0], "mean": s[1] / s[3], "rms": (s[2] / s[3]).sqrt()} for n, s in acc.items()}


def rounded_accuracy(snn, x, y, stats, band: float, rule: str, targets=None) -> float:
    """Test accuracy of the ANN side with every neuron's output (of ``targets``, None: all) rounded to a
    multiple of ``band`` times its element's scale under ``rule`` (elements with a zero statistic: not rounded)."""
    hooks = []
    for name, mod in snn.neurons.items():
        if targets is not None and mod.target not in targets:
            continue
        scale = stats[name][rule].to(torch.float32)
        step = torch.where(scale > 0, scale * band, torch.ones_like(scale))
        keep = scale <= 0

        def round_output(module, inputs, out, step=step, keep=keep):
            return torch.where(keep, out, torch.round(out / step) * step)

        hooks.append(mod.register_forward_hook(round_output))
    try:
        with torch.no_grad():
            return float((snn.ann(x).argmax(-1) == y).double().mean())
    finally:
        for h in hooks:
            h.remove()


def main(argv=None) -> int:
    args = parse_args(argv)
    common.setup_torch(args.threads)
    train28, test28, idx_test, idx_cal = arch.splits(args)
    bands = [(text, float(Fraction(text))) for text in args.bands.split(",")]
    lines = [f"`{common.command_line()}`", "", common.machine_line(), "",
             "Test accuracy (%) of the ANN side with every neuron's output rounded to a multiple of band x scale "
             "(a settled sparse or graded neuron's error); 'exp only': the other neurons exact.", "",
             "| model | ANN | rule | " + " | ".join(f"band {t}" for t, _ in bands) + " | exp only, band "
             + bands[-1][0] + " |", "|---|---:|---|" + "---:|" * (len(bands) + 1)]
    for name in args.models.split(","):
        model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
        snn = signgd.convert(model, calibration, dynamics="graded")
        x = torch.stack([subset[i][0] for i in range(len(subset))])
        y = torch.tensor([int(subset[i][1]) for i in range(len(subset))])
        stats = calibration_statistics(snn, calibration)
        ann = rounded_accuracy(snn, x, y, stats, 0.0, "max", targets=())
        has_exp = any(m.target == "exp" for m in snn.neurons.values())
        for rule in RULES:
            cells = [f"{100 * rounded_accuracy(snn, x, y, stats, band, rule):.2f}" for _, band in bands]
            exp_only = f"{100 * rounded_accuracy(snn, x, y, stats, bands[-1][1], rule, ('exp',)):.2f}" if has_exp \
                else "-"
            lines.append(f"| {name} | {100 * ann:.2f} | {rule} | " + " | ".join(cells) + f" | {exp_only} |")
            print(lines[-1], flush=True)
    common.append_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
