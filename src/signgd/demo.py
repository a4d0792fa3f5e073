"""The embedded demo: train a small CNN on scikit-learn's digits, convert it, print accuracy per T,
and (with ``out``) write the report of the signGD network and of the subgradient baseline.

Offline on any machine (the digits ship with scikit-learn), about a minute on two CPU cores.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import data, models, training
from .convert import convert
from .distributed import world_size
from .report import build_report, collect, write_report


def run_demo(epochs: int = 30, seed: int = 0, steps=(1, 2, 4, 8, 16, 32, 64, 128), log=print, out=None,
             progress: bool = False, batch_size: int = 256, limit: int | None = None, device="cpu",
             command: list[str] | None = None):
    """Returns ``{dynamics: EvaluationReport}``. With ``out``, writes ``out/report.json`` + plots and
    ``out/snn.pt`` for the signGD network, and the subgradient baseline's report in ``out/subgradient``."""
    torch.manual_seed(seed)
    train_set, test_set = data.digits("train", seed=seed), data.digits("test", seed=seed)
    model = models.digits_cnn()
    start = time.perf_counter()
    training.train(model, train_set, epochs=epochs, seed=seed)
    log(f"trained a {sum(p.numel() for p in model.parameters())}-parameter CNN on {len(train_set)} digits "
        f"in {time.perf_counter() - start:.1f} s")
    model.to(device)
    calibration = train_set.tensors[0][:500]
    reports = {}
    for dynamics in ("signgd", "subgradient"):
        start = time.perf_counter()
        snn = convert(model, calibration, dynamics=dynamics, seed=seed)
        stats = collect(snn, test_set, list(steps), batch_size=batch_size, limit=limit, progress=progress,
                        energy=out is not None)
        reports[dynamics] = stats.evaluation
        log(f"{dynamics}: converted and evaluated at T={list(steps)} in {time.perf_counter() - start:.1f} s")
        if out is not None:
            folder = Path(out) if dynamics == "signgd" else Path(out) / dynamics
            settings = {"command": command or ["signgd", "demo"], "model": "signgd:digits_cnn",
                        "data": "digits", "training_epochs": epochs, "calibration_samples": len(calibration),
                        "T": list(steps), "batch_size": batch_size, "limit": limit, "device": str(device), "seed": seed,
                        "processes": world_size()}
            write_report(build_report(snn, stats, run_settings=settings), folder)
            if dynamics == "signgd":
                snn.save(folder / "snn.pt")
    signgd_report, sub_report = reports["signgd"], reports["subgradient"]
    log(f"\nANN test accuracy: {100 * signgd_report.ann_accuracy:.2f}% ({signgd_report.n} digits)\n")
    log("| T | signGD SNN (%) | subgradient / IF SNN (%) |")
    log("|---:|---:|---:|")
    for t in signgd_report.steps:
        log(f"| {t} | {100 * signgd_report.snn_accuracy[t]:.2f} | {100 * sub_report.snn_accuracy[t]:.2f} |")
    if out is not None:
        log(f"\nreport, plots and the signGD network (snn.pt) in {out}/; the subgradient baseline in "
            f"{Path(out) / 'subgradient'}/")
    return reports
