"""Step-size schedules ``eta_t`` (t = 1, 2, ...) of the neuronal dynamics.

A signGD neuron moves its estimate by ``eta_t`` per step, so the schedule decides both how fast a
neuron reaches its target (the sum of the steps bounds how far it can travel) and how precisely it
settles (the last step bounds its error). Schedules are evaluated in float64 and then cast, so long
runs (there is no cap on T) lose no precision to the accumulation of powers.

Adaptive steps (``adaptive``): each signGD neuron grows its step while its spikes repeat and shrinks
it when they alternate (the sign rule of Rprop, applied to the neuron's own estimate). Why: with a
fixed schedule every neuron takes the same steps, so one schedule must serve the neuron that is far
from its target (wants large steps) and the one that has arrived (wants small ones); at few time
steps no schedule serves both (``docs/latency_causes.md``). A neuron whose spikes repeat is still
travelling, one whose spikes alternate brackets its target: growing the step in the first case and
halving it in the second is a bisection that reaches any range and then settles geometrically.

The rule, per neuron, with ``eta_t`` the schedule's step and ``g`` the neuron's gain:
``s_t = 1[y_{t-1} >= f(x_t)]``; ``g_1 = 1``; for ``t > 1``, ``g_t = g_{t-1} * grow`` when
``s_t == s_{t-1}`` and ``g_{t-1} * shrink`` otherwise, clamped to ``[MIN_GAIN, MAX_GAIN]`` (the floor
decaying as ``MIN_GAIN * tail / t`` past ``adaptive(tail=)``'s step, ``gain_floors``);
``y_t = y_{t-1} - eta_t g_t (2 s_t - 1)``. Everything it uses is in the spike train, so a receiver
reconstructs the sender's estimate from spikes alone (``signgd.event_driven``). With ``grow = shrink = 1`` it is
the plain signGD neuron, bit for bit; ``adaptive(start=)`` gives it an early phase (``phases``).

Power-of-two steps (``adaptive(..., pow2=True)``): the gain follows the same rule, but the step a neuron takes is
``eta_t`` times its gain rounded to the nearest power of two in log scale (``signgd.kernels.pow2_step``), with ``lr``
rounded too: ``y_t = y_{t-1} - eta_t P(g_t) (2 s_t - 1)``. Why: a receiver then scales every synapse by ``+-2**k``, an
exponent add (``signgd.costs`` counts an AC); rounding the step, not ``grow`` and ``shrink``, keeps Rprop's gentle
``(1.2, 0.5)`` (``docs/adaptive_pow2.md``). The rounding works on the bits, so torch, the C kernel and the
event-driven receivers agree bit for bit; one caveat: estimates on a shared dyadic grid make a max-pooling neuron's
ties depend on the last bit of ``y * scale`` (the engine) or of the sum of scaled changes (the reference), and the two
may fire differently from there (networks without max pooling agree exactly).
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, NamedTuple, Union

import torch

__all__ = ["Schedule", "exponential", "to_power_of_two", "is_power_of_two",
           "inverse", "constant", "polynomial", "adaptive", "make_schedule", "Rule",
           "MIN_GAIN", "MAX_GAIN", "gain_floors", "Phase", "phase", "phases", "check_rule", "check_dynamics"]

#: Bounds of the adaptive gain. The floor keeps a settled neuron able to follow a target that moves
#: again (from the floor, growing by 1.2 per step takes ~38 steps back to 1); the ceiling keeps long
#: runs finite when a target is out of any reach (an infinite input).
MIN_GAIN = 1e-3
MAX_GAIN = 1e3


class Rule(NamedTuple):
    """An adaptive schedule's gain rule: ``grow``, ``shrink``, whether each step is rounded to a
    power of two (``adaptive(pow2=True)``), the step from which the gain's floor decays (``tail``, 0:
    never; ``gain_floors``), and the last step of its early phase (``start``, 0: none), in which the gain
    follows ``early`` (``(grow, shrink)``; ``(1, 1)`` keeps it at 1: the plain signGD neuron) and no step is
    rounded (``adaptive(start=)``)."""

    grow: float
    shrink: float
    pow2: bool = False
    tail: float = 0
    start: int = 0
    early: tuple[float, float] = (1.0, 1.0)

    @property
    def plain_early(self) -> bool:
        """Whether the early phase keeps the gain at 1: the plain binary signGD neuron (the fused scan runs it)."""
        return tuple(self.early) == (1.0, 1.0)


class Phase(NamedTuple):
    """What a schedule's neurons do at one step: adapt their gains (``adapting``: send every move; else binary neurons
    send their spikes), with steps in powers of two (``pow2``), by ``grow`` and ``shrink``. Read by the simulator,
    the event-driven reference and the energy count."""

    adapting: bool
    pow2: bool
    grow: float = 1.0
    shrink: float = 1.0


def phase(schedule: "Schedule", t: int) -> Phase:
    """Step ``t``'s ``Phase`` (1-based): an adaptive schedule's early phase up to its ``start`` (``Rule.early``, its
    steps not rounded) and its rule after it; binary neurons throughout for a schedule without a rule."""
    rule = schedule.rule
    if rule is None:
        return Phase(False, is_power_of_two(schedule))
    if t <= rule.start:
        return Phase(not rule.plain_early, False, *rule.early)
    return Phase(True, rule.pow2, rule.grow, rule.shrink)


def phases(schedule: "Schedule", T: int) -> list[Phase]:
    return [phase(schedule, t) for t in range(1, T + 1)]  # each step's, t = 1..T


def gain_floors(rule: Rule, t0: int, t1: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The floor of the adaptive gain at steps ``t0 .. t1 - 1`` (1-based): ``MIN_GAIN``, and past ``rule.tail``
    ``MIN_GAIN * tail / t`` (``adaptive(tail=)``); computed in float64, then cast, as ``Schedule.etas``."""
    t = torch.arange(t0, t1, dtype=torch.float64)
    floors = torch.full_like(t, MIN_GAIN)
    if rule.tail:
        floors = floors * (rule.tail / t).clamp_max(1.0)
    return floors.to(dtype=dtype, device=device)


