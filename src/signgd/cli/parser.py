"""The ``signgd`` command's arguments (argparse): one sub-command per task."""
from __future__ import annotations

import argparse

from ..codecs import ENCODINGS
from ..convert import CALIBRATION_SAMPLES
from ..errors import InputError
from ..network import parse_steps
from ..options import DYNAMICS, NORMALIZATIONS, PRESETS, SCALES, STARTS
from .usage import OneLineParser

__all__ = ["build_parser", "parse_steps_arg"]

DEFAULT_STEPS = "1,2,4,8,16,32,64,128"


def parse_steps_arg(text: str) -> list[int]:
    """``--T 8,16,32``: the steps as ``signgd.network.parse_steps`` checks them."""
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--T takes comma-separated step counts, e.g. 8,16,32,64; got {text!r}")
    try:
        return parse_steps(steps)
    except InputError:
        raise argparse.ArgumentTypeError(f"--T needs step counts >= 1, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


_SEED_HELP = {
    "demo": "seed for the data split, training, calibration and stochastic encodings (default 0)",
    "convert": "seed for the model's initialisation, calibration sampling, schedule tuning and the stochastic "
               "encoding stored in the network (default 0)",
    "evaluate": "recorded in the report only: a saved network keeps the stochastic-encoding seed it was "
                "converted with (default 0)",
}


def _common(p: argparse.ArgumentParser, command: str) -> None:
    """Options every working command takes."""
    g = p.add_argument_group("running")
    g.add_argument("--device", default="cpu", help="torch device to run on, e.g. cpu, cuda, cuda:1 (default cpu)")
    g.add_argument("--batch-size", type=_positive, default=256, help="samples per simulated batch (default 256)")
    g.add_argument("--seed", type=int, default=0, help=_SEED_HELP[command])
    g.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when stderr is "
                                                        "not a terminal)")
    g.add_argument("--traceback", action="store_true", help="show the full traceback of an error")


def _evaluation(p: argparse.ArgumentParser, default_steps: str = DEFAULT_STEPS) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--T", type=parse_steps_arg, default=parse_steps_arg(default_steps), metavar="T1,T2,...",
                   help=f"time steps at which to measure (one run of max(T) steps; default {default_steps})")
    g.add_argument("--limit", type=_positive, default=None, metavar="N", help="evaluate on the first N test samples")
    g.add_argument("--pj-per-ac", type=float, default=0.9, help="energy of one accumulate in pJ (default 0.9, 45 nm)")
    g.add_argument("--pj-per-mac", type=float, default=4.6,
                   help="energy of one multiply-accumulate in pJ (default 4.6, 45 nm)")


