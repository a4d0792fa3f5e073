"""What each sub-command does: demo, convert, evaluate, report. Each returns an exit status."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from .. import distributed as _dist
from .. import schedules
from ..convert import convert
from ..report import EnergyModel, draw_plots, make_report, read_report, summary, write_json, write_report
from ..runner import ann_accuracy
from ..serialize import load
from .datasets import ImageOptions, calibration_subset, load_split, parse_floats, stored_options
from .models import build_model, load_weights, parse_model_args, untrained
from .usage import UsageError

__all__ = ["run_demo_command", "run_convert", "run_evaluate", "run_report"]


def _progress(args) -> bool:
    """Progress bars: asked for, on a terminal, and on rank 0 only under torchrun."""
    return not args.quiet and sys.stderr.isatty() and _dist.is_main()


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text!r} is not a torch device; use e.g. cpu, cuda or cuda:0") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA device is available here; use --device cpu")
    return _dist.local_device(device)  # under torchrun, plain cuda is this rank's GPU (LOCAL_RANK)


def _image_options(args) -> ImageOptions:
    return ImageOptions(args.resize, args.crop, parse_floats(args.mean, "--mean"), parse_floats(args.std, "--std"))


def _energy_model(args) -> EnergyModel:
    if not (args.pj_per_ac > 0 and args.pj_per_mac > 0):
        raise UsageError("--pj-per-ac and --pj-per-mac must be positive energies in picojoules")
    return EnergyModel(args.pj_per_ac, args.pj_per_mac)


def _warn(command: str, message: str) -> None:
    """One warning line on stderr, from rank 0."""
    if _dist.is_main():
        print(f"signgd {command}: warning: {message}", file=sys.stderr, flush=True)


def _ann_first(snn, test, args, log) -> None:
    """The ANN's accuracy on the evaluation data, printed before the (much longer) simulation starts."""
    n, correct, classes = ann_accuracy(snn, test, batch_size=args.batch_size, limit=args.limit)
    if n == 0:
        return  # the run loop says the data is empty
    line = f"ANN accuracy on the evaluation data: {100 * correct / n:.2f}% ({n} samples); simulating the SNN"
    if classes > 1 and correct / n <= 1.5 / classes:
        line += (f" (chance level for {classes} classes: check --weights and that the preprocessing, --mean/--std, "
                 f"is the one the model was trained with)")
    log(line, flush=True)


def _write(report: dict, out: Path, log) -> None:
    paths = write_report(report, out)
    log(summary(report))
    log(f"\nreport: {', '.join(str(p) for p in paths)}")


def run_demo_command(args, argv: list[str], log=print) -> int:
    from ..demo import run_demo
    device = _device(args.device)
    torch.manual_seed(args.seed)
    out = args.out if _dist.is_main() else None  # under torchrun, rank 0 writes
    run_demo(epochs=args.epochs, seed=args.seed, steps=args.T, limit=args.limit, out=out, progress=_progress(args),
             batch_size=args.batch_size, device=device, command=["signgd", *argv], log=log)
    return 0


def run_convert(args, argv: list[str], log=print) -> int:
    device = _device(args.device)
    try:
        schedules.make_schedule(args.schedule)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--schedule {args.schedule!r}: {exc}") from None
    energy_model = _energy_model(args)
    opts = _image_options(args)
    torch.manual_seed(args.seed)
    model_args = parse_model_args(args.model_arg)
    model = build_model(args.model, model_args)
    if args.weights:
        load_weights(model, args.weights)
    model.to(device)
    train, test = load_split(args.data, "train", opts), load_split(args.data, "test", opts)
    calibration = calibration_subset(train, args.calibration, args.seed)
    if not args.weights and untrained(args.model, model_args):  # once the arguments are known to work
        _warn("convert", f"no --weights given: {args.model} keeps its random initial weights (a chance-level "
                         f"network); pass --weights FILE, a state_dict saved with torch.save(model.state_dict(), FILE)")
    progress = _progress(args)
    snn = convert(model, calibration, dynamics=args.dynamics, schedule=args.schedule, encoding=args.encoding,
                  normalize=args.normalize, T=args.tune_for, preset=args.preset, tolerance=args.tolerance,
                  start=args.start, scale=args.scale, window=args.window, seed=args.seed,
                  preprocessing=opts.settings(), batch_size=args.batch_size, calibration_samples=None,
                  progress=False if args.quiet else None)
    out = Path(args.out)
    snn_path = out / "snn.pt"
    if _dist.is_main():  # under torchrun every rank holds rank 0's network; rank 0 writes it
        snn.save(snn_path)
    run_settings = {"command": ["signgd", *argv], "model": args.model, "model_args": model_args,
                    "weights": args.weights, "data": args.data, "image": opts.settings(),
                    "calibration_samples": len(calibration), "device": str(device), "seed": args.seed}
    _ann_first(snn, test, args, log)
    report = make_report(snn, test, _steps(snn, args.T), batch_size=args.batch_size, limit=args.limit,
                         progress=progress, energy_model=energy_model, run_settings=run_settings)
    if not _dist.is_main():
        return 0
    _write(report, out, log)
    log(f"network: {snn_path} (signgd.load(path), or signgd evaluate {snn_path} --data {args.data}: the "
        f"preprocessing is stored in it)")
    return 0


def _steps(snn, steps) -> list[int]:
    """The steps a report measures: those asked for, and for a network with layer windows the step its output
    settles at (``snn.settled_step()``), where its accuracy is final."""
    settled = snn.settled_step()
    return sorted({*steps, settled}) if settled is not None else list(steps)


def run_evaluate(args, argv: list[str], log=print) -> int:
    device = _device(args.device)
    energy_model = _energy_model(args)
    snn = load(args.snn_file, map_location=device)
    opts = stored_options(snn.settings["preprocessing"], _image_options(args), args.override_preprocessing)
    test = load_split(args.data, "test", opts)
    run_settings = {"command": ["signgd", *argv], "snn_file": str(args.snn_file), "data": args.data,
                    "image": opts.settings(), "device": str(device), "seed": args.seed}
    _ann_first(snn, test, args, log)
    report = make_report(snn, test, _steps(snn, args.T), batch_size=args.batch_size, limit=args.limit,
                         progress=_progress(args), energy_model=energy_model, run_settings=run_settings)
    if not _dist.is_main():  # every rank holds the same reduced report; rank 0 writes it
        return 0
    if args.out:
        _write(report, Path(args.out), log)
    else:
        log(summary(report))
    if args.json:
        log(f"report JSON: {write_json(report, args.json)}")
    return 0


def run_report(args, argv: list[str], log=print) -> int:
    if not _dist.is_main():
        return 0
    report = read_report(args.dir)
    folder = Path(args.dir) if Path(args.dir).is_dir() else Path(args.dir).parent
    paths = draw_plots(report, folder)
    log(summary(report))
    log(f"\nplots: {', '.join(str(p) for p in paths)}")
    return 0


def run_export(args, argv: list[str], log=print) -> int:
    """``signgd export SNN_FILE --nir FILE``: the saved network as a NIR graph (``signgd.nir``)."""
    if not _dist.is_main():
        return 0
    from .. import nir as nir_export  # imports the nir package only for this command

    snn = load(args.snn_file, map_location="cpu")
    path = nir_export.write(snn, args.nir)
    log(f"NIR graph: {path} (nir.read(path); each step takes the input image, the mean of the output over the "
        f"steps is the network's output; docs/nir.md)")
    return 0