class Schedule:
    """A named step-size sequence. ``schedule.etas(t0, t1)`` gives ``eta_t`` for ``t0 <= t < t1``.

    ``rule``: None (every neuron takes ``eta_t``), or a ``Rule`` (``grow, shrink, pow2``) when each
    neuron scales ``eta_t`` by its own gain (``adaptive``).
    """

    rule: Rule | None = None

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], **params):
        self.name = name
        self.params = params
        self._fn = fn

    def etas(self, t0: int, t1: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """Steps for ``t = t0 .. t1 - 1`` (1-based) as a 1-D tensor."""
        if t0 < 1 or t1 < t0:
            raise ValueError(f"schedule steps are 1-based: got range [{t0}, {t1})")
        t = torch.arange(t0, t1, dtype=torch.float64)
        eta = self._fn(t)
        if not isinstance(eta, torch.Tensor):
            eta = torch.as_tensor(eta, dtype=torch.float64)
        eta = eta.to(torch.float64).reshape(-1)
        if eta.numel() != t.numel():
            raise ValueError(f"schedule {self.name!r} returned {eta.numel()} steps for {t.numel()} time steps")
        if not torch.isfinite(eta).all() or (eta < 0).any():
            raise ValueError(f"schedule {self.name!r} produced a negative or non-finite step size in steps "
                             f"{t0}..{t1 - 1}; step sizes must be finite and >= 0")
        return eta.to(dtype=dtype, device=device)

    def total(self, T: int) -> float:
        """``sum(eta_1..eta_T)``: the farthest a signGD neuron can move in T steps (with an adaptive
        rule, the farthest at gain 1: its gains let a neuron travel further)."""
        return float(self.etas(1, T + 1, dtype=torch.float64).sum())

    def spec(self) -> dict:
        """The JSON-able spec ``make_schedule`` rebuilds this schedule from (reports, saved networks)."""
        return {"name": self.name, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if k != "values")
        return f"{self.name}({args})"


def exponential(lr: float = 0.15, decay: float = 0.95, floor: float = 0.0, pow2: bool = False,
                tail: float = 0) -> Schedule:
    """The paper's default: ``eta_t = lr * decay**(t-1)`` (sum to infinity: ``lr / (1 - decay)``).

    ``floor``: the steps stop decaying there, ``eta_t = max(lr * decay**(t-1), floor)``: a sparse neuron
    (``dynamics="sparse"``) then settles within ``tolerance * floor`` of its target and falls silent,
    instead of firing ever finer corrections. ``pow2``: every step rounded to the nearest power of two
    (in log scale), so that scaling by ``eta_t`` is an exponent add, not a multiply (``signgd.costs``
    counts it as an AC).

    ``tail`` (0: none): past step ``tail`` the steps decay no faster than harmonically, ``eta_t = max(lr *
    decay**(t-1), eta_tail * tail / t)``. Why: geometric steps sum to a finite reach, ``lr / (1 - decay)``, and are ~0
    a few dozen steps later; harmonic steps sum to infinity and still go to zero, so every neuron keeps moving toward
    its target and keeps settling (the step condition of subgradient methods). The tuned default used it until
    ``tuning.continued`` replaced it (docs/defaults.md)."""
    _check_positive(lr=lr)
    if not 0 < decay <= 1:
        raise ValueError(f"exponential schedule needs 0 < decay <= 1, got {decay}")
    if not (isinstance(floor, (int, float)) and math.isfinite(floor) and 0 <= floor <= lr):
        raise ValueError(f"exponential schedule needs 0 <= floor <= lr, got floor={floor!r}")
    pow2 = bool(pow2)
    tail = _check_tail(tail, "exponential", "the steps decay harmonically, eta_tail * tail / t")
    base = torch.tensor(decay, dtype=torch.float64)

    def fn(t):
        eta = lr * torch.pow(base, t - 1)
        if tail:
            eta = torch.where(t > tail, torch.maximum(eta, lr * base ** (tail - 1) * tail / t), eta)
        if floor:
            eta = eta.clamp_min(floor)
        return to_power_of_two(eta) if pow2 else eta

    extra = {**({"floor": float(floor)} if floor else {}), **({"pow2": True} if pow2 else {}),
             **({"tail": tail} if tail else {})}
    return Schedule("exponential", fn, lr=lr, decay=decay, **extra)


def _check_tail(tail, name: str, what: str) -> int | float:
    """A schedule's ``tail`` as a number (an int when whole), 0 for none; a clear error unless 0 or a step >= 1."""
    if isinstance(tail, bool) or not isinstance(tail, (int, float)) or not (tail == 0 or 1 <= tail < math.inf):
        raise ValueError(f"{name} schedule: tail must be 0 (no tail) or the step >= 1 from which {what}, "
                         f"got {tail!r}")
    return (int(tail) if tail == int(tail) else float(tail)) if tail else 0


def to_power_of_two(eta: torch.Tensor) -> torch.Tensor:
    """Each positive step rounded to the nearest power of two in log scale (zeros stay zero)."""
    return torch.where(eta > 0, torch.exp2(torch.round(torch.log2(eta.clamp_min(1e-300)))), eta)


def is_power_of_two(schedule: Schedule) -> bool:
    """Whether every step of ``schedule`` is a power of two by construction (``exponential(pow2=True)``;
    with ``adaptive(pow2=True)`` every per-neuron step ``eta_t g`` is, past its ``start``: the exponential
    steps before it are not rounded): a receiver scales by it with an exponent add."""
    return bool(schedule.params.get("pow2"))


def inverse(lr: float = 1.0) -> Schedule:
    """``eta_t = lr / (t + 1)``: with lr = 1 this is the running average of the subgradient dynamics."""
    _check_positive(lr=lr)
    return Schedule("inverse", lambda t: lr / (t + 1), lr=lr)


def constant(lr: float = 0.05) -> Schedule:
    """``eta_t = lr``: fast to reach, never settles closer than ``lr``."""
    _check_positive(lr=lr)
    return Schedule("constant", lambda t: torch.full_like(t, lr), lr=lr)


def polynomial(lr: float = 0.5, power: float = 0.5) -> Schedule:
    """``eta_t = lr * t**(-power)``: for power <= 1 the steps sum to infinity, so any range is reachable."""
    _check_positive(lr=lr)
    if power < 0:
        raise ValueError(f"polynomial schedule needs power >= 0, got {power}")
    return Schedule("polynomial", lambda t: lr * t.pow(-power), lr=lr, power=power)


def adaptive(lr: float = 0.2, grow: float = 1.2, shrink: float = 0.5, pow2: bool = False,
             tail: float = 0, start: int = 0, decay: float = 1.0, early_grow: float = 1.0,
             early_shrink: float = 1.0) -> Schedule:
    """Per-neuron steps ``lr * g``: each neuron's gain ``g`` (1 at first) grows by ``grow`` while its
    spikes repeat and shrinks by ``shrink`` when they alternate (the rule: this module's docstring). Reaches any
    range and settles geometrically: the best choice at few time steps on ReLU CNNs
    (``docs/latency_vgg.md``); signGD dynamics only.

    ``pow2``: every step a power of two, so that a receiver scales by it with an exponent add instead of
    a multiply per synapse: ``lr`` rounded to the nearest power of two (as ``exponential(pow2=True)``
    rounds its steps) and each step taken with the gain rounded likewise (the module docstring;
    ``docs/adaptive_pow2.md`` measures what it costs in accuracy and saves in energy).

    ``tail`` (0: none): from step ``tail`` on, the gain's floor decays harmonically, ``MIN_GAIN * tail / t``
    (``gain_floors``). Why: a settled neuron alternates, so its gain rests at the floor, and with a fixed floor its
    error stops falling at ``lr * MIN_GAIN``; with the tail it keeps falling with T, while a neuron still travelling
    (gain above the floor) moves as before. ``tuning.continued`` sets it to twice the longest T it scores
    (``TAIL_FACTOR``; docs/defaults.md).

    ``start`` (0: none) ends an early phase. Up to step ``start`` the steps are ``lr * decay**(t-1)`` and the gain
    follows ``(early_grow, early_shrink)``, nothing rounded: with the early gains at 1 (the default) that is the
    plain binary neuron of ``exponential(lr, decay)``, bit for bit; with ``decay = 1`` and early gains it is
    ``adaptive(lr, early_grow, early_shrink)``. After it the gain follows ``(grow, shrink)`` from the base step
    reached, ``lr * decay**(start-1)`` (rounded with ``pow2``, as are the steps). ``tuning.continued`` says why the
    tuner continues every candidate so past the T it scores."""
    _check_positive(lr=lr)
    grow, shrink = check_rule(grow, shrink)
    if isinstance(pow2, bool) or pow2 in (0, 1):
        pow2 = bool(pow2)
    else:
        raise ValueError(f"adaptive schedule: pow2 must be true or false (1 or 0), got {pow2!r}")
    tail = _check_tail(tail, "adaptive", "the gain's floor decays as MIN_GAIN * tail / t")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or start != int(start) or start < 0:
        raise ValueError(f"adaptive schedule: start must be a whole number of steps >= 0 (the last step of the early "
                         f"phase; 0: none), got {start!r}")
    start = int(start)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"adaptive schedule needs 0 < decay <= 1, got {decay!r}")
    early = check_rule(early_grow, early_shrink)
    if not start and (decay != 1 or early != (1.0, 1.0)):
        raise ValueError("adaptive schedule: decay, early_grow and early_shrink shape the steps up to start, and "
                         "start is 0; give start (the last step of the early phase), or leave them at 1")
    decay, base = float(decay), torch.tensor(float(decay), dtype=torch.float64)
    last = float(lr * torch.pow(base, start - 1)) if start else lr  # the base step reached, as fn computes it
    step = float(to_power_of_two(torch.tensor([float(last)], dtype=torch.float64))[0]) if pow2 else last

    def fn(t):  # start 0: every step is the base step
        return torch.where(t <= start, lr * torch.pow(base, t - 1), torch.full_like(t, step))

    extra = {**({"pow2": True} if pow2 else {}), **({"tail": tail} if tail else {}),
             **({"start": start} if start else {}), **({"decay": decay} if decay != 1 else {}),
             **({"early_grow": early[0], "early_shrink": early[1]} if early != (1.0, 1.0) else {})}
    schedule = Schedule("adaptive", fn, lr=lr, grow=grow, shrink=shrink, **extra)
    schedule.rule = Rule(grow, shrink, pow2, tail, start, early)
    return schedule


