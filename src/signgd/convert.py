"""The conversion pipeline: trace -> simplify -> fold BN -> decompose (attention, softmax, norms) ->
neurons -> products -> max trees -> check -> calibrate.

Each step is a pass in ``signgd.graph`` that logs what it changed (``logging.getLogger("signgd")``).
The defaults are the paper's preset (signGD dynamics, ``eta_t = 0.15 * 0.95**(t-1)``, ``float`` input
encoding) with one change the benchmarks justify: every neuron, not only the ReLUs, is normalized by
its per-element calibration maximum (``normalize="relu"`` is the paper's choice).
"""
from __future__ import annotations

import itertools
import logging
from typing import Iterable

import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from . import batches
from . import distributed as _dist
from . import schedules as sched
from .codecs import ENCODINGS
from .errors import CalibrationError, ConversionError
from .graph.attention import decompose_attention, decompose_softmax
from .graph.batchdim import check_any_batch, check_sample_major
from .graph.calibrate import activation_ranges, neuron_scales, zero_response
from .graph.check import check_supported
from .graph.fold_bn import fold_batchnorm
from .graph.maxpool import decompose_maxpool
from .graph.neuronize import replace_nonlinearities
from .graph.norms import decompose_norms
from .graph.products import replace_products
from .graph.simplify import remove_assertions, remove_identities
from .graph.trace import trace
from .network import SpikingNetwork
from .neurons import SpikingNeuron
from .preprocessing import checked, from_data
from .schedules import check_dynamics
from .tuning import check_steps, tune_schedule
from .validation import check_finite_output

log = logging.getLogger("signgd")

DYNAMICS = ("signgd", "subgradient")
NORMALIZATIONS = ("relu", "all", "none")
PRESETS = ("paper",)
#: Calibration samples the schedule is tuned on when ``convert`` is given ``T``.
TUNING_SAMPLES = 256
DEFAULT_MEMORY_BUDGET = 512 * 2**20


