"""Check that the converted graph runs on any batch size and keeps each sample's rows together.

The simulator folds time steps into the batch: a chunk of ``Tc`` steps of ``b`` samples runs as one
batch of ``Tc * b``, and a neuron splits its input's dim 0 into ``[Tc, rows of one step]``. That is
right when every neuron input's dim 0 is *sample-major*: the rows of sample ``s`` are the ``k``
consecutive rows ``s*k .. s*k + k - 1`` (``k = 1`` for most layers; windowed attention has one row
per window of each sample, ``k`` windows). A model that fixes the batch size (a reshape with a
literal, a size kept from ``__init__``), or that moves the batch out of dim 0 (sequence-first
``[L, B, E]``, a window partition that puts windows before the batch), runs at the calibration batch
size and would fail or mix time steps in the simulator: this check refuses it at conversion.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from ..errors import ConversionError
from ..neurons import SpikingNeuron


class _NeuronInputs(fx.Interpreter):
    """Runs the graph as the ANN and keeps every neuron's first input (or compares it with ``expected``)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=True)
        self.inputs: dict[str, torch.Tensor] = {}

    def call_module(self, target, args, kwargs):
        if isinstance(self.submodules[target], SpikingNeuron) and args and isinstance(args[0], torch.Tensor):
            self.inputs[target] = args[0].detach().clone()
        return super().call_module(target, args, kwargs)


def _neuron_inputs(gm: fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    probe = _NeuronInputs(gm)
    with torch.no_grad():
        probe.run(x.clone())  # a model may change its input in place
    return probe.inputs


def _pair(sample: torch.Tensor) -> torch.Tensor:
    return sample[:2] if sample.shape[0] >= 2 else torch.cat([sample[:1], sample[:1].flip(-1)])


def check_any_batch(gm: fx.GraphModule, sample: torch.Tensor) -> None:
    """Raise ``ConversionError`` unless the graph runs on a batch of 1 and a batch of 2 (a model that
    fixes its batch size fails here, before calibration runs it on other batch sizes)."""
    pair = _pair(sample)
    for x in (pair[:1], pair):
        try:
            with torch.no_grad():
                gm(x.clone())
        except Exception as exc:
            raise _fixed_batch(sample.shape[0], x.shape[0], exc) from exc


def _fixed_batch(works: int, fails: int, exc: Exception) -> ConversionError:
    return ConversionError(
        f"the converted graph runs on a batch of {works} but not on a batch of {fails} ({type(exc).__name__}: "
        f"{exc}); the model fixes its batch size (a reshape or view with a literal batch, or a size kept "
        f"from __init__). signgd runs time steps as extra samples, so the model must take any batch: "
        f"compute the batch from x.shape[0] (or use -1) in forward")


def check_sample_major(gm: fx.GraphModule, sample: torch.Tensor) -> None:
    """Raise ``ConversionError`` unless every neuron's input, on a batch of 2, holds sample 0's rows,
    then sample 1's, in dim 0 (what a batch of 1 gives for each)."""
    pair = _pair(sample)
    try:
        single = [_neuron_inputs(gm, pair[i:i + 1]) for i in range(2)]
    except Exception as exc:
        raise _fixed_batch(sample.shape[0], 1, exc) from exc
    both = _neuron_inputs(gm, pair)
    for name, joint in both.items():
        a, b = single[0].get(name), single[1].get(name)
        if a is None or b is None:
            continue
        k = a.shape[0] if a.dim() else 0
        same_layout = a.dim() > 0 and joint.shape == (2 * k, *a.shape[1:]) and b.shape == a.shape
        if same_layout:
            finite = joint[torch.isfinite(joint)]
            tol = 1e-4 * (float(finite.abs().max()) if finite.numel() else 0.0) + 1e-6
            same_layout = _close(joint[:k], a, tol) and _close(joint[k:], b, tol)
        if not same_layout:
            raise ConversionError(
                f"neuron {name!r}: its input does not keep each sample's rows together in dim 0 (a batch of 2 "
                f"gives shape {tuple(joint.shape)}, one sample {tuple(a.shape)}): the model moves the batch out "
                f"of dim 0 (sequence-first [L, B, E], or windows ordered before the batch). signgd runs time steps "
                f"as extra samples in dim 0, so it cannot simulate this model as it is; keep the batch first "
                f"(batch_first=True, windows after the batch)")


#: Rows that differ by this fraction of their norm still count as the same rows. Why: an op that amplifies rounding
#: (an exp of logits in the hundreds: timm visformer_tiny at random init) gives a batch of 2 and one sample results
#: 1e-4 apart (relative), above the element-wise tolerance; rows of another sample or step differ by ~1.
RELATIVE_NOISE = 1e-3


def _close(x: torch.Tensor, y: torch.Tensor, tol: float) -> bool:
    """Equal within ``tol`` element-wise, or within ``RELATIVE_NOISE`` of their norm (where both are finite); equal
    infinities (a masked attention score) count as equal."""
    if bool(((x == y) | ((x - y).abs() <= tol)).all()):
        return True
    same = x == y  # equal infinities
    finite = torch.isfinite(x) & torch.isfinite(y)
    if not bool((same | finite).all()):
        return False
    x, y = x[finite].double(), y[finite].double()
    return bool((x - y).norm() <= RELATIVE_NOISE * y.norm())