def _data(p: argparse.ArgumentParser, stored: bool = False) -> None:
    p.add_argument("--data", required=True, metavar="DATA",
                   help="digits | fashion-mnist[:PATH] | cifar10:PATH | cifar100:PATH | imagefolder:PATH")
    title = ("image preprocessing (default: what convert stored in the network; an option that differs is "
             "refused unless --override-preprocessing)" if stored else
             "image preprocessing (as the model was trained; stored in snn.pt for evaluate)")
    g = p.add_argument_group(title)
    g.add_argument("--resize", type=_positive, default=None, help="resize the shorter side to this many pixels")
    g.add_argument("--crop", type=_positive, default=None, help="centre crop to this many pixels square")
    g.add_argument("--mean", default=None, help="per-channel mean to subtract, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", default=None, help="per-channel std to divide by, e.g. 0.229,0.224,0.225")
    if stored:
        g.add_argument("--override-preprocessing", action="store_true",
                       help="apply exactly the --resize/--crop/--mean/--std given here (none: the raw images) "
                            "instead of the preprocessing stored in the network")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="signgd",
        description="Convert trained PyTorch networks into spiking neural networks with "
                    "sign-gradient-descent neuronal dynamics (Oh & Lee, ICML 2024).")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a small CNN on scikit-learn's digits, convert it, evaluate it and "
                                       "write a report (offline, about a minute)")
    demo.add_argument("--out", default="signgd-demo", help="report folder (default ./signgd-demo)")
    demo.add_argument("--epochs", type=_positive, default=30, help="training epochs (default 30)")
    demo.add_argument("--T", type=parse_steps_arg, default=parse_steps_arg(DEFAULT_STEPS), metavar="T1,T2,...",
                      help=f"time steps at which to measure (default {DEFAULT_STEPS})")
    demo.add_argument("--limit", type=_positive, default=None, metavar="N", help="evaluate on the first N test digits")
    _common(demo, "demo")

    conv = sub.add_parser("convert", help="convert a trained model, evaluate it, write the report and the SNN")
    conv.add_argument("model", metavar="MODEL",
                      help="torchvision:NAME | timm:NAME | signgd:NAME | path/to/file.py:factory")
    conv.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                      help="constructor argument of MODEL, repeatable (e.g. num_classes=10)")
    conv.add_argument("--weights", default=None, metavar="FILE", help="a state_dict saved with torch.save")
    _data(conv)
    g = conv.add_argument_group("conversion")
    g.add_argument("--calibration", type=_positive, default=CALIBRATION_SAMPLES, metavar="N",
                   help=f"training samples for normalization and tuning, a seeded random subset (default "
                        f"{CALIBRATION_SAMPLES}, as convert() takes of a Dataset)")
    g.add_argument("--dynamics", choices=DYNAMICS, default="signgd",
                   help="signgd (the paper's neuron), sparse (signed spikes, silent within --tolerance x eta_t: "
                        "the low-energy neuron), graded (sparse, each spike also a power of two: settles in a few "
                        "steps), subgradient (its IF baseline) or if (integrate-and-fire, "
                        "reset by subtraction: exports to NIR with signgd export)")
    g.add_argument("--tolerance", type=float, default=None, metavar="F",
                   help="sparse and graded neurons stay silent within F x eta_t of their target (default 0.5; "
                        "--preset low-energy tunes it)")
    g.add_argument("--start", choices=STARTS, default=None,
                   help="where signGD estimates start: zero (the paper's neuron), variance (LayerNorm's variance "
                        "neurons at their calibration mean), mean (every neuron at its calibration mean) or active "
                        "(as variance, and ReLU/max elements at their mean where mostly positive in calibration; "
                        "the default for --dynamics sparse)")
    g.add_argument("--scale", choices=SCALES, default=None,
                   help="what a normalized neuron element is divided by: its calibration max |f(x)| (the default) or "
                        "its mean |f(x)| (finer bands for sparse and graded neurons whose largest values are outliers)")
    g.add_argument("--window", type=_positive, default=None, metavar="K",
                   help="graded neurons only: each neuron layer spikes during K steps of its own, one layer after "
                        "the other, and evaluates its target once (the report adds the step the output settles at)")
    g.add_argument("--encoding", choices=ENCODINGS, default=None,
                   help="input encoding (default float for signgd, analog for subgradient and if)")
    g.add_argument("--schedule", default=None,
                   help="step sizes, e.g. exponential:lr=0.15,decay=0.95 (the default), inverse:lr=1, "
                        "constant:lr=0.05, "
                        "exponential:lr=0.3,decay=0.87,floor=0.02,pow2=1 (steps stop at floor, powers of two), "
                        "adaptive:lr=0.2,grow=1.2,shrink=0.5 (per-neuron steps, signgd only; pow2=1: each step "
                        "rounded to a power of two, so receivers add instead of multiplying)")
    g.add_argument("--normalize", choices=NORMALIZATIONS, default=None,
                   help="neurons normalized by their calibration range (default all for signgd, relu for "
                        "subgradient and if; relu is the paper's preset)")
    g.add_argument("--tune-for", type=_positive, default=None, metavar="T",
                   help="tune the schedule for T time steps on the calibration data (and encode analog); "
                        "default: one schedule tuned across T in 8,16,32,64; the network still runs any T")
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="paper: the paper's settings (normalize relu, float encoding, exponential:lr=0.15,decay=0.95); "
                        "low-energy: sparse or graded neurons, schedule, tolerance and T tuned for the least energy "
                        "that agrees with the ANN (docs/sparse.md)")
    conv.add_argument("--out", default="signgd-report", help="output folder for snn.pt and the report "
                                                             "(default ./signgd-report)")
    _evaluation(conv)
    _common(conv, "convert")

    ev = sub.add_parser("evaluate", help="evaluate a saved SNN and optionally write its report")
    ev.add_argument("snn_file", metavar="SNN_FILE", help="a network saved by convert (DIR/snn.pt) or snn.save()")
    _data(ev, stored=True)
    _evaluation(ev)
    ev.add_argument("--json", default=None, metavar="FILE", help="write the report JSON to FILE")
    ev.add_argument("--out", default=None, metavar="DIR", help="write report.json and the plots to DIR")
    _common(ev, "evaluate")

    exp = sub.add_parser("export", help="write a saved SNN in an interchange format (NIR)",
                         description="Write a network saved by convert (converted with --dynamics if) as a NIR "
                                     "graph that Norse, sinabs, snnTorch, Lava or Rockpool can read (docs/nir.md).")
    exp.add_argument("snn_file", metavar="SNN_FILE", help="a network saved by convert (DIR/snn.pt) or snn.save()")
    exp.add_argument("--nir", required=True, metavar="FILE", help="the NIR file to write (nir.write, HDF5)")
    exp.add_argument("--traceback", action="store_true", help="show the full traceback of an error")

    rep = sub.add_parser("report", help="(re)draw the plots of a report folder from its report.json",
                         description="Redraw the plots of a report folder (written by signgd convert, evaluate "
                                     "--out or demo) from its report.json, and print its summary tables. "
                                     "Nothing is simulated.")
    rep.add_argument("dir", metavar="DIR", help="a folder holding report.json")
    rep.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    return parser
