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

The energy objective of ``preset="low-energy"`` is ``signgd.energy_tuning``; ``signgd.tuner`` applies either to a
network.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import schedules as sched
from .feedback import bar

#: The grid of exponential schedules ``lr * decay**(t-1)``, plus the paper's (0.15, 0.95).
LEARNING_RATES = (0.05, 0.1, 0.2, 0.35)
DECAYS = (0.8, 0.87, 0.93, 0.97)
PAPER = (0.15, 0.95)
#: Adaptive candidates ``(lr, grow, shrink)``: Rprop's classic (1.2, 0.5) at three start steps, and a
#: gentler (1.1, 0.6) for targets that keep moving.
ADAPTIVE = ((0.1, 1.2, 0.5), (0.2, 1.2, 0.5), (0.35, 1.2, 0.5), (0.2, 1.1, 0.6), (0.35, 1.1, 0.6))
#: The steps ``convert`` tunes for when it is given no ``T``: one schedule that does well over the
#: range users evaluate at (its score is the mean over these T).
DEFAULT_STEPS = (8, 16, 32, 64)
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
        scores = [agreement_and_error(outputs[t], ann_out) for t in steps]
        candidates.append(Candidate(schedule, sum(a for a, _ in scores) / len(steps),
                                    sum(e for _, e in scores) / len(steps)))
    return sorted(candidates, key=(lambda c: (c.screened_out, c.error)) if by_error else (lambda c: c.key))


def agreement_and_error(out: torch.Tensor, ann_out: torch.Tensor) -> tuple[float, float]:
    out, ann_out = out.double(), ann_out.double()
    error = float((out - ann_out).norm() / ann_out.norm().clamp_min(1e-12))
    if not torch.isfinite(out).all():
        return 0.0, float("inf")
    if ann_out.dim() >= 2:
        agreement = float((out.argmax(-1) == ann_out.argmax(-1)).double().mean())
    else:
        agreement = 0.0  # no classes to agree on: the error alone decides
    return agreement, error
