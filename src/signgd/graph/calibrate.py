"""Measure what normalization and the subgradient dynamics need, by running the converted graph.

- ``activation_ranges``: the per-element maximum of every neuron's output (``max |f(x)|``) over the
  calibration data, with the graph run as the ANN (every neuron computes its exact target).
- ``zero_response``: ``A(0)`` of every neuron, the input it receives when the network input and
  every neuron's output are zero (the biases, propagated).

Both are computed directly with a torch.fx Interpreter; nothing is hooked or monkeypatched.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import torch
import torch.fx as fx

from ..errors import CalibrationError
from ..neurons import SpikingNeuron
from . import ops


def _not_finite(target: str, neuron: SpikingNeuron, args) -> str:
    """Why neuron ``target`` gave NaN or Inf: its inputs already were (the model and the data), or its op
    overflowed on finite inputs (an ``exp`` of a softmax whose first calibration samples kept their logits well
    inside ``exp``'s range, so it was not shifted by its row maximum: ``graph/attention.py``)."""
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    if not inputs or not all(bool(torch.isfinite(a).all()) for a in inputs):
        return (f"neuron {target!r} produced NaN or Inf on the calibration data; check the model "
                f"and the data (the ANN itself is not finite here)")
    peak = max(float(a.abs().max()) for a in inputs)
    op = neuron.target
    why = (" (signgd subtracts a softmax's row maximum only when the logits of the first calibration samples come "
           "near exp's range, |max| >= 44 in float32; later ones went further: put inputs as large first)"
           if op == "exp" else "")
    return (f"neuron {target!r} ({op}) overflows on the calibration data: its inputs are finite, up to "
            f"{peak:.3g}, its output is not{why}; scale that op's inputs down in the model (a smaller attention "
            f"scale, a norm before it) or calibrate on data that keeps it finite")


def _accumulate(totals: dict, key: str, value: torch.Tensor) -> None:
    totals[key] = value if key not in totals else totals[key] + value


class _RangeProbe(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, pad_value: float):
        super().__init__(gm, garbage_collect_values=True)
        self.pad_value = pad_value
        self.ranges: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}  # per-element sums of every neuron's output (float64)
        self.magnitude_sums: dict[str, torch.Tensor] = {}  # ... and of its magnitude |output| (float64)
        self.positives: dict[str, torch.Tensor] = {}  # per-element counts of samples with a positive output
        self.counts: dict[str, int] = {}
        self.values_per_sample = 0  # elements of all activations of one sample (memory sizing)
        self._batch_values = 0
        self.below_pad: set[str] = set()

    def run_node(self, n):
        if n.op == "call_function" and n.target is ops.pool_windows:
            x = self.env[n.args[0]]
            if float(x.min()) <= self.pad_value:
                self.below_pad.add(n.name)
        out = super().run_node(n)
        if n.op != "get_attr" and isinstance(out, torch.Tensor) and out.dim() > 0:
            self._batch_values += out.numel()
        return out

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        mod = self.submodules[target]
        if isinstance(mod, SpikingNeuron):
            if not torch.isfinite(out).all():
                raise CalibrationError(_not_finite(target, mod, args))
            value = out.detach()
            peak = value.abs().amax(dim=0)
            prev = self.ranges.get(target)
            self.ranges[target] = peak if prev is None else torch.maximum(prev, peak)
            _accumulate(self.sums, target, value.sum(dim=0, dtype=torch.float64))
            _accumulate(self.magnitude_sums, target, value.abs().sum(dim=0, dtype=torch.float64))
            _accumulate(self.positives, target, value.gt(0).sum(dim=0, dtype=torch.int64))
            self.counts[target] = self.counts.get(target, 0) + value.shape[0]
        return out

    def means(self) -> dict[str, torch.Tensor]:
        """Per-element mean of every neuron's output over the calibration data (its dtype)."""
        return {name: (total / self.counts[name]).to(self.ranges[name].dtype) for name, total in self.sums.items()}

    def mean_magnitudes(self) -> dict[str, torch.Tensor]:
        """Per-element mean of every neuron's ``|output|`` over the calibration data (its dtype)."""
        return {name: (total / self.counts[name]).to(self.ranges[name].dtype)
                for name, total in self.magnitude_sums.items()}

    def active_shares(self) -> dict[str, torch.Tensor]:
        """Per-element fraction of the calibration samples on which every neuron's output was positive."""
        return {name: (count.double() / self.counts[name]).to(self.ranges[name].dtype)
                for name, count in self.positives.items()}

    def probe(self, x: torch.Tensor) -> None:
        self._batch_values = 0
        self.run(x.clone())  # a model may change its input in place
        self.values_per_sample = max(self.values_per_sample, -(-self._batch_values // x.shape[0]))


def activation_ranges(gm: fx.GraphModule, batches: Iterable[torch.Tensor], pad_value: float = -200.0,
                      means: dict | None = None, active: dict | None = None,
                      magnitudes: dict | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Per-element ``max |output|`` of every neuron, and the elements of all values per sample.
    ``means``: a dict to fill with every neuron's per-element mean output; ``active``: likewise with the
    fraction of samples on which it was positive (both for ``convert(start=...)``); ``magnitudes``: with its
    per-element mean ``|output|`` (``convert(scale="mean")``).

    Warns when a max-pooling neuron's input reaches the padding constant: there the padded windows
    would no longer compute the max of the real inputs.
    """
    probe = _RangeProbe(gm, pad_value)
    with torch.no_grad():
        for x in batches:
            probe.probe(x)
    if probe.below_pad:
        warnings.warn(f"max-pooling inputs reach the padding value {pad_value} in {sorted(probe.below_pad)}; "
                      f"pass a more negative pad_value to convert()", stacklevel=3)
    if means is not None:
        means.update(probe.means())
    if active is not None:
        active.update(probe.active_shares())
    if magnitudes is not None:
        magnitudes.update(probe.mean_magnitudes())
    return probe.ranges, probe.values_per_sample


class _ResponseProbe(fx.Interpreter):
    """Runs the affine maps on a zero input with every neuron passing on 0 (``starts=False``) or its
    starting estimate (``starts=True``), recording what each neuron's inputs are then."""

    def __init__(self, gm: fx.GraphModule, starts: bool):
        super().__init__(gm, garbage_collect_values=True)
        self.starts = starts
        self.responses: dict[str, tuple[torch.Tensor, ...]] = {}

    def call_module(self, target, args, kwargs):
        mod = self.submodules[target]
        if isinstance(mod, SpikingNeuron):
            self.responses[target] = tuple(a.detach()[0].clone() for a in args)
            out = mod(*args)
            return mod.initial_output(out) if self.starts else torch.zeros_like(out)
        return super().call_module(target, args, kwargs)


def _response(gm: fx.GraphModule, sample: torch.Tensor, starts: bool):
    probe = _ResponseProbe(gm, starts)
    with torch.no_grad():
        out = probe.run(torch.zeros_like(sample[:1]))
    return probe.responses, out[0]


def start_response(gm: fx.GraphModule, sample: torch.Tensor
                   ) -> tuple[dict[str, tuple[torch.Tensor, ...]], torch.Tensor]:
    """``A(y_0)``: every neuron's inputs (shaped like one sample of each) and the readout when every neuron
    passes on its starting estimate and the input is 0; ``zero_response`` where every neuron starts at 0."""
    return _response(gm, sample, starts=True)


def zero_response(gm: fx.GraphModule, sample: torch.Tensor) -> tuple[dict[str, tuple[torch.Tensor, ...]], torch.Tensor]:
    """``A(0)`` of every input of every neuron (shaped like one sample of that input), and of the
    network's readout, ``A_out(0)``."""
    return _response(gm, sample, starts=False)


#: An element whose calibration range is below this fraction of its layer's typical (median) range
#: is treated as silent (never, or hardly ever, reached on the calibration data).
SILENT = 1e-3


def neuron_scales(ranges: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The normalization scale of every neuron element from its calibration range ``max |f(x)|`` (or, with
    ``convert(scale="mean")``, its mean ``|f(x)|``: the same rules on that statistic).

    An element's scale is its own range. A silent element (range 0, or below ``SILENT`` times the
    median range of its layer's active elements) has no range to go by: it gets that median, the
    scale of a typical element of its layer. Not a constant: 1, the earlier fallback, made the steps
    of a layer whose activations are all small (1e-7 in random-init MobileNetV2) millions of times its
    values. Not the layer's largest range either: a dead ReLU element would then oscillate as widely
    as the layer's largest one. A layer silent everywhere gets the smallest median of the other
    layers (1 when every layer is silent): its target is 0 on the calibration data.
    """
    tiny = torch.finfo(torch.float32).tiny * 2 ** 20  # far below any activation, above denormals
    typical = {}
    for name, r in ranges.items():
        active = r[r > tiny]
        typical[name] = float(active.median()) if active.numel() else 0.0
    live = [v for v in typical.values() if v > tiny]
    fallback = min(live) if live else 1.0
    scales = {}
    for name, r in ranges.items():
        m = typical[name] if typical[name] > tiny else fallback
        silent = r < max(SILENT * m, tiny)
        scales[name] = torch.where(silent, torch.full_like(r, m), r)
    return scales
