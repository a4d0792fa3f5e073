"""The embedded demo: train a small CNN on scikit-learn's digits, convert it, print accuracy per T.

Offline on any machine (the digits ship with scikit-learn), under a minute on two CPU cores.
"""
from __future__ import annotations

import time

import torch

from . import data, models, training
from .convert import convert
from .evaluate import evaluate


def run_demo(epochs: int = 30, seed: int = 0, steps=(1, 2, 4, 8, 16, 32, 64, 128), log=print):
    torch.manual_seed(seed)
    train_set, test_set = data.digits("train", seed=seed), data.digits("test", seed=seed)
    model = models.digits_cnn()
    start = time.perf_counter()
    training.train(model, train_set, epochs=epochs, seed=seed)
    log(f"trained a {sum(p.numel() for p in model.parameters())}-parameter CNN on {len(train_set)} digits "
        f"in {time.perf_counter() - start:.1f} s")
    calibration = train_set.tensors[0][:500]
    reports = {}
    for dynamics in ("signgd", "subgradient"):
        start = time.perf_counter()
        snn = convert(model, calibration, dynamics=dynamics)
        reports[dynamics] = evaluate(snn, test_set, T=list(steps))
        log(f"{dynamics}: converted and evaluated at T={list(steps)} in {time.perf_counter() - start:.1f} s")
    signgd_report, sub_report = reports["signgd"], reports["subgradient"]
    log(f"\nANN test accuracy: {100 * signgd_report.ann_accuracy:.2f}% ({signgd_report.n} digits)\n")
    log("| T | signGD SNN (%) | subgradient / IF SNN (%) |")
    log("|---:|---:|---:|")
    for t in signgd_report.steps:
        log(f"| {t} | {100 * signgd_report.snn_accuracy[t]:.2f} | {100 * sub_report.snn_accuracy[t]:.2f} |")
    return reports
