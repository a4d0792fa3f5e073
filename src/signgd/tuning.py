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
never worse than it. benchmarks/latency.py shows what it buys per architecture. (A local
refinement around the best grid point was tried and dropped: on 256 samples its gains were
sampling noise and lost accuracy on test data.)
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


@dataclass
class Candidate:
    schedule: sched.Schedule
    agreement: float  # fraction of samples whose arg-max output equals the ANN's
    error: float  # ||SNN output - ANN output|| / ||ANN output|| over the samples

    @property
    def key(self):
        return (-self.agreement, self.error)


@dataclass
class TuningResult:
    """The chosen schedule and every candidate's score (best first)."""

    T: int | tuple[int, ...]  # a tuple when tuned across several T (the score is the mean over them)
    samples: int
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    @property
    def schedule(self) -> sched.Schedule:
        return self.best.schedule

    @property
    def paper(self) -> Candidate:
        """The paper's schedule's score, for comparison."""
        return next(c for c in self.candidates if c.schedule.name == "exponential"
                    and (c.schedule.params["lr"], c.schedule.params["decay"]) == PAPER)

    def table(self) -> str:
        rows = [f"schedule tuned for T={steps_text(self.T)} on {self.samples} calibration samples",
                "| schedule | agreement (%) | relative error |", "|---|---:|---:|"]
        rows += [f"| {c.schedule!r} | {100 * c.agreement:.2f} | {c.error:.4f} |" for c in self.candidates]
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
                  adaptive=ADAPTIVE, progress: bool | None = None) -> TuningResult:
    """Pick the schedule that agrees best with the ANN after ``T`` steps on inputs ``x`` (``T`` a
    list: best on average over those steps, from one simulation of ``max(T)`` steps each): the
    exponential grid ``learning_rates`` x ``decays`` plus the paper's, and the ``adaptive``
    ``(lr, grow, shrink)`` candidates (``()`` for none).

    ``snn`` keeps its own schedule (each candidate runs through ``snn.simulate(..., schedule=)``);
    set ``snn.schedule = result.schedule`` to use the winner (``convert`` does this when given
    ``T``). Cost: one T-step simulation of ``x`` per candidate (22 by default). ``progress``: a tqdm
    bar over the candidates (``signgd.feedback``; default: when stderr is a terminal).
    """
    T = check_steps(T)
    steps = list(T) if isinstance(T, tuple) else [T]
    if x.shape[0] == 0:
        raise ValueError("tuning the schedule needs at least one calibration sample")
    with torch.inference_mode():
        ann_out = snn.ann(x)
    grid = dict.fromkeys([PAPER, *((lr, decay) for decay in decays for lr in learning_rates)])
    schedules = [sched.exponential(lr, decay) for lr, decay in grid]
    schedules += [sched.adaptive(*params) for params in dict.fromkeys(adaptive)]
    candidates = []
    for schedule in bar(schedules, progress, desc=f"tune for T={steps_text(T)}", unit="schedule"):
        outputs = snn.simulate(x, steps, schedule=schedule).outputs
        scores = [_agreement_and_error(outputs[t], ann_out) for t in steps]
        candidates.append(Candidate(schedule, sum(a for a, _ in scores) / len(steps),
                                    sum(e for _, e in scores) / len(steps)))
    return TuningResult(T, int(x.shape[0]), sorted(candidates, key=lambda c: c.key))


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
