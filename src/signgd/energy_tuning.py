"""Tune a sparse or graded network for the least energy at which it agrees with the ANN (``preset="low-energy"``).

Every candidate (a dynamics, a schedule, a tolerance, a scale and, for the graded neuron, layer windows or none) is
simulated on the tuning samples and its energy counted by the report's counter (``signgd.costs``); the cheapest that
agrees with the ANN on ``MIN_AGREEMENT`` of them wins, at the T it needs. docs/sparse.md and docs/windows.md have the
measurements behind the grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import schedules as sched
from .configured import run_as
from .costs import EnergyModel, StepCounter, ann_energy, energy_per_sample
from .dynamics import BAND_DYNAMICS
from .feedback import bar
from .tuning import agreement_and_error, check_steps, steps_text

#: The energy objective (``preset="low-energy"``, the sparse neuron): its grid of exponential schedules and
#: tolerances (fractions of ``eta_t``), the agreement with the ANN a candidate must reach on the tuning
#: samples, and how many of them the energy is counted on (an average: it settles on a few).
ENERGY_LEARNING_RATES = (0.3, 0.5)
ENERGY_DECAYS = (0.8, 0.87)
ENERGY_FLOORS = (1 / 64, 1 / 32)
ENERGY_TOLERANCES = (0.5, 0.75)
#: The graded neuron's candidates (``dynamics="graded"``): constant schedules whose step sets its band,
#: ``tolerance * lr`` (its spikes carry their own sizes), at the first of the tolerances.
ENERGY_GRADED_STEPS = (1 / 32, 1 / 64, 1 / 128)
#: ... and with every element divided by its calibration mean ``|f(x)|`` (``convert(scale="mean")``, when the
#: preset is free to choose the scale): coarser steps, since the band is then a fraction of the usual values, not
#: of the largest (Fashion-MNIST Mixer within 1 point at 1.33x its ANN against 1.58x, the ViT within 1 point at
#: all; docs/scale_rule.md).
ENERGY_GRADED_MEAN_STEPS = (1 / 8, 1 / 16, 1 / 32)
#: ... and with layer windows (``convert(window=k)``, signgd.windows): each layer evaluates its target once and
#: settles on it, one layer after the other, at the T its depth needs (the Fashion-MNIST Mixer within 1 point of its
#: ANN at 0.60x its energy, docs/windows.md). On the mean scales when the preset is free to choose them. Windows of 5
#: steps too: within 1 point of accuracy is about 97% agreement with the ANN, below ``MIN_AGREEMENT``, and the
#: Mixer's windows of 3 and 4 steps agreed on 97-98% of the tuning samples, those of 5 steps on 99%.
ENERGY_WINDOWS = (3, 4, 5)
ENERGY_WINDOW_STEPS = (1 / 16, 1 / 32)
MIN_AGREEMENT = 0.99
ENERGY_SAMPLES = 64
#: The steps ``preset="low-energy"`` picks its T from when it is given none (one simulation of the longest
#: scores them all; the graded neuron often agrees with the ANN by T=4-6).
ENERGY_STEPS = (4, 6, 8, 12, 16, 32, 64)


@dataclass
class EnergyCandidate:
    """One configuration of the sparse or graded neuron at one T: its agreement with the ANN and its energy."""

    schedule: sched.Schedule
    tolerance: float
    T: int
    agreement: float
    error: float
    energy_ratio: float  # the SNN's energy per sample after T steps / the ANN's (signgd.costs)
    dynamics: str = "sparse"
    scale: str = "max"  # what each normalized element is divided by (convert(scale=...))
    window: int | None = None  # steps per neuron layer (convert(window=...)), or None

    def __repr__(self) -> str:
        windows = f", window {self.window}" if self.window is not None else ""
        return (f"{self.dynamics} neurons, {self.schedule!r}, tolerance {self.tolerance:g}, scale {self.scale}"
                f"{windows}, T={self.T}: "
                f"{100 * self.agreement:.1f}% agreement, {self.energy_ratio:.3f}x the ANN's energy")


@dataclass
class EnergyTuningResult:
    """The cheapest configuration that reaches ``min_agreement`` (or, when none does, the one that agrees
    best), and every candidate's score at every T."""

    T: tuple[int, ...]
    samples: int
    min_agreement: float
    best: EnergyCandidate
    candidates: list[EnergyCandidate] = field(default_factory=list)

    @property
    def schedule(self) -> sched.Schedule:
        return self.best.schedule

    @property
    def reached(self) -> bool:
        return self.best.agreement >= self.min_agreement

    def table(self) -> str:
        rows = [f"sparse and graded neurons tuned for energy at T={steps_text(self.T)} on {self.samples} calibration "
                f"samples (at least {100 * self.min_agreement:.0f}% agreement with the ANN; with layer windows, at the "
                f"step they settle)",
                "| dynamics | schedule | tolerance | scale | window | T | agreement (%) | relative error "
                "| energy / ANN |",
                "|---|---|---:|---|---:|---:|---:|---:|---:|"]
        rows += [f"| {c.dynamics} | {c.schedule!r} | {c.tolerance:g} | {c.scale} | {c.window or '-'} | {c.T} | "
                 f"{100 * c.agreement:.2f} | {c.error:.4f} | {c.energy_ratio:.3f} |"
                 for c in sorted(self.candidates, key=lambda c: c.energy_ratio)]
        return "\n".join(rows)