def convert(model: nn.Module, calibration, *, dynamics: str = "signgd", schedule=None,
            encoding: str | None = None, normalize: str | None = None, T: int | None = None,
            preset: str | None = None, seed: int = 0,
            pad_value: float = -200.0, leaf_modules: Iterable[type] = (),
            memory_budget: int = DEFAULT_MEMORY_BUDGET, batch_size: int = 256,
            distributed: bool | None = None, preprocessing="auto") -> SpikingNetwork:
    """Convert a trained model into a SpikingNetwork.

    Args:
        model: a torch.nn.Module (left untouched: conversion works on a deep copy, in eval mode).
        calibration: a tensor of inputs ``[N, ...]``, a Dataset, or an iterable of ``x`` or
            ``(x, y, ...)`` calib. Used for normalization scales and the input shape.
        dynamics: ``"signgd"`` (the paper's neuron) or ``"subgradient"`` (integrate-and-fire).
        schedule: step sizes; a Schedule, a name (``"exponential"``, ``"inverse"``, ``"constant"``,
            ``"polynomial"``, ``"adaptive"``: per-neuron steps, signGD only; optionally
            ``"name:lr=0.3,decay=0.9"``), a callable ``t -> eta_t`` or a 1-D tensor. Default:
            exponential(0.15, 0.95) for signGD, inverse(1) for subgradient.
        encoding: ``"float"``, ``"spike"``, ``"stochastic"`` (seeded by ``seed``) or ``"analog"``.
            Default: ``"float"`` for signGD, ``"analog"`` (the input itself at every step) for
            subgradient.
        normalize: ``"all"`` (every neuron by its own per-element max |output| over the calibration
            data: ReLU, max, GELU, LayerNorm parts, attention products...), ``"relu"`` (the paper's
            preset: ReLUs only, every other neuron in raw units) or ``"none"``. Default: ``"all"`` for
            signGD (benchmarks/architectures.py: the paper preset leaves transformers and mixers far
            below their ANN, and max pooling short of it), ``"relu"`` for subgradient.
        T: the number of time steps the network will run. When given (signGD), the schedule is tuned
            for it on the first ``TUNING_SAMPLES`` calibration samples (``signgd.tuning``: the
            exponential or adaptive schedule whose output agrees best with the ANN after T steps)
            and the encoding defaults to ``"analog"``: the low-latency configuration of benchmarks/latency.py.
            An explicit ``schedule`` or ``encoding`` wins. The network still runs any number of steps.
        preset: ``"paper"`` fixes the paper's settings (normalize ``"relu"``, encoding ``"float"``,
            ``exponential(0.15, 0.95)``) so results compare with the paper; explicit arguments win.
        pad_value: the constant that pads max pooling windows (never wins a max).
        leaf_modules: module classes torch.fx should not trace into.
        memory_budget: bytes of activations one chunk of simulated steps may use.
        batch_size: batch size for running the calibration data when it is one tensor.
        distributed: in a torch.distributed group, every rank converts, then takes rank 0's weights,
            scales and ``A(0)``, so that all ranks hold the same network even where calibration would
            round differently on different hardware (``signgd.distributed``). ``None`` (the default):
            on when a process group is initialized; ``True``: require one; ``False``: off. When on,
            every rank must call ``convert`` with the same model and settings.
        preprocessing: what was done to the images before the model saw them, recorded as
            ``snn.settings["preprocessing"]`` (``signgd.preprocessing``; ``signgd evaluate`` applies
            it): ``"auto"`` (the default) reads it from the calibration data's torchvision
            ``transform`` (``Resize``/``CenterCrop``/``Normalize``) and records None when the data
            carries none or another transform; a dict ``{"resize", "crop", "mean", "std"}``; None.
    """
    if dynamics not in DYNAMICS:
        raise ValueError(f"unknown dynamics {dynamics!r}; choose one of {list(DYNAMICS)}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {list(PRESETS)} or leave it out")
    default_encoding = "float" if dynamics == "signgd" else "analog"
    if preset == "paper":  # the paper's normalization and encoding (its schedule is the default)
        normalize, encoding = normalize or "relu", encoding or default_encoding
    if T is not None:
        if dynamics != "signgd":
            raise ValueError("tuning the schedule for T covers the signGD dynamics; leave T out for "
                             "dynamics='subgradient'")
        check_steps(T)
        encoding = encoding or "analog"
    normalize = normalize or ("all" if dynamics == "signgd" else "relu")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {list(NORMALIZATIONS)}")
    encoding = encoding or default_encoding
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {list(ENCODINGS)}")
    preprocessing = from_data(calibration) if preprocessing == "auto" else checked(preprocessing)
    share = _dist.active(distributed)  # before the work: distributed=True without a group fails now
    default = sched.exponential() if dynamics == "signgd" else sched.inverse(1.0)
    tune = T is not None and schedule is None
    schedule = sched.make_schedule(schedule, default=default)
    check_dynamics(schedule, dynamics)

    ref = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    calib = _CalibrationBatches(calibration, batch_size, device, dtype, keep=TUNING_SAMPLES if tune else 0)
    sample = calib.peek()[:8]

    gm = trace(model, leaf_modules, sample)
    with torch.no_grad():
        expected = _expected_output(gm, calib.peek(), sample)  # what the rewrite must reproduce
    notes = [f"traced {type(model).__name__}: {len(gm.graph.nodes)} graph nodes"
             + (" (with its sizes known: it branches on shapes)" if gm.meta.get("concrete_shapes") else "")]
    if gm.meta.get("swapped_modules"):
        notes.append(f"swapped {gm.meta['swapped_modules']} MultiheadAttention/TransformerEncoder(Layer) modules "
                     f"for traceable stand-ins")
    notes.append(f"removed {remove_identities(gm)} eval-mode identities (Dropout, Identity) and "
                 f"{remove_assertions(gm)} shape assertions")
    _propagate_shapes(gm, sample)
    notes.append(f"folded {fold_batchnorm(gm)} BatchNorm layers into the preceding conv/linear")
    notes.append(f"decomposed {decompose_attention(gm)} scaled dot-product attentions into matmul and softmax")
    _propagate_shapes(gm, sample)
    notes.append(f"decomposed {decompose_softmax(gm)} softmax into exp, sum and divide")
    notes.append(f"decomposed {decompose_norms(gm)} LayerNorm/RMSNorm into square and divide_sqrt")
    _propagate_shapes(gm, sample)
    notes.append(f"replaced {len(replace_nonlinearities(gm))} nonlinearities by neurons")
    notes.append(f"replaced {len(replace_products(gm))} products/ratios of two activations by 2-input neurons")
    notes.append(f"decomposed max pooling into {len(decompose_maxpool(gm, pad_value))} layers of 2-input max neurons")
    _propagate_shapes(gm, sample)
    check_supported(gm)
    check_any_batch(gm, sample)
    ranges, values_per_sample = activation_ranges(gm, calib, pad_value)
    _verify(gm, sample, expected)
    check_sample_major(gm, sample)  # after _verify: an output coupled across the batch is named there

    neurons = {name: m for name, m in gm.named_modules() if isinstance(m, SpikingNeuron)}
    scales = neuron_scales(ranges)
    for name, neuron in neurons.items():
        if normalize == "all" or (normalize == "relu" and neuron.preset_normalized):
            neuron.set_scale(scales[name])
    notes.append(f"calibrated on {calib.count} samples; normalized "
                 f"{sum(n.normalized for n in neurons.values())} of {len(neurons)} neuron layers ({normalize})")
    if dynamics == "subgradient":
        for name, a0 in zero_response(gm, sample)[0].items():
            neurons[name].bias0 = a0[0]
        notes.append("computed A(0) of every neuron for the subgradient dynamics")
    settings = dict(dynamics=dynamics, schedule=schedule.spec(), encoding=encoding, seed=int(seed),
                    normalize=normalize, pad_value=float(pad_value), memory_budget=int(memory_budget),
                    preprocessing=preprocessing)
    if T is not None:
        settings["tuned_for"] = int(T)
    snn = SpikingNetwork(gm, settings, calib.input_shape, values_per_sample, schedule=schedule)
    if share:
        _dist.broadcast_network(snn)
        notes.append(f"took rank 0's weights and scales on all {_dist.world_size()} ranks")
    if tune:
        result = tune_schedule(snn, calib.kept(), T)
        chosen = result.schedule.spec()
        if share:  # every rank tunes the same network; rank 0's choice is the one kept
            chosen = _dist.broadcast_object(chosen)
        snn.schedule = sched.make_schedule(chosen)
        snn.settings["schedule"] = chosen
        snn.tuning = result
        notes.append(f"tuned the schedule for T={T} on {result.samples} calibration samples: {snn.schedule!r} "
                     f"({100 * result.best.agreement:.1f}% agreement with the ANN; the paper's schedule: "
                     f"{100 * result.paper.agreement:.1f}%)")
    for note in notes:
        log.info(note)
    snn.conversion_log = notes
    return snn


