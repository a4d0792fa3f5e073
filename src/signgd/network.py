"""SpikingNetwork: the converted network, a torch.nn.Module that runs T steps per call."""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Union

import torch
import torch.fx as fx
from torch import nn

from .codecs import InputEncoder
from .errors import InputError
from .neurons import SpikingNeuron
from .schedules import make_schedule
from .simulator import SimulationResult, simulate

Steps = Union[int, Iterable[int]]


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

    def save(self, path) -> "pathlib.Path":
        """Write the network (graph, weights, scales, settings, format version) to ``path``; read it
        back with ``signgd.load(path)``. The file holds no pickled code (``signgd.serialize``)."""
        from .serialize import save
        return save(self, path)

    # ---- running ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "SpikingNetwork":
        """A converted network is always in inference mode (BatchNorm must keep its running
        statistics); ``train()`` is refused rather than silently changing the numbers."""
        if mode:
            raise RuntimeError("a SpikingNetwork runs in eval mode only; train the ANN, then convert it again")
        return super().train(False)

    def ann(self, x: torch.Tensor) -> torch.Tensor:
        """The converted graph run as an ANN: equal to the original model up to float rounding."""
        self._check_input(x)
        with torch.inference_mode():
            return self.graph_module(x)

    def forward(self, x: torch.Tensor, T: Steps = 64, *, chunk: int | None = None):
        outputs = self.simulate(x, T, chunk=chunk).outputs
        return next(iter(outputs.values())) if _is_scalar(T) else outputs

    def simulate(self, x: torch.Tensor, T: Steps = 64, *, stats: bool = False,
                 chunk: int | None = None) -> SimulationResult:
        """Run ``max(T)`` steps; the result holds outputs at each requested step and, with
        ``stats=True``, the spikes of every neuron layer at every step."""
        steps = parse_steps(T)
        self._check_input(x)
        chunk = self._chunk(x, max(steps)) if chunk is None else _positive_int(chunk, "chunk")
        return simulate(self.graph_module, x, steps, schedule=self.schedule,
                        dynamics=self.settings["dynamics"], encoder=self.encoder, chunk=chunk, stats=stats)

    def _chunk(self, x: torch.Tensor, T: int) -> int:
        """Steps simulated at once. Enough that each affine op sees about ``target`` samples (a
        batch of 1 would otherwise pay Python and launch overhead on every step), but no more: on
        a CPU a larger working set falls out of cache and is slower (benchmarks/speed.py); and
        never more than the memory budget allows."""
        target = 256 if x.device.type == "cpu" else 4096
        chunk = max(1, min(T, -(-target // x.shape[0])))
        per_step = max(1, x.shape[0] * self.values_per_sample * x.element_size())
        return max(1, min(chunk, int(self.settings["memory_budget"]) // per_step))

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"the input must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape or x.dim() != len(self.input_shape) + 1:
            raise InputError(f"input of shape {tuple(x.shape)} does not match the network: expected "
                             f"(batch, {', '.join(map(str, self.input_shape))}) as in the calibration data")
        if x.shape[0] == 0:
            raise InputError("the input batch is empty")
        ref = next(self.graph_module.parameters(), None)
        if ref is None:
            ref = next(self.graph_module.buffers(), None)
        if ref is not None and x.device != ref.device:
            raise InputError(f"the input is on {x.device} but the network is on {ref.device}; "
                             f"move one of them (x.to({str(ref.device)!r}) or snn.to(...))")
        if ref is not None and x.dtype != ref.dtype:
            raise InputError(f"the input has dtype {x.dtype} but the network has {ref.dtype}; "
                             f"convert one of them (x.to({ref.dtype}) or snn.to({x.dtype}))")
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