def check_rule(grow: float, shrink: float) -> tuple[float, float]:
    """``(grow, shrink)`` as floats, or a clear error: grow >= 1 (a travelling neuron does not slow
    down) and 0 < shrink <= 1 (a bracketing one does not speed up)."""
    for name, v in (("grow", grow), ("shrink", shrink)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"adaptive schedule: {name} must be a finite number, got {v!r}")
    if grow < 1:
        raise ValueError(f"adaptive schedule: grow must be >= 1 (the step grows while spikes repeat), got {grow}")
    if not 0 < shrink <= 1:
        raise ValueError(f"adaptive schedule: shrink must be in (0, 1] (the step shrinks when spikes "
                         f"alternate), got {shrink}")
    return float(grow), float(shrink)


def check_dynamics(schedule, dynamics: str) -> None:
    """Refuse an adaptive schedule for a dynamics other than signGD (conversion and simulation
    share this check, so the message is the same wherever it is caught)."""
    if schedule.rule is not None and dynamics != "signgd":
        raise ValueError(f"an adaptive schedule steps signGD neurons; dynamics={dynamics!r} takes a plain "
                         f"schedule (leave schedule out for its default)")


def _from_values(values: torch.Tensor) -> Schedule:
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if values.numel() == 0:
        raise ValueError("a schedule given as a tensor must have at least one step")
    n = values.numel()

    def fn(t: torch.Tensor) -> torch.Tensor:
        last = int(t[-1]) if t.numel() else 0
        if last > n:
            raise ValueError(f"the schedule tensor has {n} steps but step {last} was requested; "
                             f"pass a longer tensor or a callable schedule")
        return values[t.long() - 1]

    return Schedule("tensor", fn, values=values.tolist())