def tune_energy(snn, x: torch.Tensor, T, *, learning_rates=None, decays=None, floors=None, pow2: bool = True,
                tolerances=None, graded_steps=None, kinds=BAND_DYNAMICS, min_agreement: float = MIN_AGREEMENT,
                energy_samples: int = ENERGY_SAMPLES, model: EnergyModel = EnergyModel(),
                progress: bool | None = None, mean_scales: dict | None = None,
                graded_mean_steps=None, windows=None, window_steps=None,
                window_limit: int | None = None) -> EnergyTuningResult:
    """The cheapest sparse or graded network that agrees with the ANN. The sparse neuron's candidates: every
    exponential schedule of the grid (``exponential(lr, decay, floor, pow2)``: steps that stop decaying at
    ``floor``, so that a settled neuron falls silent, and are powers of two, so that no receiver multiplies)
    with every tolerance; the graded neuron's (``dynamics="graded"``): a constant step of each of
    ``graded_steps`` at the first tolerance (its band; its spikes carry their own sizes). For each, one
    simulation of ``max(T)`` steps on ``x`` scores the agreement with the ANN at each T of the list, and one
    on the first ``energy_samples`` samples counts the energy (``signgd.costs``, the report's counter).
    The winner is the configuration and T of least energy whose agreement is at least ``min_agreement``
    (ties: the better agreement); if none reaches it, the best agreement (then the least energy). ``snn``
    (``dynamics="sparse"`` or ``"graded"``) keeps its own dynamics, schedule and tolerance. The grid's axes
    default to this module's ``ENERGY_*`` values (read at the call); ``kinds``: the dynamics to try
    (``("graded",)``: the graded neuron only). ``mean_scales`` (``{neuron: per-element scale}``, the calibration
    mean ``|f(x)|``): the graded neuron is also tried with every normalized neuron divided by those instead of the
    network's own scales, at each of ``graded_mean_steps`` (``ENERGY_GRADED_MEAN_STEPS``). The graded neuron is also
    tried with layer windows (``convert(window=k)``) of each of ``windows`` (``ENERGY_WINDOWS``) at each of
    ``window_steps`` (``ENERGY_WINDOW_STEPS``), on the mean scales when given, each scored at the step its output
    settles (``snn.settled_step()``), and only where that is at most ``window_limit`` (None: any; ``convert`` passes
    the largest T asked for)."""
    if snn.settings["dynamics"] not in BAND_DYNAMICS:
        raise ValueError("tuning for energy covers the sparse and graded dynamics (convert with preset='low-energy')")
    steps = list(check_steps(T)) if isinstance(T, (list, tuple)) else [check_steps(T)]
    if x.shape[0] == 0:
        raise ValueError("tuning for energy needs at least one calibration sample")
    with torch.inference_mode():
        ann_out = snn.ann(x)
    ann_pj = ann_energy(snn, model)
    sub = x[:energy_samples]
    tolerances = tolerances or ENERGY_TOLERANCES
    grid = [("sparse", sched.exponential(lr, decay, floor=floor, pow2=pow2), tol) for tol in tolerances
            for floor in floors or ENERGY_FLOORS for decay in decays or ENERGY_DECAYS
            for lr in learning_rates or ENERGY_LEARNING_RATES] if "sparse" in kinds else []
    grid = [(*g, "max", None) for g in grid]  # (dynamics, schedule, tolerance, scale, layer windows)
    if "graded" in kinds:
        grid += [("graded", sched.exponential(step, 1.0), tolerances[0], "max", None)
                 for step in graded_steps or ENERGY_GRADED_STEPS]
        if mean_scales is not None:
            grid += [("graded", sched.exponential(step, 1.0), tolerances[0], "mean", None)
                     for step in graded_mean_steps or ENERGY_GRADED_MEAN_STEPS]
        grid += [("graded", sched.exponential(step, 1.0), tolerances[0], "max" if mean_scales is None else "mean", k)
                 for k in (ENERGY_WINDOWS if windows is None else windows)
                 for step in (ENERGY_WINDOW_STEPS if window_steps is None else window_steps)]
    candidates, counters = [], {}
    for dynamics, schedule, tol, scale, window in bar(grid, progress, unit="candidate",
                                                      desc=f"tune for energy at T={steps_text(tuple(steps))}"):
        with run_as(snn, dynamics, mean_scales if scale == "mean" else None, window=window):
            scored = steps if window is None else [snn.settled_step()]
            if window_limit is not None and max(scored) > window_limit:
                continue  # its output settles later than the user will run it
            outputs = snn.simulate(x, scored, schedule=schedule, tolerance=tol).outputs
            key = (dynamics, window, max(scored))
            if key not in counters:  # one per dynamics and windows (its event costs), reset for each candidate
                counters[key] = StepCounter(snn, max(scored))
            counter = counters[key]
            counter.start(sub, schedule, reset=True)
            snn.simulate(sub, max(scored), schedule=schedule, tolerance=tol, probe=counter.layer)
            counter.finish_batch()
            energy = energy_per_sample(snn, counter, sub.shape[0], model, schedule)
        for t in scored:
            agreement, error = agreement_and_error(outputs[t], ann_out)
            candidates.append(EnergyCandidate(schedule, tol, t, agreement, error, float(energy[t - 1]) / ann_pj,
                                              dynamics, scale, window))
    feasible = [c for c in candidates if c.agreement >= min_agreement]
    best = min(feasible, key=lambda c: (c.energy_ratio, -c.agreement)) if feasible else \
        min(candidates, key=lambda c: (-c.agreement, c.energy_ratio))
    return EnergyTuningResult(tuple(steps), int(x.shape[0]), min_agreement, best, candidates)
