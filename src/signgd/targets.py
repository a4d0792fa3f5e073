"""The one table of neuron targets: which function a spiking neuron tracks, its arity, its parameters.

A signGD neuron only ever evaluates its target ``f`` on its input estimates and compares the result
with its output estimate, so any function can be a target. Each entry names the exact ANN function
(used for the ANN side, for calibration and for the comparison inside the neuron) and whether the
paper's preset normalizes it (the reference code scales ReLUs only).

How torch spells each target (module classes, functions, tensor methods) is listed below the
table; adding a nonlinearity is one ``Target`` line plus one spelling line. A spelling lists the
target's parameters in the order the torch function takes them after its input, with defaults, so
``F.leaky_relu(x, 0.2)`` and ``nn.LeakyReLU(0.2)`` both become ``leaky_relu`` with
``negative_slope=0.2``.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .errors import UnsupportedOperationError
from .graph.nodes import node_arg

__all__ = ["Target", "TARGETS", "get_target", "match", "supported_names", "describe", "divide_sqrt",
           "DIVISOR_FLOOR"]

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
        Target("max", torch.maximum, 2, False, "max(a, b): one node of a max-pooling tree"),
        Target("mul", torch.mul, 2, False, "a * b: a product of two activations (gating, attention)"),
        Target("matmul", torch.matmul, 2, False, "a @ b: products of two activations (Q K^T, A V); one "
                                                 "neuron per output element"),
        Target("divide", _divide, 2, False, "a / b: softmax's normalization, a ratio of activations"),
        Target("divide_sqrt", divide_sqrt, 2, False, "c / sqrt(v): LayerNorm's normalizing step"),
    ]
}


# ---- how torch spells each target ------------------------------------------------------------
# (target name, parameters after the input: (name, default) in the function's positional order)
_Spelling = tuple[str, tuple[tuple[str, object], ...]]
_NONE: tuple = ()

_MODULES: dict[type, tuple[str, Callable[[nn.Module], dict]]] = {
    nn.ReLU: ("relu", lambda m: {}),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"negative_slope": float(m.negative_slope)}),
    nn.GELU: ("gelu", lambda m: {"approximate": m.approximate}),
    nn.SiLU: ("silu", lambda m: {}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.Hardswish: ("hardswish", lambda m: {}),
    nn.Hardsigmoid: ("hardsigmoid", lambda m: {}),
    nn.ReLU6: ("hardtanh", lambda m: {"min_val": 0.0, "max_val": 6.0}),
    nn.Hardtanh: ("hardtanh", lambda m: {"min_val": float(m.min_val), "max_val": float(m.max_val)}),
    nn.ELU: ("elu", lambda m: {"alpha": float(m.alpha)}),
    nn.Softplus: ("softplus", lambda m: {"beta": float(m.beta), "threshold": float(m.threshold)}),
    nn.Mish: ("mish", lambda m: {}),
}
_FUNCTIONS: dict[object, _Spelling] = {
    F.relu: ("relu", _NONE), torch.relu: ("relu", _NONE), torch.relu_: ("relu", _NONE), F.relu_: ("relu", _NONE),
    F.leaky_relu: ("leaky_relu", (("negative_slope", 0.01),)),
    F.leaky_relu_: ("leaky_relu", (("negative_slope", 0.01),)),
    F.gelu: ("gelu", (("approximate", "none"),)),
    F.silu: ("silu", _NONE),
    torch.sigmoid: ("sigmoid", _NONE), F.sigmoid: ("sigmoid", _NONE),
    torch.tanh: ("tanh", _NONE), F.tanh: ("tanh", _NONE),
    F.hardswish: ("hardswish", _NONE),
    F.hardsigmoid: ("hardsigmoid", _NONE),
    F.relu6: ("hardtanh", (("min_val", 0.0), ("max_val", 6.0))),
    F.hardtanh: ("hardtanh", (("min_val", -1.0), ("max_val", 1.0))),
    F.elu: ("elu", (("alpha", 1.0),)),
    F.softplus: ("softplus", (("beta", 1.0), ("threshold", 20.0))),
    F.mish: ("mish", _NONE),
    torch.abs: ("abs", _NONE), operator.abs: ("abs", _NONE),
    torch.square: ("square", _NONE),
    torch.exp: ("exp", _NONE),
    divide_sqrt: ("divide_sqrt", (("eps", 1e-5),)),
}
_METHODS: dict[str, _Spelling] = {
    "relu": ("relu", _NONE), "relu_": ("relu", _NONE),
    "sigmoid": ("sigmoid", _NONE), "sigmoid_": ("sigmoid", _NONE),
    "tanh": ("tanh", _NONE), "tanh_": ("tanh", _NONE),
    "abs": ("abs", _NONE), "abs_": ("abs", _NONE),
    "square": ("square", _NONE), "square_": ("square", _NONE),
    "exp": ("exp", _NONE), "exp_": ("exp", _NONE),
}


def match(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, dict] | None:
    """``(target name, params)`` when ``node`` is a nonlinearity the converter has a neuron for."""
    if node.op == "call_module":
        found = _MODULES.get(type(modules[node.target]))
        return (found[0], found[1](modules[node.target])) if found else None
    if node.op == "call_function":
        if node.target is operator.pow and _is_constant(node.args[1], 2):
            return "square", {}
        spelling = _FUNCTIONS.get(node.target)
    elif node.op == "call_method":
        if node.target in ("pow", "pow_") and _is_constant(node_arg(node, 1, "exponent"), 2):
            return "square", {}
        spelling = _METHODS.get(node.target)
    else:
        return None
    if spelling is None:
        return None
    name, params = spelling
    if node.target is F.relu6:
        return name, {k: v for k, v in params}
    return name, _read_params(node, params, TARGETS[name].arity)


def _is_constant(value, expected) -> bool:
    return not isinstance(value, fx.Node) and isinstance(value, (int, float)) and value == expected


def _read_params(node: fx.Node, params: tuple[tuple[str, object], ...], arity: int) -> dict:
    """The target's parameters from the node's positional args (after the inputs) and kwargs."""
    values = {}
    for i, (key, default) in enumerate(params):
        value = node_arg(node, i + arity, key, default)
        if isinstance(value, fx.Node):
            raise UnsupportedOperationError(
                f"node {node.name!r}: the {key!r} of {node.target} is computed at run time; signgd needs it "
                f"to be a constant (write it as a number in the model)", [(node.name, node.op, str(node.target))])
        values[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return values


def supported_names() -> list[str]:
    """Human-readable list of the nonlinearities that become neurons (for error messages)."""
    names = {c.__name__ for c in _MODULES}
    for f in _FUNCTIONS:
        name = getattr(f, "__name__", None)
        if name and f is not divide_sqrt:
            names.add(f"F.{name}" if getattr(F, name, None) is f else f"torch.{name}")
    return sorted(names) + ["MaxPool1d/2d (max neurons)", "LayerNorm/RMSNorm (square + divide_sqrt neurons)",
                            "softmax / attention (exp, divide, matmul neurons)",
                            "products of two activations (mul, matmul, divide neurons)"]


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown neuron target {name!r}; known: {sorted(TARGETS)}") from None


def describe() -> str:
    """A table of every target (for docs and ``--help``)."""
    width = max(len(n) for n in TARGETS)
    return "\n".join(f"{t.name:<{width}}  {t.arity}-input  {t.doc}" for t in TARGETS.values())