def _from_callable(fn: Callable) -> Schedule:
    def vectorized(t: torch.Tensor) -> torch.Tensor:
        try:
            out = fn(t)
            if isinstance(out, torch.Tensor) and out.shape == t.shape:
                return out
        except Exception:  # noqa: BLE001 - a scalar-only callable; fall back to one call per step
            pass
        return torch.tensor([float(fn(int(k))) for k in t.tolist()], dtype=torch.float64)

    return Schedule(getattr(fn, "__name__", "callable"), vectorized)


_NAMED = {"exponential": exponential, "inverse": inverse, "constant": constant, "polynomial": polynomial,
          "adaptive": adaptive}

ScheduleLike = Union[Schedule, str, Callable, torch.Tensor, dict, None]


def make_schedule(spec: ScheduleLike, default: Schedule | None = None) -> Schedule:
    """Turn what a user passes (a Schedule, a name, a dict ``{"name": ..., **params}``, a callable
    ``t -> eta_t``, or a 1-D tensor of steps) into a Schedule."""
    if spec is None:
        return default if default is not None else exponential()
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        name, _, arg_text = spec.partition(":")
        if name not in _NAMED:
            raise ValueError(f"unknown schedule {name!r}; known: {sorted(_NAMED)} (or pass a callable or a tensor)")
        params = {}
        for item in filter(None, arg_text.split(",")):
            key, _, value = item.partition("=")
            try:
                params[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"schedule parameter {item.strip()!r} is not key=number; write e.g. "
                                 f"{_example(name)}") from None
        return _named(name, params)
    if isinstance(spec, dict):
        params = dict(spec)
        name = params.pop("name", None)
        if name == "tensor":
            return _from_values(torch.tensor(params["values"]))
        if name not in _NAMED:
            raise ValueError(f"unknown schedule {name!r}; known: {sorted(_NAMED)}")
        return _named(name, params)
    if isinstance(spec, torch.Tensor) or (isinstance(spec, (list, tuple)) and spec):
        return _from_values(torch.as_tensor(spec))
    if callable(spec):
        return _from_callable(spec)
    raise TypeError(f"cannot make a schedule from {type(spec).__name__}; pass a name, a callable or a tensor")


def _keys(name: str) -> dict:
    """The parameters of the named schedule and their defaults."""
    return {k: p.default for k, p in inspect.signature(_NAMED[name]).parameters.items()}


def _example(name: str) -> str:
    """The named schedule written with its defaults: ``exponential:lr=0.15,decay=0.95``."""
    return f"{name}:{','.join(f'{k}={v}' for k, v in _keys(name).items())}"


def _named(name: str, params: dict) -> Schedule:
    """The named schedule with ``params``; a key it does not take is refused, listing the valid ones."""
    unknown = [k for k in params if k not in _keys(name)]
    if unknown:
        raise ValueError(f"schedule {name!r} has no parameter {unknown[0]!r}; its parameters are "
                         f"{', '.join(_keys(name))} (e.g. {_example(name)})")
    return _NAMED[name](**params)


def _check_positive(**kw):
    for k, v in kw.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"schedule parameter {k} must be a positive number, got {v!r}")