def _run(gm, x: torch.Tensor, what: str) -> torch.Tensor:
    try:
        out = gm(x.clone())  # a clone: a model may change its input in place
    except Exception as exc:
        raise CalibrationError(f"running {what} on the calibration data failed: {type(exc).__name__}: {exc}. "
                               f"Check that the calibration samples have the shape the model expects") from exc
    if not isinstance(out, torch.Tensor):
        raise ConversionError(f"the model returns {type(out).__name__}; signgd converts models whose output "
                              f"is one tensor (wrap the model to return the logits)")
    check_finite_output(gm, x, out, what)
    return out


def _expected_output(gm, first: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """The traced, unmodified model on the first samples. When it fails there but runs on the whole
    first batch, the model fixes its batch size, which the simulator (time steps run as samples) cannot
    give it: say so rather than blame the data."""
    try:
        return _run(gm, sample, "the model")
    except CalibrationError as exc:
        error = exc
    try:
        runs_whole = first.shape[0] != sample.shape[0] and gm(first.clone()) is not None
    except Exception:  # noqa: BLE001 - it fails at any batch: the data's shape, as _run says
        runs_whole = False
    if runs_whole:
        raise ConversionError(
            f"the model runs on a batch of {first.shape[0]} but not on a batch of {sample.shape[0]}; it fixes its "
            f"batch size (a reshape or view with a literal batch, or a size kept from __init__). signgd runs "
            f"time steps as extra samples, so the model must take any batch: compute the batch from x.shape[0] "
            f"(or use -1) in forward") from error
    raise error


def _propagate_shapes(gm, sample: torch.Tensor) -> None:
    """Record every node's output shape (``node.meta['tensor_meta']``) for the passes that need it."""
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(sample.clone())
        except Exception as exc:
            raise CalibrationError(f"running the model on the calibration data failed: {type(exc).__name__}: "
                                   f"{exc}. Check the shape of the calibration samples") from exc


def _verify(gm, sample: torch.Tensor, expected: torch.Tensor) -> None:
    """The safety net: the rewritten graph, run as an ANN, must reproduce the model, and a sample's
    output must not depend on its batch-mates (the simulator folds time steps into the batch)."""
    with torch.no_grad():
        got = _run(gm, sample, "the converted graph")
        scale = float(expected.abs().max()) + 1e-6
        tol = (1e-3 if expected.dtype in (torch.float32, torch.float64) else 3e-2) * scale
        diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
        if not diff <= tol:
            raise ConversionError(
                f"the converted graph does not reproduce the model on the calibration data (max difference "
                f"{diff:.3g} against output scale {scale:.3g}); an in-place operation or an op the converter "
                f"misreads is the likely cause. Please report it with the model")
        if sample.shape[0] >= 2:
            alone = _run(gm, sample[:1], "the converted graph")
            if not float((alone - got[:1]).abs().max()) <= tol:
                raise ConversionError(
                    "the model's output for one sample depends on the other samples of the batch (an op "
                    "reduces over the batch dimension, e.g. x.mean() without dim, or BatchNorm without running "
                    "statistics, or an input whose batch is not dim 0, e.g. sequence-first [L, B, E]); signgd "
                    "folds time steps into dim 0, so it cannot convert this model as it is")


class _CalibrationBatches:
    """Iterates the calibration data once, as validated float batches on the model's device.

    ``peek()`` returns the first batch without losing it, so a one-shot iterable (a generator)
    still works: the conversion passes look at the first batch, calibration then reads them all.
    """

    def __init__(self, data, batch_size: int, device, dtype, keep: int = 0):
        self.data, self.batch_size, self.device, self.dtype = data, batch_size, device, dtype
        self.keep = keep  # the first ``keep`` samples are kept for tuning the schedule
        self._kept: list[torch.Tensor] = []
        self.count = 0
        self.input_shape: tuple[int, ...] | None = None
        self._it = None
        self._first: torch.Tensor | None = None

    def peek(self) -> torch.Tensor:
        if self._first is None:
            self._it = self._validated()
            self._first = next(self._it, None)
            if self._first is None:
                raise CalibrationError("the calibration data is empty; pass at least one input sample "
                                       "(a tensor [N, ...], a Dataset, or an iterable of batches)")
        return self._first

    def __iter__(self):
        first = self.peek()
        self._kept, held = [], 0
        for x in itertools.chain([first], self._it):
            if held < self.keep:
                self._kept.append(x[:self.keep - held])
                held += self._kept[-1].shape[0]
            yield x

    def kept(self) -> torch.Tensor:
        """The first ``keep`` calibration samples (after a full iteration)."""
        return torch.cat(self._kept)

    def _validated(self):
        for i, item in enumerate(batches.items(self.data, self.batch_size, CalibrationError, "calibration")):
            x = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(x, torch.Tensor):
                raise CalibrationError(f"calibration batch {i} is a {type(x).__name__}, not a tensor")
            if not x.is_floating_point():
                raise CalibrationError(f"calibration batch {i} has dtype {x.dtype}; pass float inputs scaled "
                                       f"as the model expects them (e.g. x.float() / 255)")
            if x.dim() >= 1 and x.shape[0] == 0:
                continue
            if x.dim() < 2:
                raise CalibrationError(f"calibration batch {i} of shape {tuple(x.shape)} has no batch "
                                       f"dimension; batches must be [N, ...]")
            if self.input_shape is None:
                self.input_shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != self.input_shape:
                raise CalibrationError(f"calibration batch {i} has sample shape {tuple(x.shape[1:])}, "
                                       f"but earlier batches had {self.input_shape}; use one shape")
            x = x.to(device=self.device, dtype=self.dtype, copy=True)  # never the caller's tensor
            if not torch.isfinite(x).all():
                raise CalibrationError(f"calibration batch {i} contains NaN or Inf; clean the data")
            self.count += x.shape[0]
            yield x
