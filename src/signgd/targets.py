"""The one table of neuron targets: which function a spiking neuron tracks, and its arity.

A signGD neuron only ever evaluates its target ``f`` on its input estimates and compares the result
with its output estimate, so any function can be a target. Each entry names the exact ANN function
(used for the ANN side, for calibration and for the comparison inside the neuron) and whether the
paper's preset normalizes it (the reference code scales ReLUs only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

__all__ = ["Target", "TARGETS", "get_target", "match", "supported_names"]


@dataclass(frozen=True)
class Target:
    name: str
    fn: Callable[..., torch.Tensor]  # fn(*inputs, **params) -> output, exact
    arity: int
    preset_normalized: bool  # scaled by the paper's preset (normalize="relu"): ReLUs only
    doc: str  # what it computes, for listings


def _relu(x):
    return torch.relu(x)


def _max2(a, b):
    return torch.maximum(a, b)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("relu", _relu, 1, True, "max(x, 0)"),
        Target("max", _max2, 2, False, "max(a, b): one node of a max-pooling tree"),
    ]
}


# How torch spells each target: module classes, functions and tensor methods.
_MODULES: dict[type, str] = {nn.ReLU: "relu"}
_FUNCTIONS: dict[object, str] = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu"}
_METHODS: dict[str, str] = {"relu": "relu", "relu_": "relu"}


def match(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, dict] | None:
    """``(target name, params)`` when ``node`` is a nonlinearity the converter has a neuron for."""
    if node.op == "call_module":
        name = _MODULES.get(type(modules[node.target]))
        return (name, {}) if name else None
    if node.op == "call_function":
        name = _FUNCTIONS.get(node.target)
        return (name, {}) if name else None
    if node.op == "call_method":
        name = _METHODS.get(node.target)
        return (name, {}) if name else None
    return None


def supported_names() -> list[str]:
    """Human-readable list of the nonlinearities that become neurons (for error messages)."""
    names = {c.__name__ for c in _MODULES} | {f"F.{f.__name__}" for f in _FUNCTIONS if hasattr(f, "__name__")}
    return sorted(names) + ["MaxPool1d/2d (as max neurons)"]


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown neuron target {name!r}; known: {sorted(TARGETS)}") from None
