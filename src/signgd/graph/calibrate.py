"""Measure what normalization and the subgradient dynamics need, by running the converted graph.

- ``activation_ranges``: the per-element maximum of every neuron's output (``max |f(x)|``) over the
  calibration data, with the graph run as the ANN (every neuron computes its exact target).
- ``zero_response``: ``A(0)`` of every neuron, the input it receives when the network input and
  every neuron's output are zero (the biases, propagated).

Both are computed directly with a torch.fx Interpreter; nothing is hooked or monkeypatched.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.fx as fx

from ..errors import CalibrationError
from ..neurons import SpikingNeuron


class _RangeProbe(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=True)
        self.ranges: dict[str, torch.Tensor] = {}
        self.numel = 0  # elements of every intermediate value, per sample

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.dim() > 0:
            self.numel_of_batch += out.numel()
        return out

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        if isinstance(self.submodules[target], SpikingNeuron):
            if not torch.isfinite(out).all():
                raise CalibrationError(
                    f"neuron {target!r} produced NaN or Inf on the calibration data; check the model "
                    f"and the data (the ANN itself is not finite here)")
            peak = out.detach().abs().amax(dim=0)
            prev = self.ranges.get(target)
            self.ranges[target] = peak if prev is None else torch.maximum(prev, peak)
        return out

    def probe(self, x: torch.Tensor):
        self.numel_of_batch = 0
        out = self.run(x)
        self.numel = max(self.numel, self.numel_of_batch // x.shape[0])
        return out


def activation_ranges(gm: fx.GraphModule, batches: Iterable[torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Per-element ``max |output|`` of every neuron, and the elements of all values per sample."""
    probe = _RangeProbe(gm)
    with torch.no_grad():
        for x in batches:
            out = probe.probe(x)
            if not isinstance(out, torch.Tensor):
                raise CalibrationError(f"the model returns {type(out).__name__}; signgd converts models "
                                       f"whose output is one tensor (wrap it to return the logits)")
    return probe.ranges, probe.numel


class _ZeroProbe(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=True)
        self.responses: dict[str, tuple[torch.Tensor, ...]] = {}

    def call_module(self, target, args, kwargs):
        mod = self.submodules[target]
        if isinstance(mod, SpikingNeuron):
            self.responses[target] = tuple(a.detach()[0].clone() for a in args)
            return torch.zeros_like(mod(*args))
        return super().call_module(target, args, kwargs)


def zero_response(gm: fx.GraphModule, sample: torch.Tensor) -> tuple[dict[str, tuple[torch.Tensor, ...]], torch.Tensor]:
    """``A(0)`` of every input of every neuron (shaped like one sample of that input), and of the
    network's readout, ``A_out(0)``."""
    probe = _ZeroProbe(gm)
    with torch.no_grad():
        out = probe.run(torch.zeros_like(sample[:1]))
    return probe.responses, out[0]
