"""What ``convert``'s arguments and preset resolve to: the dynamics, schedule, encoding, normalization,
the T to tune for and what tuning optimizes, checked once with one-line errors.

Defaults (docs/defaults.md): signGD and its sparse form tune one schedule across T in
``tuning.DEFAULT_STEPS`` with ``analog`` input when neither ``T`` nor a schedule is given; the graded
neuron takes the constant ``exponential(1/64, 1)`` (its band) untuned; the subgradient and IF dynamics take
``inverse(1)`` / no steps with ``analog`` input. Presets:

- ``"paper"``: the paper's settings (``normalize="relu"``, ``float`` input, ``exponential(0.15, 0.95)``,
  nothing tuned), so results compare with the paper;
- ``"low-energy"``: the sparse or the graded neuron (``dynamics="sparse"``/``"graded"``, whichever is cheaper),
  ``analog`` input, every neuron normalized, and the dynamics, schedule, tolerance, scale, layer windows
  (``window``, ``signgd.windows``) and (without ``T``) the number of steps tuned for the least energy at which the SNN
  agrees with the ANN
  (``signgd.energy_tuning.tune_energy``; docs/sparse.md).

Where the estimates start (``start``, ``STARTS``): ``"zero"`` (the paper's neuron), ``"variance"`` (the
neurons that estimate a variance, the ``square`` neurons of LayerNorm, GroupNorm and ``F.normalize``, start
at their calibration mean; every other neuron at 0), ``"mean"`` (every neuron at its calibration mean) or
``"active"`` (``"variance"``, and every element of a ReLU or max neuron at its calibration mean where its
output was positive on at least ``ACTIVE_SHARE`` of the calibration samples, else at 0). ``"active"`` keeps the
exact start of a ReLU that is usually off (it stays silent while off, where a ReLU started at its mean comes
down and settles up to ``tolerance * eta_t`` above 0, one-sided over many neurons) and skips most of the climb
of one that is usually on (benchmarks/sparse_start.py, docs/sparse.md). It leaves the other targets at 0:
applied to every target (GELU, exp, products) it cost the sparse ViT 6.5 points at T=16.
The sparse and graded dynamics default to ``"active"``: a silent square neuron would otherwise leave the variance at
~``eps`` for the first steps, and the normalized values its neuron divides by it run far off, and a ReLU
network reaches its ANN at fewer steps and spikes (docs/sparse.md); the other dynamics default to ``"zero"``.

Explicit arguments win over a preset's.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import schedules as sched
from .codecs import ENCODINGS
from .dynamics import BAND_DYNAMICS, DYNAMICS, check_tolerance, passes_estimates
from .energy_tuning import ENERGY_STEPS
from .schedules import check_dynamics
from .tuning import DEFAULT_STEPS, check_steps
from .windows import check_window

__all__ = ["PRESETS", "NORMALIZATIONS", "STARTS", "SCALES", "DYNAMICS", "Options", "resolve"]

NORMALIZATIONS = ("relu", "all", "none")
PRESETS = ("paper", "low-energy")
STARTS = ("zero", "variance", "mean", "active")
#: What a normalized neuron element is divided by: its calibration ``max |f(x)|`` or its mean ``|f(x)|``. Why
#: "mean": a band (the sparse and graded neurons' ``tolerance * eta_t``) is a fraction of the scale, and where an
#: element's largest value is far above its usual ones (a softmax's exp: maximum 1e3-1e7 times the median on the
#: Fashion-MNIST ViT) a fraction of the maximum leaves the usual values almost unresolved (docs/scale_rule.md).
SCALES = ("max", "mean")
#: The targets ``start="variance"`` starts at their calibration mean: the variance estimates of the norms.
VARIANCE_TARGETS = frozenset({"square"})
#: ``start="active"``: the targets whose elements start at their mean when their output was positive on at least
#: ``ACTIVE_SHARE`` of the calibration samples (exactly 0 when off; benchmarks/sparse_start.py).
ACTIVE_TARGETS = frozenset({"relu", "max"})
ACTIVE_SHARE = 0.8
#: Each dynamics' schedule when none is given (and none is tuned). The graded neuron's is constant: its steps
#: are its gaps, the schedule only sets its band, ``tolerance * 1/64`` (docs/sparse.md, "Graded spikes").
DEFAULT_SCHEDULES = {"signgd": sched.exponential, "sparse": lambda: sched.exponential(0.3, 0.9),
                     "graded": lambda: sched.exponential(1 / 64, 1.0), "subgradient": lambda: sched.inverse(1.0),
                     "if": lambda: sched.inverse(1.0)}


@dataclass
class Options:
    dynamics: str
    schedule: sched.Schedule
    encoding: str
    normalize: str
    T: int | tuple[int, ...] | None  # the steps tuned for (None: no tuning)
    tune: bool  # tune the schedule (and the tolerance) on the calibration data
    objective: str  # "agreement" (the best agreement with the ANN) or "energy" (the least energy that agrees)
    tolerance: float | None  # the sparse dynamics' silence band, a fraction of eta_t
    tune_tolerance: bool  # the energy objective also picks the tolerance (none was given)
    start: str = "zero"  # where the estimates start (STARTS)
    scale: str = "max"  # the calibration statistic a normalized element is divided by (SCALES)
    window: int | None = None  # steps per neuron layer, one layer after the other (signgd.windows), or None
    window_limit: int | None = None  # the energy tuner's windows must settle by this step (None: any)

    def settings(self) -> dict:
        """The settings a network records beyond the common ones: those that differ from their defaults."""
        extra = {"tolerance": self.tolerance, "start": None if self.start == "zero" else self.start,
                 "scale": None if self.scale == "max" else self.scale, "window": self.window}
        return {k: v for k, v in extra.items() if v is not None}


def resolve(dynamics: str, schedule, encoding: str | None, normalize: str | None, T, preset: str | None,
            tolerance, start: str | None = None, scale: str | None = None, window: int | None = None) -> Options:
    """The options ``convert`` runs with, or a ValueError naming the bad argument and the choices."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)} or leave it out")
    objective = "agreement"
    if preset == "low-energy":
        if dynamics not in ("signgd", "sparse", "graded"):
            raise ValueError(f"preset='low-energy' builds sparse or graded signGD neurons; leave dynamics out "
                             f"(got dynamics={dynamics!r})")
        dynamics, objective = ("graded" if dynamics == "graded" else "sparse"), "energy"
        encoding, normalize = encoding or "analog", normalize or "all"
    if dynamics not in DYNAMICS:
        raise ValueError(f"unknown dynamics {dynamics!r}; choose one of {list(DYNAMICS)}")
    estimates = passes_estimates(dynamics)
    default_encoding = "float" if dynamics == "signgd" else "analog"
    if preset == "paper":  # the paper's normalization and encoding (its schedule is the default)
        if dynamics in BAND_DYNAMICS:
            raise ValueError("preset='paper' is the paper's binary neuron; use dynamics='signgd' with it")
        normalize, encoding = normalize or "relu", encoding or default_encoding
    if dynamics == "graded" and T is not None and preset is None:
        raise ValueError("dynamics='graded' is not tuned for T: its band (schedule x tolerance) sets its precision "
                         "and it settles in a few steps; leave T out (or use preset='low-energy')")
    window_limit = None  # the T asked for, if any, bounds when the energy tuner's layer windows must settle
    if T is not None:
        if not estimates:
            raise ValueError(f"tuning the schedule for T covers the signGD dynamics; leave T out for "
                             f"dynamics={dynamics!r}")
        T = check_steps(T)
        window_limit = max(T) if isinstance(T, tuple) else T
    elif objective == "energy" and schedule is None:
        T = ENERGY_STEPS  # the cheapest T that agrees: the graded neuron settles by T=4-8
    elif estimates and preset != "paper" and schedule is None and dynamics != "graded":
        T = DEFAULT_STEPS  # the default: one schedule tuned across the range of T users evaluate at
    if T is not None:
        encoding = encoding or "analog"
    normalize = normalize or ("all" if estimates else "relu")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {list(NORMALIZATIONS)}")
    encoding = encoding or default_encoding
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {list(ENCODINGS)}")
    if dynamics == "if" and schedule is not None:
        raise ValueError("the IF dynamics takes no step sizes (its output is the mean of the readouts); "
                         "leave schedule out for dynamics='if'")
    tune = T is not None and schedule is None
    tune_tolerance = tune and objective == "energy" and tolerance is None
    tolerance = check_tolerance(tolerance, dynamics)
    default = DEFAULT_SCHEDULES[dynamics]()
    schedule = sched.make_schedule(schedule, default=default)
    check_dynamics(schedule, dynamics)
    if start is not None and start not in STARTS:
        raise ValueError(f"unknown start {start!r}; choose one of {list(STARTS)}")
    if start not in (None, "zero") and not estimates:
        raise ValueError(f"start={start!r} sets where signGD estimates start; dynamics={dynamics!r} has none: "
                         f"leave start out")
    start = start or ("active" if dynamics in BAND_DYNAMICS else "zero")
    scale = scale or "max"
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {list(SCALES)}")
    if scale != "max" and normalize == "none":
        raise ValueError(f"scale={scale!r} sets what normalized neurons are divided by, and normalize='none' "
                         f"normalizes none; leave scale out or normalize 'all'")
    if window is not None and objective == "energy":
        raise ValueError("window with a tuned conversion: preset='low-energy' picks the layer windows itself; leave "
                         "window out, or give it with dynamics='graded' and a schedule")
    window = check_window(window, dynamics, encoding)
    return Options(dynamics, schedule, encoding, normalize, T, tune, objective if tune else "agreement",
                   tolerance, tune_tolerance, start, scale, window, window_limit)


def start_estimate(target: str, start: str, mean, active_share):
    """Where a neuron with this target starts under ``start`` (raw units, per element), from its calibration
    ``mean`` and ``active_share`` (the fraction of samples with a positive output); ``None``: at 0."""
    if start == "mean" or (start in ("variance", "active") and target in VARIANCE_TARGETS):
        return mean
    if start == "active" and target in ACTIVE_TARGETS:
        return mean * (active_share >= ACTIVE_SHARE).to(mean.dtype)
    return None
