"""SpikingNetwork: the converted network, a torch.nn.Module that runs T steps per call."""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Iterable, Union

import torch
import torch.fx as fx
from torch import nn

from . import snnfile
from .codecs import InputEncoder
from .errors import InputError
from .neurons import SpikingNeuron
from .schedules import Schedule, make_schedule
from .simulator import SimulationResult, simulate
from .windows import neuron_windows, settled_step

Steps = Union[int, Iterable[int]]

#: Inputs (steps x samples) per affine call the default plan aims at, by device type. Measured on
#: 2 CPU cores (docs/speed.md): 128 (8 samples x 16 steps) is as fast as 256 for the VGG and faster
#: for ResNet-18 and the MLP-Mixer, whose layer-sized buffers then stay in the cache from one op to
#: the next; a GPU wants far more parallel work.
SAMPLES_PER_CALL = {"cpu": 128, "cuda": 4096}
#: Steps folded into each call on that device (the rest of SAMPLES_PER_CALL is made of samples).
STEPS_PER_CALL = {"cpu": 16}


class SpikingNetwork(nn.Module):
    """A converted network. ``snn(x, T=64)`` is the decoded output after 64 steps;
    ``snn(x, T=[8, 16, 64])`` a dict of outputs from one run of 64 steps.

    ``graph_module`` is the rewritten graph: called directly it is the ANN (every neuron computes its
    exact target), which is what ``ann(x)`` returns. State is created per call, never kept.
    """

    def __init__(self, graph_module: fx.GraphModule, settings: dict, input_shape: tuple[int, ...],
                 values_per_sample: int, schedule=None):
        super().__init__()
        self.graph_module = graph_module
        self.settings = dict(settings)
        self.settings.setdefault("preprocessing", None)  # files saved before it was recorded: not known
        self.input_shape = tuple(int(d) for d in input_shape)
        self.values_per_sample = int(values_per_sample)
        # The Schedule itself when conversion has it (a callable schedule has no description to
        # rebuild it from); else rebuilt from the settings (a loaded network).
        self.schedule = schedule if schedule is not None else make_schedule(settings["schedule"])
        self.encoder = InputEncoder(settings["encoding"], settings.get("seed", 0))
        self.conversion_log: list[str] = []  # what each conversion pass changed
        self.eval()

    # ---- introspection ----------------------------------------------------------------------
    @property
    def neurons(self) -> dict[str, SpikingNeuron]:
        """Every neuron layer by name, in graph order."""
        mods = dict(self.graph_module.named_modules())
        return {n.target: mods[n.target] for n in self.graph_module.graph.nodes
                if n.op == "call_module" and isinstance(mods[n.target], SpikingNeuron)}

    def extra_repr(self) -> str:
        s = self.settings
        return (f"dynamics={s['dynamics']}, schedule={self.schedule!r}, encoding={s['encoding']}, "
                f"normalize={s['normalize']}, neuron layers={len(self.neurons)}")

    def save(self, path) -> Path:
        """Write the network (graph, weights, scales, settings, format version) to ``path``; read it
        back with ``signgd.load(path)``. The file holds no pickled code (``signgd.snnfile``)."""
        return snnfile.save(self, path)

    # ---- running ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "SpikingNetwork":
        """A converted network is always in inference mode (BatchNorm must keep its running
        statistics); ``train()`` is refused rather than silently changing the numbers."""
        if mode:
            raise RuntimeError("a SpikingNetwork runs in eval mode only; train the ANN, then convert it again")
        return super().train(False)

    def ann(self, x: torch.Tensor) -> torch.Tensor:
        """The converted graph run as an ANN: equal to the original model up to float rounding."""
        self.check_input(x)
        with torch.inference_mode():
            return self.graph_module(x)

    def forward(self, x: torch.Tensor, T: Steps = 64, *, chunk: int | None = None,
                batch_chunk: int | None = None):
        outputs = self.simulate(x, T, chunk=chunk, batch_chunk=batch_chunk).outputs
        return next(iter(outputs.values())) if _is_scalar(T) else outputs

    def simulate(self, x: torch.Tensor, T: Steps = 64, *, stats: bool = False,
                 chunk: int | None = None, batch_chunk: int | None = None,
                 schedule: Schedule | None = None, probe=None, tolerance: float | None = None) -> SimulationResult:
        """Run ``max(T)`` steps; the result holds outputs at each requested step and, with
        ``stats=True``, the spikes of every neuron layer at every step.

        ``chunk``: time steps per pass over the graph (1: time-major, ``T``: layer-major);
        ``batch_chunk``: samples simulated together (all steps for one slice of the batch, then
        the next). Left out, both are planned (``plan``); a ``chunk`` given alone runs the whole
        batch together. Every choice gives the same numbers up to float rounding.
        ``schedule``: step sizes for this run instead of the network's own (``signgd.tuning``
        compares candidates this way, leaving the network as it is); ``tolerance``: likewise, the sparse
        dynamics' silence band instead of the network's.
        ``probe(name, t0, out)``: called with what each neuron layer passes downstream for steps
        ``t0 .. t0 + len(out) - 1`` (``out``: ``[steps, batch, ...]``, read-only, valid during the
        call; the report's per-layer error uses it); the whole batch is then simulated together
        unless ``batch_chunk`` says otherwise, so ``out`` holds every sample.
        """
        steps = parse_steps(T)
        self.check_input(x)
        if probe is not None and batch_chunk is None:
            batch_chunk = x.shape[0]
        if chunk is None or batch_chunk is None:
            bc = None if batch_chunk is None else _positive_int(batch_chunk, "batch_chunk")
            planned_bc, planned_chunk = self.plan(x, max(steps), batch_chunk=bc)
            batch_chunk = planned_bc if chunk is None else (bc or x.shape[0])
            chunk = planned_chunk if chunk is None else chunk
        chunk, batch_chunk = _positive_int(chunk, "chunk"), _positive_int(batch_chunk, "batch_chunk")
        return simulate(self.graph_module, x, steps, schedule=self.schedule if schedule is None else schedule,
                        dynamics=self.settings["dynamics"], encoder=self.encoder, chunk=chunk,
                        batch_chunk=batch_chunk, stats=stats, probe=probe,
                        tolerance=self.settings.get("tolerance") if tolerance is None else tolerance,
                        windows=self.windows())

    def windows(self) -> dict[str, tuple[int, int]] | None:
        """``{neuron layer: (first, last)}``, the steps at which each layer may spike, for a network converted with
        ``window=k`` (``signgd.windows``); None without windows."""
        k = self.settings.get("window")
        return None if k is None else neuron_windows(self.graph_module, k)

    def settled_step(self) -> int | None:
        """With windows, the step after which the output no longer changes (``signgd.windows.settled_step``)."""
        k = self.settings.get("window")
        return None if k is None else settled_step(self.graph_module, k)

    def plan(self, x: torch.Tensor, T: int, batch_chunk: int | None = None) -> tuple[int, int]:
        """``(batch_chunk, chunk)``: how the default path splits a run on ``x`` over samples and steps.

        Each affine op should see about ``SAMPLES_PER_CALL`` inputs (steps x samples): fewer pay
        Python and launch overhead per step; on a CPU, more fall out of cache and are slower
        (``docs/speed.md``), and never more than ``memory_budget`` allows (``values_per_sample``
        is the size of all activations of one sample, an upper bound on one input's working set).
        On a CPU those inputs are made of ``STEPS_PER_CALL`` steps of a slice of the batch rather
        than one step of the whole batch: the neuron states, which grow with the samples in
        flight, then stay small (peak memory close to the ANN's at the same batch), and each
        neuron scan runs several steps over memory it keeps in cache.
        """
        device = x.device.type
        B = x.shape[0]
        per_sample = max(1, self.values_per_sample * x.element_size())
        target = SAMPLES_PER_CALL.get(device, SAMPLES_PER_CALL["cuda"])
        target = max(1, min(target, int(self.settings["memory_budget"]) // per_sample))
        if batch_chunk is not None:
            bc = min(batch_chunk, B)
            return bc, max(1, min(T, target // bc))
        steps = STEPS_PER_CALL.get(device, 1)
        chunk = max(1, min(T, steps, target))
        bc = min(B, max(1, target // chunk))
        if bc == B:  # a small batch: fold more steps into each call instead
            chunk = max(1, min(T, target // B))
        return bc, chunk

    @property
    def placement(self) -> tuple[torch.device, torch.dtype]:
        """The device and dtype the network runs in (those of its first parameter or buffer)."""
        ref = next(self.graph_module.parameters(), None)
        if ref is None:
            ref = next(self.graph_module.buffers(), None)
        if ref is None:
            return torch.device("cpu"), torch.get_default_dtype()
        return ref.device, ref.dtype

    def check_input(self, x) -> None:
        """Raise an ``InputError`` naming the problem unless ``x`` is a finite batch of the network's
        input shape, device and dtype."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"the input must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape or x.dim() != len(self.input_shape) + 1:
            raise InputError(f"input of shape {tuple(x.shape)} does not match the network: expected "
                             f"(batch, {', '.join(map(str, self.input_shape))}) as in the calibration data")
        if x.shape[0] == 0:
            raise InputError("the input batch is empty")
        device, dtype = self.placement
        if x.device != device:
            raise InputError(f"the input is on {x.device} but the network is on {device}; "
                             f"move one of them (x.to({str(device)!r}) or snn.to(...))")
        if x.dtype != dtype:
            raise InputError(f"the input has dtype {x.dtype} but the network has {dtype}; "
                             f"convert one of them (x.to({dtype}) or snn.to({x.dtype}))")
        if not torch.isfinite(x).all():
            raise InputError("the input contains NaN or Inf; clean the data before simulating")


def parse_steps(T: Steps) -> list[int]:
    """Validate T (an int or a non-empty iterable of ints >= 1) and return the sorted unique steps."""
    if _is_scalar(T):
        return [_positive_int(T, "T")]
    try:
        items = list(T)
    except TypeError:
        raise InputError(f"T must be a positive int or a list of them, got {T!r}") from None
    if not items:
        raise InputError("T is an empty list; give at least one number of time steps, e.g. T=[8, 64]")
    return sorted({_positive_int(t, "T") for t in items})


def _is_scalar(T) -> bool:
    return isinstance(T, numbers.Real) or (isinstance(T, torch.Tensor) and T.dim() == 0)


def _positive_int(v, what: str) -> int:
    if isinstance(v, torch.Tensor) and v.dim() == 0:
        v = v.item()
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise InputError(f"{what} must be a positive integer number of time steps, got {v!r}")
    if not math.isfinite(v) or v < 1:
        raise InputError(f"{what} must be at least 1, got {v!r}")
    return int(v)
