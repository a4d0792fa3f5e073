"""The neuron dynamics a converted network can run, and what each one's neurons pass downstream.

- ``"signgd"``: the paper's neuron. A binary spike every step (spike: step down; silence: step up), so
  the receiver hears from it at every step; it passes its estimate ``y`` on.
- ``"sparse"``: the signGD neuron with signed spikes. It stays silent while its estimate is within
  ``tolerance * eta_t`` of its target and otherwise sends an up or a down spike (two binary spike
  lines) and moves ``y <- y +- eta_t``. Silence costs nothing downstream: a ReLU that is off never fires,
  and a settled neuron fires rarely. With ``tolerance = 0.5`` a neuron moves exactly when the move
  brings it closer to its target. It passes its estimate on, like signGD.
- ``"graded"``: the sparse neuron whose spike also carries a power of two. It moves by the largest power
  of two not above ``2**(1/64)`` times its gap, ``y <- y + sign(d) 2**floor(log2 |d| + 1/64)`` with
  ``d = f(x) - y`` (exactly the gap when that is a power of two: ``kernels.reference.graded_step``), when
  that step is at least its band:
  a spike is a sign and an exponent (a few bits: what neuromorphic chips call a graded spike), and a
  receiver scales its weight by it with an exponent add. The gap at least halves with every spike, so a
  neuron reaches its target in a few spikes and then falls silent; the schedule only sets the band
  (``tolerance * eta_t``), so a constant one gives a constant precision. Not the paper's neuron: the
  paper's spike carries only a sign.
- ``"subgradient"``: the integrate-and-fire neuron of the paper's theorem (running averages).
- ``"if"``: the classic integrate-and-fire neuron (reset by subtraction), NIR's ``IF``.
"""
from __future__ import annotations

import math

__all__ = ["DYNAMICS", "ESTIMATE_DYNAMICS", "SPIKE_DYNAMICS", "BAND_DYNAMICS", "DEFAULT_TOLERANCE",
           "passes_estimates", "check_tolerance"]

DYNAMICS = ("signgd", "sparse", "graded", "subgradient", "if")
#: Neurons that pass their estimate downstream (the network's output is the readout of the estimates).
ESTIMATE_DYNAMICS = ("signgd", "sparse", "graded")
#: Neurons silent within a band of their target (``tolerance * eta_t``), which work and send only on events.
BAND_DYNAMICS = ("sparse", "graded")
#: Neurons that pass their spikes (times a static size) downstream (the output is averaged over steps).
SPIKE_DYNAMICS = ("subgradient", "if")
#: The sparse neuron's silence band as a fraction of ``eta_t``: it moves when moving gets it closer.
DEFAULT_TOLERANCE = 0.5


def passes_estimates(dynamics: str) -> bool:
    return dynamics in ESTIMATE_DYNAMICS


def check_tolerance(tolerance, dynamics: str) -> float | None:
    """The silence band of the sparse and graded dynamics as a float (``DEFAULT_TOLERANCE`` when None),
    None for the other dynamics; a one-line error for a value that is not a finite number >= 0, or one
    given to another dynamics."""
    if dynamics not in BAND_DYNAMICS:
        if tolerance is not None:
            raise ValueError(f"tolerance is the sparse neuron's silence band; dynamics={dynamics!r} has none "
                             f"(use dynamics='sparse' or 'graded', or leave tolerance out)")
        return None
    if tolerance is None:
        return DEFAULT_TOLERANCE
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0 (a fraction of eta_t, e.g. 0.5), got {tolerance!r}")
    return float(tolerance)
