"""The one table of neuron targets: which function a spiking neuron tracks, its arity, its parameters.

A signGD neuron only ever evaluates its target ``f`` on its input estimates and compares the result
with its output estimate, so any function can be a target. Each entry names the exact ANN function
(used for the ANN side, for calibration and for the comparison inside the neuron) and whether the
paper's preset normalizes it (the reference code scales ReLUs only).

How torch spells each target (module classes, functions, tensor methods, with the parameters each
spelling passes) is ``signgd.graph.spellings``; adding a nonlinearity is one ``Target`` line here
plus one spelling line there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["Target", "TARGETS", "get_target", "describe", "divide_sqrt", "DIVISOR_FLOOR", "CONTRACTIONS"]

#: Targets that contract their inputs (a sum of products per output element): the simulator does not
#: hand them a re-laid-out input (their sums' rounding follows the layout).
CONTRACTIONS = frozenset({"matmul", "einsum"})
DIVISOR_FLOOR = 1e-12  # |denominator| below this is held at this size (early estimates can be 0)


@dataclass(frozen=True)
class Target:
    name: str
    fn: Callable[..., torch.Tensor]  # fn(*inputs, **params) -> output, exact
    arity: int
    preset_normalized: bool  # scaled by the paper's preset (normalize="relu"): ReLUs only
    doc: str  # what it computes, for listings


def _guarded(b: torch.Tensor) -> torch.Tensor:
    """``b`` with ``|b| >= DIVISOR_FLOOR`` (sign kept; 0 counts as positive): exact wherever the ANN
    divides by a non-negligible value, finite while a denominator's estimate is still near 0."""
    small = b.abs() < DIVISOR_FLOOR
    return torch.where(small, torch.where(b < 0, -DIVISOR_FLOOR, DIVISOR_FLOOR), b)


def _divide(a, b):
    return a / _guarded(b)


def divide_sqrt(c, v, eps: float = 1e-5):
    """``c / sqrt(v)``, the normalizing step of LayerNorm (``v`` = variance + eps >= eps in the ANN;
    an early estimate below eps is held at eps)."""
    return c * torch.rsqrt(v.clamp_min(eps))


def _sqrt(x):
    """``sqrt(max(x, 0))``: the root of a sum of squares (a 2-norm), exact wherever the ANN takes it
    (there ``x >= 0``); an early estimate below 0 is held at 0."""
    return torch.sqrt(x.clamp_min(0))


def _einsum(a, b, equation: str):
    """``torch.einsum(equation, a, b)``; conversion writes the equation with a leading ``...`` on every
    term, so the simulator's extra leading time dimension rides along."""
    return torch.einsum(equation, a, b)


def _hardtanh(x, min_val: float = -1.0, max_val: float = 1.0):
    return torch.clamp(x, min_val, max_val)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("relu", torch.relu, 1, True, "max(x, 0)"),
        Target("leaky_relu", F.leaky_relu, 1, False, "x if x >= 0 else negative_slope * x"),
        Target("gelu", F.gelu, 1, False, "x * Phi(x) (approximate='tanh': the tanh form)"),
        Target("silu", F.silu, 1, False, "x * sigmoid(x)"),
        Target("sigmoid", torch.sigmoid, 1, False, "1 / (1 + exp(-x))"),
        Target("tanh", torch.tanh, 1, False, "tanh(x)"),
        Target("hardswish", F.hardswish, 1, False, "x * relu6(x + 3) / 6"),
        Target("hardsigmoid", F.hardsigmoid, 1, False, "relu6(x + 3) / 6"),
        Target("hardtanh", _hardtanh, 1, False, "clamp(x, min_val, max_val) (ReLU6: 0, 6)"),
        Target("elu", F.elu, 1, False, "x if x > 0 else alpha * (exp(x) - 1)"),
        Target("softplus", F.softplus, 1, False, "log(1 + exp(beta x)) / beta"),
        Target("mish", F.mish, 1, False, "x * tanh(softplus(x))"),
        Target("abs", torch.abs, 1, False, "|x|"),
        Target("square", torch.square, 1, False, "x * x"),
        Target("exp", torch.exp, 1, False, "exp(x) (softmax numerators)"),
        Target("sqrt", _sqrt, 1, False, "sqrt(max(x, 0)): the root of a 2-norm (x.norm(), ConvNeXt-V2's GRN)"),
        Target("max", torch.maximum, 2, False, "max(a, b): one node of a max-pooling tree"),
        Target("mul", torch.mul, 2, False, "a * b: a product of two activations (gating, attention)"),
        Target("matmul", torch.matmul, 2, False, "a @ b: products of two activations (Q K^T, A V); one "
                                                 "neuron per output element"),
        Target("einsum", _einsum, 2, False, "einsum(equation, a, b): a contraction of two activations "
                                            "(torchvision MaxViT's attention); one neuron per output element"),
        Target("divide", _divide, 2, False, "a / b: softmax's normalization, a ratio of activations"),
        Target("divide_sqrt", divide_sqrt, 2, False, "c / sqrt(v): LayerNorm's normalizing step"),
    ]
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown neuron target {name!r}; known: {sorted(TARGETS)}") from None


def describe() -> str:
    """A table of every target (for docs and ``--help``)."""
    width = max(len(n) for n in TARGETS)
    return "\n".join(f"{t.name:<{width}}  {t.arity}-input  {t.doc}" for t in TARGETS.values())

