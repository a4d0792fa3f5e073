"""Input encodings (what the first affine map sees at each step) and output decoding.

Every encoder keeps an estimate ``e`` of the input ``z`` and the network's first layer sees
``A(e_t)``; they differ in how ``e`` moves:

- ``float`` (paper default): ``e_t = e_{t-1} - eta_t (e_{t-1} - z)``, from 0. With the default
  schedule it converges only to about ``0.956 z`` (``prod(1 - eta_t)`` does not vanish).
- ``spike``: a binary signGD encoder, ``b_t = 1[e_{t-1} >= z]``, ``e_t = e_{t-1} - eta_t (2 b_t - 1)``.
- ``stochastic``: ``b_t ~ Bernoulli(sigmoid(e_{t-1} - z))``, same update. The random numbers are a
  counter-based hash of (seed, step, element), so a run is reproducible and a sample's noise does
  not depend on its batch-mates.
- ``analog``: the first layer sees ``A(z)`` at every step.
"""
from __future__ import annotations

import torch

from .dynamics import passes_estimates

__all__ = ["ENCODINGS", "InputEncoder", "OutputDecoder", "hash_uniform"]

ENCODINGS = ("float", "spike", "stochastic", "analog")

_MASK32 = 0xFFFFFFFF


def hash_uniform(seed: int, step: int, shape: tuple[int, ...], device=None) -> torch.Tensor:
    """Uniform numbers in [0, 1) from a counter-based integer hash of (seed, step, element index).

    Constants stay below 2**31 so that every product of 32-bit values fits in int64 (no overflow).
    """
    n = 1
    for d in shape:
        n *= d
    idx = torch.arange(n, dtype=torch.int64, device=device)
    offset = ((step & _MASK32) * 0x6A09E667 + (seed & _MASK32) * 0x3C6EF372 + 0x1B873593) & _MASK32
    h = (idx * 0x2545F491 + offset) & _MASK32
    for mult in (0x7FEB352D, 0x046B8C55, 0x5BD1E995):
        h = h ^ (h >> 15)
        h = (h * mult) & _MASK32
    h = h ^ (h >> 16)
    return (h.to(torch.float64) / 2.0**32).reshape(shape)


class InputEncoder:
    """Produces the encoded input for a chunk of steps, carrying its estimate across chunks."""

    def __init__(self, kind: str = "float", seed: int = 0):
        if kind not in ENCODINGS:
            raise ValueError(f"unknown encoding {kind!r}; choose one of {list(ENCODINGS)}")
        self.kind = kind
        self.seed = int(seed)

    def init_state(self, z: torch.Tensor) -> dict:
        return {"e": torch.zeros_like(z)}

    def run(self, state: dict, z: torch.Tensor, etas: torch.Tensor, t0: int) -> torch.Tensor:
        """Encoded inputs for steps ``t0 .. t0 + len(etas) - 1`` as ``[Tc, B, ...]``."""
        steps = etas.shape[0]
        if self.kind == "analog":
            # A copy, not a view: an in-place op of the model must not reach the caller's tensor.
            return z.unsqueeze(0).expand(steps, *z.shape).clone()
        out = torch.empty((steps, *z.shape), dtype=z.dtype, device=z.device)
        e = state["e"]
        for k in range(steps):
            eta = etas[k]
            if self.kind == "float":
                e = e - eta * (e - z)
            else:
                if self.kind == "spike":
                    b = e >= z
                else:
                    # Per-sample noise: the hash runs over one sample's elements, so batch-mates
                    # and batch size do not change it.
                    u = hash_uniform(self.seed, t0 + k, tuple(z.shape[1:]), z.device).to(z.dtype)
                    b = u < torch.sigmoid(e - z)
                e = torch.where(b, e - eta, e + eta)
            out[k] = e
        state["e"] = e
        return out


class OutputDecoder:
    """signGD (and its sparse form): the output at step t is the readout of the estimates, ``A_out(y_t)``.
    Subgradient: the running average ``o_t = o_{t-1} - eta_t (o_{t-1} - A_out(s_t))``.
    IF: the mean of the readouts so far, ``(A_out(s_1) + ... + A_out(s_t)) / t`` (summed in order), which
    is what a library running the exported NIR graph computes from its outputs (no step sizes)."""

    def __init__(self, dynamics: str):
        self.dynamics = dynamics

    def init_state(self) -> dict:
        return {"o": None, "t": 0}

    def run(self, state: dict, readout: torch.Tensor, etas: torch.Tensor) -> torch.Tensor:
        if passes_estimates(self.dynamics):
            return readout
        out = torch.empty_like(readout)
        if self.dynamics == "if":
            total = state["o"] if state["o"] is not None else torch.zeros_like(readout[0])
            for k in range(readout.shape[0]):
                total = total + readout[k]
                state["t"] += 1
                out[k] = total / state["t"]
            state["o"] = total
            return out
        o = state["o"] if state["o"] is not None else torch.zeros_like(readout[0])
        for k in range(readout.shape[0]):
            o = o - etas[k] * (o - readout[k])
            out[k] = o
        state["o"] = o
        return out
