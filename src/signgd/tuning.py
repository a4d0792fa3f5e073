"""Tune the step schedule for the number of time steps a user will run, on calibration data.

The schedule decides what a signGD network can do in T steps: its sum bounds how far a neuron can
travel, its last steps bound how finely it settles, and in a deep network each layer tracks a
target that is still moving, so the decay must leave room to correct early moves. The paper's
``exponential(0.15, 0.95)`` is a good compromise around T = 64..256; at T = 8..32 a larger decay
rate settles sooner. The best trade-off depends on the network's depth and ranges, so it is
measured rather than guessed: every candidate, ``exponential(lr, decay)`` or a few
``adaptive(lr, grow, shrink)`` (per-neuron steps, ``signgd.schedules.adaptive``: picked for the VGG,
ResNet and ResMLP at T = 8..64 and the ViT at T=128, not for the ConvNeXt and Mixer, in
benchmarks/latency.py), is simulated for T steps on a few calibration samples, and the one whose
outputs agree best with the ANN wins (agreement of the arg-max first, the relative output error to
break ties). The paper's schedule is always a candidate, so on the tuning samples the result is
never worse than it. Past the longest T scored every candidate goes on with Rprop's per-neuron gains
in powers of two (``continued``, ``adaptive(start=)``), so a network run longer than it was tuned for
keeps converging. benchmarks/latency.py shows what it buys per architecture. (A local
refinement around the best grid point was tried and dropped: on 256 samples its gains were
sampling noise and lost accuracy on test data.)

Scoring every candidate in full dominated conversion time (22 simulations of 64 steps: 28 s against
0.5 s untuned on the digits CNN, and most of a zoo model's minutes), so candidates are screened first
(successive halving): all of them on the first ``SCREEN_SAMPLES`` samples, for the steps up to a quarter of
the longest T when several T are scored (the first half of ``DEFAULT_STEPS``), then the best ``SURVIVORS``
and the paper's schedule in full. benchmarks/tuning_screen.py measures what the screen costs in the
chosen schedule's score and what it saves in time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import distributed as _dist
from . import schedules as sched
from .configured import run_as, set_scales
from .costs import EnergyModel, StepCounter, ann_energy, energy_per_sample
from .dynamics import BAND_DYNAMICS
from .feedback import bar

#: The grid of exponential schedules ``lr * decay**(t-1)``, plus the paper's (0.15, 0.95).
LEARNING_RATES = (0.05, 0.1, 0.2, 0.35)
DECAYS = (0.8, 0.87, 0.93, 0.97)
PAPER = (0.15, 0.95)
#: Adaptive candidates ``(lr, grow, shrink)``: Rprop's classic (1.2, 0.5) at three start steps, and a
#: gentler (1.1, 0.6) for targets that keep moving.
ADAPTIVE = ((0.1, 1.2, 0.5), (0.2, 1.2, 0.5), (0.35, 1.2, 0.5), (0.2, 1.1, 0.6), (0.35, 1.1, 0.6))
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
MIN_AGREEMENT = 0.99
ENERGY_SAMPLES = 64
#: The steps ``convert`` tunes for when it is given no ``T``: one schedule that does well over the
#: range users evaluate at (its score is the mean over these T).
DEFAULT_STEPS = (8, 16, 32, 64)
#: The steps ``preset="low-energy"`` picks its T from when it is given none (one simulation of the longest
#: scores them all; the graded neuron often agrees with the ANN by T=4-6).
ENERGY_STEPS = (4, 6, 8, 12, 16, 32, 64)
#: Past the longest T scored every candidate goes on with Rprop's per-neuron gains ``(grow, shrink)`` in powers of two
#: (``continued``), the gain's floor decaying from this multiple of that T (``adaptive(tail=)``: from the longest T
#: itself it slowed torchvision swin_v2_t, still far from its ANN at T=64; docs/defaults.md).
CONTINUE_RULE = (1.2, 0.5)
TAIL_FACTOR = 2
#: The screen of ``tune_schedule``: how many samples every candidate is first scored on, and how many of the
#: best go on to be scored in full (the paper's schedule always does).
SCREEN_SAMPLES = 32
SURVIVORS = 6


@dataclass
class Candidate:
    schedule: sched.Schedule
    agreement: float  # fraction of samples whose arg-max output equals the ANN's
    error: float  # ||SNN output - ANN output|| / ||ANN output|| over the samples
    screened_out: bool = False  # scored by the screen only (fewer samples or steps): ranks after the rest

    @property
    def key(self):
        return (self.screened_out, -self.agreement, self.error)


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

    def __repr__(self) -> str:
        return (f"{self.dynamics} neurons, {self.schedule!r}, tolerance {self.tolerance:g}, scale {self.scale}, "
                f"T={self.T}: "
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
                f"samples (at least {100 * self.min_agreement:.0f}% agreement with the ANN)",
                "| dynamics | schedule | tolerance | scale | T | agreement (%) | relative error | energy / ANN |",
                "|---|---|---:|---|---:|---:|---:|---:|"]
        rows += [f"| {c.dynamics} | {c.schedule!r} | {c.tolerance:g} | {c.scale} | {c.T} | {100 * c.agreement:.2f} | "
                 f"{c.error:.4f} | {c.energy_ratio:.3f} |"
                 for c in sorted(self.candidates, key=lambda c: c.energy_ratio)]
        return "\n".join(rows)


@dataclass
class TuningResult:
    """The chosen schedule and every candidate's score (best first)."""

    T: int | tuple[int, ...]  # a tuple when tuned across several T (the score is the mean over them)
    samples: int
    candidates: list[Candidate] = field(default_factory=list)
    screen: str = ""  # what the screen scored every candidate on ("" when all were scored in full)
    by_error: bool = False  # ranked by the relative error alone: the ANN's arg-max was one class (``_one_class``)

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    @property
    def schedule(self) -> sched.Schedule:
        return self.best.schedule

    @property
    def paper(self) -> Candidate:
        """The paper's schedule's score, for comparison."""
        return next(c for c in self.candidates  # exponential(0.15, 0.95), continued past the steps scored
                    if (c.schedule.params.get("lr"), c.schedule.params.get("decay")) == PAPER)

    def table(self) -> str:
        rows = [f"schedule tuned for T={steps_text(self.T)} on {self.samples} calibration samples"
                + (f" (every candidate screened on {self.screen}; * = screened out, scored there only)"
                   if self.screen else "")
                + ("; ranked by the relative error: the ANN's arg-max is one class on every sample" if self.by_error
                   else ""),
                "| schedule | agreement (%) | relative error |", "|---|---:|---:|"]
        rows += [f"| {c.schedule!r}{' *' if c.screened_out else ''} | {100 * c.agreement:.2f} | {c.error:.4f} |"
                 for c in self.candidates]
        return "\n".join(rows)


