"""The conversion pipeline: trace -> simplify -> fold BN -> decompose (attention, softmax, norms) ->
neurons -> products -> max trees -> check -> calibrate.

Each step is a pass in ``signgd.graph`` that logs what it changed (``logging.getLogger("signgd")``).
The defaults are the best general configuration the benchmarks found (docs/defaults.md): every
neuron, not only the ReLUs, normalized by its per-element calibration maximum, ``analog`` input, and
one schedule tuned across T in {8, 16, 32, 64} (``signgd.tuning``). ``preset="paper"`` is the paper's
(``normalize="relu"``, ``float`` input, ``eta_t = 0.15 * 0.95**(t-1)``, nothing tuned).
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Iterable

import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from . import batches
from . import distributed as _dist
from .errors import CalibrationError, ConversionError
from .feedback import bar, say, seconds
from .graph.attention import decompose_attention, decompose_softmax
from .graph.batchdim import check_any_batch, check_sample_major
from .graph.batchnorm_calls import batchnorm_calls_to_modules
from .graph.calibrate import activation_ranges, neuron_scales, zero_response
from .graph.check import check_supported
from .graph.fold_bn import fold_batchnorm
from .graph.max_reduce import decompose_max_reductions
from .graph.maxpool import decompose_maxpool
from .graph.neuronize import replace_nonlinearities
from .graph.norms import decompose_norms
from .graph.products import replace_products
from .graph.provenance import record_origins
from .graph.simplify import remove_assertions, remove_identities
from .graph.swin import decompose_swin
from .graph.trace import trace
from .graph.vector_norms import decompose_vector_norms
from .network import SpikingNetwork
from .neurons import SpikingNeuron
from .options import resolve, start_estimate
from .preprocessing import checked, from_data
from .tuner import tune_network
from .validation import check_finite_output

log = logging.getLogger("signgd")

#: Calibration samples the schedule is tuned on (the first ones).
TUNING_SAMPLES = 256
#: Samples of a calibration Dataset used by default (a seeded random subset; the command's --calibration).
CALIBRATION_SAMPLES = 500
DEFAULT_MEMORY_BUDGET = 512 * 2**20


def convert(model: nn.Module, calibration, *, dynamics: str = "signgd", schedule=None,
            encoding: str | None = None, normalize: str | None = None, T: int | None = None,
            preset: str | None = None, tolerance: float | None = None, start: str | None = None,
            scale: str | None = None, window: int | None = None, seed: int = 0,
            pad_value: float = -200.0, leaf_modules: Iterable[type] = (),
            memory_budget: int = DEFAULT_MEMORY_BUDGET, batch_size: int = 256,
            distributed: bool | None = None, preprocessing="auto",
            calibration_samples: int | None = CALIBRATION_SAMPLES, progress: bool | None = None) -> SpikingNetwork:
    """Convert a trained model into a SpikingNetwork.

    Args:
        model: a torch.nn.Module (left untouched: conversion works on a deep copy, in eval mode).
        calibration: a tensor of inputs ``[N, ...]``, a Dataset, or an iterable of ``x`` or
            ``(x, y, ...)`` batches. Used for normalization scales, the input shape and tuning. A
            Dataset longer than ``calibration_samples`` is sampled (see there); a tensor or an
            iterable is used whole.
        dynamics: ``"signgd"`` (the paper's neuron), ``"sparse"`` (signGD with signed spikes, silent
            within ``tolerance * eta_t`` of its target: the neuron of ``preset="low-energy"``, docs/sparse.md),
            ``"graded"`` (the sparse neuron whose spike also carries a power of two, about its gap:
            it settles in a few steps and falls silent; not the paper's neuron, docs/sparse.md "Graded spikes"),
            ``"subgradient"`` (the paper's integrate-and-fire
            baseline) or ``"if"`` (the classic integrate-and-fire neuron, reset by subtraction, one
            threshold per channel from the calibration maxima; ``signgd.nir.export`` writes it as ``nir.IF``).
        schedule: step sizes; a Schedule, a name (``"exponential"``, ``"inverse"``, ``"constant"``,
            ``"polynomial"``, ``"adaptive"``: per-neuron steps, signGD only; optionally
            ``"name:lr=0.3,decay=0.9"``), a callable ``t -> eta_t`` or a 1-D tensor. Default:
            exponential(0.15, 0.95) for signGD, exponential(1/64, 1) for graded (its band: it is not tuned),
            inverse(1) for subgradient.
        encoding: ``"float"``, ``"spike"``, ``"stochastic"`` (seeded by ``seed``) or ``"analog"``.
            Default: ``"float"`` for signGD, ``"analog"`` (the input itself at every step) for
            subgradient.
        normalize: ``"all"`` (every neuron by its own per-element max |output| over the calibration
            data: ReLU, max, GELU, LayerNorm parts, attention products...), ``"relu"`` (the paper's
            preset: ReLUs only, every other neuron in raw units) or ``"none"``. Default: ``"all"`` for
            signGD (benchmarks/architectures.py: the paper preset leaves transformers and mixers far
            below their ANN, and max pooling short of it), ``"relu"`` for subgradient.
        T: the number of time steps the network will run, or a list of them. The schedule is tuned
            for it on the first ``TUNING_SAMPLES`` calibration samples (``signgd.tuning``: the
            exponential or adaptive schedule whose output agrees best with the ANN after T steps, on
            average over a list) and the encoding defaults to ``"analog"``. Default (signGD, no
            ``schedule``, no ``preset``): tuned across T in ``signgd.tuning.DEFAULT_STEPS`` (8, 16, 32,
            64), the best general configuration of benchmarks/latency.py (docs/defaults.md). An
            explicit ``schedule`` or ``encoding`` wins (no tuning with an explicit schedule). The
            network still runs any number of steps.
        preset: ``"paper"`` fixes the paper's settings (normalize ``"relu"``, encoding ``"float"``,
            ``exponential(0.15, 0.95)``, no tuning) so results compare with the paper;
            ``"low-energy"``: the sparse or the graded neuron (``dynamics="graded"``: that one only) with
            the dynamics, schedule, tolerance and (without ``T``) the number of steps tuned for the least
            energy at which the SNN agrees with the ANN on the tuning samples (``signgd.options``,
            ``signgd.energy_tuning.tune_energy``). Explicit arguments win.
        tolerance: the sparse neuron's silence band as a fraction of ``eta_t`` (default 0.5: a neuron
            moves when the move brings it closer to its target; ``preset="low-energy"`` tunes it).
        start: where the signGD estimates start: ``"zero"`` (the paper's neuron; the default except for
            the sparse dynamics), ``"variance"`` (LayerNorm's, GroupNorm's and ``F.normalize``'s variance
            neurons start at their calibration mean, the others at 0), ``"mean"`` (every neuron at its
            calibration mean) or ``"active"`` (as ``"variance"``, and ReLU/max elements at their calibration
            mean where the output was positive on most calibration samples; the sparse dynamics' default)
            (``signgd.options``; docs/sparse.md).
        scale: what a normalized neuron element is divided by: ``"max"`` (the default: its calibration
            ``max |f(x)|``) or ``"mean"`` (its mean ``|f(x)|``). A sparse or graded neuron's band is a fraction
            of it, so ``"mean"`` resolves an element's usual values where its largest are outliers (a softmax's
            exp; docs/scale_rule.md).
        window: graded neurons only: each neuron layer spikes during ``window`` steps of its own, beginning on the
            last step of the layers before it, so it evaluates its target once and settles on it in a few spikes
            (``signgd.windows``; the readout is final at ``snn.settled_step()``; docs/windows.md).
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
        calibration_samples: a calibration Dataset longer than this is calibrated on this many of
            its samples, drawn at random without replacement (seeded by ``seed``; the command's
            ``--calibration`` has the same default, 500); None: all of it.
        progress: tqdm bars for calibration and tuning (default: when stderr is a terminal), and one
            summary line on stderr at the end (what was chosen, how long it took) unless False
            (``signgd.feedback``).
    """
    began = time.perf_counter()
    opts = resolve(dynamics, schedule, encoding, normalize, T, preset, tolerance, start, scale, window)
    dynamics, schedule, encoding, normalize, T, tune = (opts.dynamics, opts.schedule, opts.encoding, opts.normalize,
                                                        opts.T, opts.tune)
    preprocessing = from_data(calibration) if preprocessing == "auto" else checked(preprocessing)
    share = _dist.active(distributed)  # before the work: distributed=True without a group fails now

    ref = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    calibration, of = batches.sample_dataset(calibration, calibration_samples, seed)
    calib = _CalibrationBatches(calibration, batch_size, device, dtype, keep=TUNING_SAMPLES if tune else 0,
                                progress=progress)
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
    notes.append(f"made {batchnorm_calls_to_modules(gm)} eval-mode F.batch_norm calls BatchNorm modules")
    notes.append(f"folded {fold_batchnorm(gm)} BatchNorm layers into the preceding conv/linear")
    # Each decomposition reads which nodes are activations from the shapes (graph.deps), so the
    # shapes are propagated again after a pass that added nodes (a norm of a softmax's output).
    for decompose, what in ((decompose_swin, "torchvision Swin window attentions and patch merges into plain ops"),
                            (decompose_attention, "scaled dot-product attentions into matmul and softmax"),
                            (lambda g: decompose_softmax(g, sample), "softmax into exp, sum and divide"),
                            (decompose_norms, "LayerNorm/RMSNorm/GroupNorm into square and divide_sqrt"),
                            (decompose_vector_norms, "2-norms (F.normalize, .norm()) into square and root")):
        count = decompose(gm)
        notes.append(f"decomposed {count} {what}")
        shifted = gm.meta.pop("shifted_softmax", 0)
        if shifted:
            notes[-1] += (f" ({shifted} of them minus their row maxima, 2-input max neurons: their logits on the "
                          f"first calibration samples come near exp's range)")
        if count:
            _propagate_shapes(gm, sample)
    notes.append(f"replaced {len(replace_nonlinearities(gm))} nonlinearities by neurons")
    notes.append(f"replaced {len(replace_products(gm))} products/ratios of two activations by 2-input neurons")
    pooled = decompose_maxpool(gm, pad_value)
    notes.append(f"decomposed max pooling into {len(pooled)} layers of 2-input max neurons")
    if pooled:  # a max over a dim of a max pooling's output reads it as an activation from its shape
        _propagate_shapes(gm, sample)
    notes.append(f"decomposed maxima over dims into {len(decompose_max_reductions(gm))} layers of 2-input max neurons")
    _propagate_shapes(gm, sample)
    check_supported(gm)
    check_any_batch(gm, sample)
    record_origins(gm)  # what each neuron was in the model, for the reports' layer names
    calib_start = time.perf_counter()
    means, active, magnitudes = {}, {}, {}
    ranges, values_per_sample = activation_ranges(gm, calib, pad_value, means, active, magnitudes)
    calib_time = seconds(calib_start)
    _verify(gm, sample, expected)
    check_sample_major(gm, sample)  # after _verify: an output coupled across the batch is named there

    neurons = {name: m for name, m in gm.named_modules() if isinstance(m, SpikingNeuron)}
    scales = neuron_scales(ranges if opts.scale == "max" else magnitudes)
    for name, neuron in neurons.items():
        if normalize == "all" or (normalize == "relu" and neuron.preset_normalized):
            neuron.set_scale(_per_channel(scales[name]) if dynamics == "if" else scales[name])
    starts = {name: start_estimate(neuron.target, opts.start, means[name], active[name])
              for name, neuron in neurons.items()}
    started = [name for name, value in starts.items() if value is not None and bool(value.ne(0).any())]
    for name in started:
        neurons[name].set_start(starts[name])
    if started:
        notes.append(f"started the estimates of {len(started)} neuron layers at their calibration mean "
                     f"(start={opts.start!r})")
    used = f"{calib.count} samples" + (f" (a random subset of the Dataset's {of})" if of else "")
    notes.append(f"calibrated on {used}; normalized "
                 f"{sum(n.normalized for n in neurons.values())} of {len(neurons)} neuron layers ({normalize}"
                 + (f", by their calibration {opts.scale} |f(x)|)" if opts.scale != "max" else ")"))
    if dynamics == "subgradient":
        for name, a0 in zero_response(gm, sample)[0].items():
            neurons[name].bias0 = a0[0]
        notes.append("computed A(0) of every neuron for the subgradient dynamics")
    settings = dict(dynamics=dynamics, schedule=schedule.spec(), encoding=encoding, seed=int(seed),
                    normalize=normalize, pad_value=float(pad_value), memory_budget=int(memory_budget),
                    preprocessing=preprocessing, **opts.settings())
    if T is not None:
        settings["tuned_for"] = list(T) if isinstance(T, tuple) else int(T)
    snn = SpikingNetwork(gm, settings, calib.input_shape, values_per_sample, schedule=schedule)
    if share:
        _dist.broadcast_network(snn)
        notes.append(f"took rank 0's weights and scales on all {_dist.world_size()} ranks")
    tuned = ""
    if tune:
        tune_start = time.perf_counter()
        # the energy objective may pick the mean-|f(x)| scales, unless a scale was asked for
        alternative = neuron_scales(magnitudes) if opts.objective == "energy" and scale is None else None
        note, summary = tune_network(snn, calib.kept(), T, opts.objective, opts.tune_tolerance, share, progress,
                                     mean_scales=alternative, window_limit=opts.window_limit)
        notes.append(note)
        tuned = f"; {summary} ({seconds(tune_start)})"
    for note in notes:
        log.info(note)
    snn.conversion_log = notes
    say(f"signgd: converted {type(model).__name__} in {seconds(began)}: {len(neurons)} neuron layers, "
        f"calibrated on {used} ({calib_time}){tuned}, {encoding} input", progress)
    return snn


def _per_channel(r: torch.Tensor) -> torch.Tensor:
    """The IF dynamics' thresholds from the per-element calibration maxima ``r``: one per channel (dim 0
    of a sample's feature map), so that NIR's conv weights can carry the value of a spike
    (``signgd.nir``); per element for a vector. A channel's threshold is the median of its positions'
    maxima, not their max: a neuron's rate is at most the input over the threshold, and with the max
    (the brightest position of the brightest image) most positions fire too rarely to be read in 64
    steps (ResNet, Fashion-MNIST, T=64: 66.0% with the max, 88.8% with the median; docs/nir.md). A
    neuron driven above its threshold fires at every step (its output clips there)."""
    if r.dim() < 2:
        return r
    return r.flatten(1).quantile(0.5, dim=1).reshape(-1, *([1] * (r.dim() - 1)))


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

    def __init__(self, data, batch_size: int, device, dtype, keep: int = 0, progress: bool | None = None):
        self.data, self.batch_size, self.device, self.dtype = data, batch_size, device, dtype
        self.progress = progress
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
        self._kept = []
        with bar(None, self.progress, desc="calibrate", unit="sample", total=batches.samples(self.data)) as shown:
            for x in itertools.chain([first], self._it):
                shown.update(x.shape[0])
                yield self._keep(x)

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        held = sum(k.shape[0] for k in self._kept)
        if held < self.keep:
            self._kept.append(x[:self.keep - held])
        return x

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
