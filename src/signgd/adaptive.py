"""Adaptive step sizes: each signGD neuron grows its step while its spikes repeat and shrinks it when
they alternate (the sign rule of Rprop, applied to the neuron's own estimate).

Why: with a fixed schedule every neuron takes the same steps, so one schedule must serve the neuron
that is far from its target (wants large steps) and the one that has arrived (wants small ones); at
few time steps no schedule serves both (``docs/latency_causes.md``). A neuron whose spikes repeat is
still travelling, one whose spikes alternate brackets its target: growing the step in the first case
and halving it in the second is a bisection that reaches any range and then settles geometrically.

The rule, per neuron, with ``eta_t`` the schedule's step and ``g`` the neuron's gain:
``s_t = 1[y_{t-1} >= f(x_t)]``; ``g_1 = 1``; for ``t > 1``, ``g_t = g_{t-1} * grow`` when
``s_t == s_{t-1}`` and ``g_{t-1} * shrink`` otherwise, clamped to ``[MIN_GAIN, MAX_GAIN]``;
``y_t = y_{t-1} - eta_t g_t (2 s_t - 1)``. Everything it uses is in the spike train, so a receiver
reconstructs the sender's estimate from spikes alone (``signgd.reference`` does exactly that): the
neurons still communicate with binary spikes only. With ``grow = shrink = 1`` it is the plain signGD
neuron, bit for bit.

State: one signed tensor per layer, ``d = (1 - 2 s_{t-1}) g_{t-1}`` (the direction and gain of the
last step; 0 before the first), so the scan needs no separate spike history.
"""
from __future__ import annotations

import math

import torch

from .kernels import adaptive_scan_c

__all__ = ["MIN_GAIN", "MAX_GAIN", "check_rule", "check_dynamics", "next_step", "adaptive_scan",
           "adaptive_scan_torch"]

#: Bounds of the gain. The floor keeps a settled neuron able to follow a target that moves again
#: (from the floor, growing by 1.2 per step takes ~38 steps back to 1); the ceiling keeps long runs
#: finite when a target is out of any reach (an infinite input).
MIN_GAIN = 1e-3
MAX_GAIN = 1e3


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


def next_step(spike: torch.Tensor, d: torch.Tensor, grow: float, shrink: float) -> torch.Tensor:
    """The new signed step ``d_t = (1 - 2 s_t) g_t`` from the spike and the last one (0: none yet).
    Every product is one operation in d's dtype, as in the C kernel (bit-identical results)."""
    direction = 1 - 2 * spike.to(d.dtype)
    size = d.abs()
    gain = torch.where(direction * d > 0, size * grow, size * shrink).clamp_(MIN_GAIN, MAX_GAIN)
    return direction * torch.where(d == 0, torch.ones_like(gain), gain)


def adaptive_scan(target: torch.Tensor, y: torch.Tensor, d: torch.Tensor, etas: torch.Tensor,
                  grow: float, shrink: float, out_scale=None, spikes: torch.Tensor | None = None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Advance a layer of adaptive signGD neurons by ``Tc = target.shape[0]`` steps, in place.

    ``target`` ``[Tc, *S]`` (already normalized), ``y`` and ``d`` ``[*S]`` (updated in place),
    ``etas`` ``[Tc]``. Returns ``out[t] = y_t * out_scale`` (into ``out`` when given; ``out`` may
    be ``target`` itself, read before written). ``spikes`` (``[Tc]``) gets each step's spike count
    added. Runs the C kernel (``signgd.kernels``) where it can, else the torch loop below.
    """
    done = adaptive_scan_c(target, y, d, etas, grow, shrink, out_scale, spikes, out)
    return done if done is not None else adaptive_scan_torch(target, y, d, etas, grow, shrink, out_scale,
                                                             spikes, out)


def adaptive_scan_torch(target, y, d, etas, grow, shrink, out_scale=None, spikes=None, out=None):
    """The reference loop of ``adaptive_scan`` in torch ops (any device)."""
    Tc = target.shape[0]
    if out is None:
        dtype = y.dtype if out_scale is None else torch.result_type(y, out_scale)
        out = torch.empty(target.shape, dtype=dtype, device=target.device)
    counts = torch.zeros(Tc, dtype=torch.int64, device=target.device) if spikes is not None else None
    etas = etas.to(device=y.device, dtype=y.dtype)
    for t in range(Tc):
        s = y >= target[t]
        d.copy_(next_step(s, d, grow, shrink))
        y.add_(etas[t] * d)
        if out_scale is None:
            out[t].copy_(y)
        else:
            torch.mul(y, out_scale, out=out[t])
        if counts is not None:
            counts[t] = s.sum()
    if spikes is not None:
        spikes += counts.to(spikes.device)
    return out