def check_steps(T) -> int | tuple[int, ...]:
    """``T`` as the positive integer number of steps a schedule is tuned for, or a tuple of them
    (sorted, without repeats) to tune one schedule across several; a clear error otherwise."""
    if isinstance(T, (list, tuple)) and T:
        return tuple(sorted({check_steps(t) for t in T}))
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer number of time steps to tune for (or a list of them), "
                         f"got {T!r}")
    return T


def steps_text(T) -> str:
    """``16`` or ``{8, 16, 32, 64}``: T as a summary names it."""
    return "{" + ", ".join(map(str, T)) + "}" if isinstance(T, tuple) else str(T)


def tune_schedule(snn, x: torch.Tensor, T: int, *, learning_rates=LEARNING_RATES, decays=DECAYS,
                  adaptive=ADAPTIVE, screen: bool = True, progress: bool | None = None) -> TuningResult:
    """Pick the schedule that agrees best with the ANN after ``T`` steps on inputs ``x`` (``T`` a
    list: best on average over those steps, from one simulation of ``max(T)`` steps each): the
    exponential grid ``learning_rates`` x ``decays`` plus the paper's, and the ``adaptive``
    ``(lr, grow, shrink)`` candidates (``()`` for none).

    ``screen`` (successive halving, this module's docstring): score every candidate on the first
    ``SCREEN_SAMPLES`` samples (and, with several T, only the T up to a quarter of the longest), then the
    ``SURVIVORS`` best and the paper's schedule on all of ``x``; the screened-out candidates rank after
    them. ``screen=False`` scores every candidate in full.

    ``snn`` keeps its own schedule (each candidate runs through ``snn.simulate(..., schedule=)``);
    set ``snn.schedule = result.schedule`` to use the winner (``convert`` does this when given
    ``T``). Cost without the screen: one T-step simulation of ``x`` per candidate (22 by default).
    ``progress``: a tqdm bar over the candidates (``signgd.feedback``; default: when stderr is a terminal).
    """
    T = check_steps(T)
    steps = list(T) if isinstance(T, tuple) else [T]
    if x.shape[0] == 0:
        raise ValueError("tuning the schedule needs at least one calibration sample")
    with torch.inference_mode():
        ann_out = snn.ann(x)
    grid = dict.fromkeys([PAPER, *((lr, decay) for decay in decays for lr in learning_rates)])
    # Every candidate goes on past the longest T scored with Rprop's gains (``continued``): the steps scored are
    # unchanged, and a network still far from its ANN there keeps converging.
    schedules = [continued(max(steps), lr, decay=decay) for lr, decay in grid]
    schedules += [continued(max(steps), lr, grow=grow, shrink=shrink) for lr, grow, shrink in dict.fromkeys(adaptive)]
    by_error = _one_class(ann_out)
    screen_steps = [t for t in steps if t <= max(steps) // 4] or steps
    screen_samples = min(SCREEN_SAMPLES, int(x.shape[0]))
    if not screen or len(schedules) <= SURVIVORS + 1 or (screen_steps == steps and screen_samples == x.shape[0]):
        return TuningResult(T, int(x.shape[0]), _scored(snn, schedules, x, steps, ann_out, progress, T,
                                                         by_error=by_error), by_error=by_error)
    screened = _scored(snn, schedules, x[:screen_samples], screen_steps, ann_out[:screen_samples], progress, T,
                       "screen", by_error=by_error)
    survivors = [c.schedule for c in screened[:SURVIVORS]]
    if schedules[0] not in survivors:  # the paper's schedule: the result is never worse than it
        survivors.append(schedules[0])
    finalists = _scored(snn, survivors, x, steps, ann_out, progress, T, by_error=by_error)
    rest = [Candidate(c.schedule, c.agreement, c.error, screened_out=True) for c in screened
            if c.schedule not in survivors]
    shown = tuple(screen_steps) if len(screen_steps) > 1 else screen_steps[0]
    what = f"{screen_samples} samples" + (f" at T={steps_text(shown)}" if screen_steps != steps else "")
    return TuningResult(T, int(x.shape[0]), finalists + rest, screen=what, by_error=by_error)


def continued(T: int, lr: float, decay: float = 1.0, grow: float = 1.0, shrink: float = 1.0) -> sched.Schedule:
    """A candidate as it is scored up to ``T`` (``exponential(lr, decay)``, or ``adaptive(lr, grow, shrink)``),
    continued past ``T`` by Rprop's gains in powers of two: ``adaptive(lr, *CONTINUE_RULE, pow2=True, start=T, ...)``
    with that candidate as its early phase, the gain's floor decaying from ``TAIL_FACTOR * T``. Why: the geometric
    steps that agree best with the ANN at T <= 64 sum to a finite reach and are ~0 a few dozen steps later, so a
    network still far from its ANN there stayed there however long it ran (torchvision efficientnet_v2_s: 0.35 at
    T=64 and at T=256; harmonic steps past T, the tail before, moved too little from a step that small: 0.346), and
    the gentle adaptive rule (1.1, 0.6) follows targets that still move slowly (swin_v2_t: 0.27 at T=256).
    Past ``T`` a neuron that keeps firing the same way grows its step until it arrives and one that has settled
    halves it (3.2e-4 and 0.013 at T=256; docs/defaults.md). The steps scored are the candidate's, bit for bit (an
    exponential one run no further than ``T`` is simulated as one, ``simulator.simulate``), and powers of two keep
    every synapse an AC past ``T``."""
    return sched.adaptive(lr, *CONTINUE_RULE, pow2=True, tail=TAIL_FACTOR * T, start=T, decay=decay, early_grow=grow,
                          early_shrink=shrink)


def _one_class(ann_out: torch.Tensor) -> bool:
    """Whether the ANN's arg-max is the same class on every tuning sample (of several). Then the arg-max agreement
    cannot tell an SNN that tracks the ANN from one that barely moves and outputs its biases' class (timm
    botnet26t_256 at random init: 16 of 16 samples in one class; agreement picked ``exponential(0.05, 0.8)``, whose
    error stayed at 0.92 from T=32 to 256, docs/zoo_notes.md), so the relative error ranks the candidates."""
    if ann_out.dim() < 2 or ann_out.shape[0] < 2 or ann_out.shape[-1] < 2:
        return False
    classes = ann_out.reshape(-1, ann_out.shape[-1]).argmax(-1)
    return bool((classes == classes[0]).all())


def _scored(snn, schedules, x, steps, ann_out, progress, T, stage: str = "", by_error: bool = False) -> list[Candidate]:
    """Every schedule's mean agreement and error over ``steps`` on ``x`` (one simulation each), best first
    (``by_error``: by the error alone, ``_one_class``)."""
    candidates = []
    desc = f"tune for T={steps_text(T)}" + (f" ({stage})" if stage else "")
    for schedule in bar(schedules, progress, desc=desc, unit="schedule"):
        outputs = snn.simulate(x, steps, schedule=schedule).outputs
        scores = [_agreement_and_error(outputs[t], ann_out) for t in steps]
        candidates.append(Candidate(schedule, sum(a for a, _ in scores) / len(steps),
                                    sum(e for _, e in scores) / len(steps)))
    return sorted(candidates, key=(lambda c: (c.screened_out, c.error)) if by_error else (lambda c: c.key))


def _agreement_and_error(out: torch.Tensor, ann_out: torch.Tensor) -> tuple[float, float]:
    out, ann_out = out.double(), ann_out.double()
    error = float((out - ann_out).norm() / ann_out.norm().clamp_min(1e-12))
    if not torch.isfinite(out).all():
        return 0.0, float("inf")
    if ann_out.dim() >= 2:
        agreement = float((out.argmax(-1) == ann_out.argmax(-1)).double().mean())
    else:
        agreement = 0.0  # no classes to agree on: the error alone decides
    return agreement, error


def tune_energy(snn, x: torch.Tensor, T, *, learning_rates=None, decays=None, floors=None, pow2: bool = True,
                tolerances=None, graded_steps=None, kinds=BAND_DYNAMICS, min_agreement: float = MIN_AGREEMENT,
                energy_samples: int = ENERGY_SAMPLES, model: EnergyModel = EnergyModel(),
                progress: bool | None = None, mean_scales: dict | None = None,
                graded_mean_steps=None) -> EnergyTuningResult:
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
    network's own scales, at each of ``graded_mean_steps`` (``ENERGY_GRADED_MEAN_STEPS``)."""
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
    grid = [(*g, "max") for g in grid]
    if "graded" in kinds:
        grid += [("graded", sched.exponential(step, 1.0), tolerances[0], "max")
                 for step in graded_steps or ENERGY_GRADED_STEPS]
        if mean_scales is not None:
            grid += [("graded", sched.exponential(step, 1.0), tolerances[0], "mean")
                     for step in graded_mean_steps or ENERGY_GRADED_MEAN_STEPS]
    candidates, counters = [], {}
    for dynamics, schedule, tol, scale in bar(grid, progress, desc=f"tune for energy at T={steps_text(tuple(steps))}",
                                              unit="candidate"):
        with run_as(snn, dynamics, mean_scales if scale == "mean" else None):
            outputs = snn.simulate(x, steps, schedule=schedule, tolerance=tol).outputs
            if dynamics not in counters:  # one per dynamics (its event costs), reset for each candidate
                counters[dynamics] = StepCounter(snn, max(steps))
            counter = counters[dynamics]
            counter.start(sub, schedule, reset=True)
            snn.simulate(sub, max(steps), schedule=schedule, tolerance=tol, probe=counter.layer)
            counter.finish_batch()
            energy = energy_per_sample(snn, counter, sub.shape[0], model, schedule)
        for t in steps:
            agreement, error = _agreement_and_error(outputs[t], ann_out)
            candidates.append(EnergyCandidate(schedule, tol, t, agreement, error, float(energy[t - 1]) / ann_pj,
                                              dynamics, scale))
    feasible = [c for c in candidates if c.agreement >= min_agreement]
    best = min(feasible, key=lambda c: (c.energy_ratio, -c.agreement)) if feasible else \
        min(candidates, key=lambda c: (-c.agreement, c.energy_ratio))
    return EnergyTuningResult(tuple(steps), int(x.shape[0]), min_agreement, best, candidates)


def tune_network(snn, x: torch.Tensor, T, objective: str = "agreement", tune_tolerance: bool = False,
                 share: bool = False, progress: bool | None = None, mean_scales: dict | None = None) -> tuple[str, str]:
    """Tune ``snn`` in place for ``T`` on ``x`` (``convert`` does this): ``objective="agreement"`` picks the
    schedule that agrees best (``tune_schedule``; no adaptive candidates for the sparse neuron, whose steps
    are the schedule's), ``"energy"`` the cheapest sparse configuration that agrees (``tune_energy``; its
    tolerance too when ``tune_tolerance``, and the T it needs, recorded as ``settings["tuned_for"]``).
    ``mean_scales``: the energy objective may also divide every normalized neuron by these (its calibration mean
    ``|f(x)|``), recorded as ``settings["scale"] = "mean"`` when chosen. With ``share`` rank 0's choice is kept on
    every rank. Returns the conversion log's note and what the summary line says."""
    sparse = snn.settings["dynamics"] in BAND_DYNAMICS
    if objective == "energy":
        tolerances = None if tune_tolerance else (snn.settings["tolerance"],)
        kinds = ("graded",) if snn.settings["dynamics"] == "graded" else BAND_DYNAMICS  # asked for: graded only
        result = tune_energy(snn, x, T, tolerances=tolerances, kinds=kinds, progress=progress, mean_scales=mean_scales)
        chosen = {"schedule": result.schedule.spec(), "tolerance": result.best.tolerance, "T": result.best.T,
                  "dynamics": result.best.dynamics, "scale": result.best.scale}
    else:
        result = tune_schedule(snn, x, T, adaptive=() if sparse else ADAPTIVE, progress=progress)
        chosen = {"schedule": result.schedule.spec()}
    if share:  # every rank tunes the same network; rank 0's choice is the one kept
        chosen = _dist.broadcast_object(chosen)
    snn.schedule = sched.make_schedule(chosen["schedule"])
    snn.settings["schedule"] = chosen["schedule"]
    snn.tuning = result
    if objective == "energy":
        snn.settings["tolerance"], snn.settings["tuned_for"] = chosen["tolerance"], chosen["T"]
        snn.settings["dynamics"] = chosen["dynamics"]
        if chosen["scale"] == "mean":
            set_scales(snn, mean_scales)
            snn.settings["scale"] = "mean"
            if share:  # rank 0's scales on every rank, as convert does with the others
                _dist.broadcast_network(snn)
        verdict = "" if result.reached else (f"; no candidate reached {100 * result.min_agreement:.0f}% agreement, "
                                             f"this one agrees best")
        scaled = ", scaled by the calibration mean |f(x)|" if chosen["scale"] == "mean" else ""
        what = (f"{chosen['dynamics']} neurons, {snn.schedule!r}, tolerance {chosen['tolerance']:g}{scaled}, "
                f"T={chosen['T']}")
        return (f"tuned for energy at T={steps_text(result.T)} on {result.samples} calibration samples: {what} "
                f"({100 * result.best.agreement:.1f}% agreement with the ANN, {result.best.energy_ratio:.2f}x "
                f"its energy{verdict})",
                f"{what} tuned for energy at T={steps_text(result.T)} on {result.samples} samples"
                + ("" if result.reached else f" (none agreed with the ANN on {100 * result.min_agreement:.0f}% of "
                   f"them; best {100 * result.best.agreement:.1f}%: the default may serve this model better)"))
    return (f"tuned the schedule for T={steps_text(T)} on {result.samples} calibration samples: "
            f"{snn.schedule!r} ({100 * result.best.agreement:.1f}% agreement with the ANN; the paper's schedule: "
            f"{100 * result.paper.agreement:.1f}%)",
            f"schedule {snn.schedule!r} tuned for T={steps_text(T)} on {result.samples} samples")
