"""The speed benchmark's peer: SpikingJelly's ANN-to-SNN conversion (integrate-and-fire neurons).

``spikingjelly.activation_based.ann2snn.Converter`` with its rate-coding recipe (``RateCodingRecipe``,
SpikingJelly >= 0.0.0.0.15's FX converter: Conv-BN fusion, per-layer max calibration, each ReLU
replaced by ``VoltageScaler -> IFNode(v_reset=None) -> VoltageScaler``, i.e. integrate-and-fire with
reset by subtraction), run on the analog input repeated at every step, the output decoded as the
mean of the readout over the T steps. ``step_mode="m"`` is SpikingJelly's multi-step mode (every
layer on the whole ``[T, B, ...]`` sequence at once, ``functional.set_step_mode(net, 'm')``);
``"s"`` is its single-step mode (the network called once per step). Install with
``pip install -e ".[bench]"``.
"""
from __future__ import annotations

import copy

import torch


def unavailable() -> str | None:
    """None when SpikingJelly imports, else why not."""
    try:
        from spikingjelly.activation_based import ann2snn, functional  # noqa: F401
    except Exception as exc:  # ImportError, or an incompatible torch
        return f"{type(exc).__name__}: {exc}"
    return None


def convert(model: torch.nn.Module, calibration: torch.Tensor) -> torch.nn.Module:
    """SpikingJelly's conversion of a copy of ``model``, calibrated on ``calibration`` (one batch)."""
    from spikingjelly.activation_based import ann2snn

    recipe = ann2snn.RateCodingRecipe(dataloader=[calibration], mode="Max")
    return ann2snn.Converter(recipe).convert(copy.deepcopy(model).eval())


def analog_leftovers(snn: torch.nn.Module) -> list[str]:
    """Nonlinearities the conversion left as ANN modules (it replaces ReLUs only): a network that
    still has them is not a spiking network, so its timing would not be a peer's."""
    kinds = (torch.nn.GELU, torch.nn.LayerNorm, torch.nn.SiLU, torch.nn.Tanh, torch.nn.Sigmoid,
             torch.nn.Softmax, torch.nn.Hardswish, torch.nn.LeakyReLU)
    return sorted({type(m).__name__ for m in snn.modules() if isinstance(m, kinds)})


def run(snn: torch.nn.Module, x: torch.Tensor, T: int, step_mode: str = "m") -> torch.Tensor:
    """The decoded output ``[B, classes]`` after T steps: mean readout over the steps."""
    from spikingjelly.activation_based import functional

    functional.set_step_mode(snn, step_mode)
    functional.reset_net(snn)
    if step_mode == "m":
        return snn(x.unsqueeze(0).expand(T, *x.shape)).mean(0)
    total = None
    for _ in range(T):
        out = snn(x)
        total = out if total is None else total.add_(out)
    return total / T
