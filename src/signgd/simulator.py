"""Run a converted graph for T steps: layer-major within a chunk of steps, time-major across chunks.

The graph has no feedback, so within a chunk of ``Tc`` steps every affine op runs once on a batch of
``Tc * B`` (time folded into the batch: one large matrix product per layer), and only the neurons
loop over time, element-wise. Neuron, encoder and decoder states carry from one chunk to the next,
so ``chunk=1`` is the plain time-major simulation and ``chunk=T`` the fully layer-major one; all
give the same numbers up to float rounding. The chunk size bounds memory.

All state of a run lives in this module's ``_Run`` object, created per call: a converted network
holds no state between calls and can be run from several threads at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx

from .codecs import InputEncoder, OutputDecoder
from .neurons import SpikingNeuron
from .schedules import Schedule


@dataclass
class SimulationResult:
    """Outputs at the requested steps, and (when asked) spike counts per neuron layer and step."""

    outputs: dict[int, torch.Tensor]
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [T] total over the batch
    neurons: dict[str, int] = field(default_factory=dict)  # name -> neurons per sample
    batch_size: int = 0

    def spikes_per_sample(self, T: int | None = None) -> dict[str, float]:
        """Spikes fired per sample by each layer over the first T steps (all steps if None)."""
        return {k: float(v[:T].sum()) / max(self.batch_size, 1) for k, v in self.spikes.items()}

    def firing_rates(self, T: int | None = None) -> dict[str, float]:
        """Fraction of (neuron, step) pairs that spiked, per layer."""
        out = {}
        for k, v in self.spikes.items():
            steps = v[:T].numel()
            out[k] = float(v[:T].sum()) / max(self.batch_size * self.neurons[k] * steps, 1)
        return out


class _Run:
    def __init__(self, dynamics: str, batch: int, stats: bool, total_steps: int, probe=None):
        self.dynamics = dynamics
        self.probe = probe
        self.batch = batch
        self.stats = stats
        self.total_steps = total_steps
        self.states: dict[str, dict] = {}
        self.spikes: dict[str, torch.Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.etas: torch.Tensor | None = None
        self.t0 = 1

    def neuron(self, name: str, mod: SpikingNeuron, args) -> torch.Tensor:
        steps = self.etas.shape[0]
        xs = tuple(a.reshape(steps, self.batch, *a.shape[1:]) for a in args)
        state = self.states.get(name)
        if state is None:
            like = mod(*(x[0] for x in xs))
            state = self.states[name] = mod.init_state(like, self.dynamics)
            if self.stats:
                self.spikes[name] = torch.zeros(self.total_steps, dtype=torch.float64, device=like.device)
                self.neurons[name] = like[0].numel()
        counts = None
        if self.stats:
            counts = torch.zeros(steps, dtype=torch.float64, device=xs[0].device)
        out = mod.run(state, xs, self.etas, self.dynamics, counts)
        if counts is not None:
            self.spikes[name][self.t0 - 1:self.t0 - 1 + steps] += counts
        if self.probe is not None:
            self.probe(name, self.t0, out)
        return out.reshape(steps * self.batch, *out.shape[2:])


class _ChunkInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, run: _Run):
        super().__init__(gm, garbage_collect_values=True)
        self.sim = run

    def call_module(self, target, args, kwargs):
        mod = self.submodules[target]
        if isinstance(mod, SpikingNeuron):
            return self.sim.neuron(target, mod, args)
        return super().call_module(target, args, kwargs)


def simulate(gm: fx.GraphModule, x: torch.Tensor, steps: list[int], *, schedule: Schedule, dynamics: str,
             encoder: InputEncoder, chunk: int, stats: bool = False, probe=None) -> SimulationResult:
    """Simulate ``max(steps)`` steps of the converted graph on input ``x`` ``[B, ...]``.

    ``probe(name, t0, out)``, when given, sees what each neuron layer passes downstream for steps
    ``t0 .. t0 + Tc - 1`` (``out`` is ``[Tc, B, ...]``, read-only): per-layer statistics use it."""
    T = max(steps)
    wanted = set(steps)
    batch = x.shape[0]
    run = _Run(dynamics, batch, stats, T, probe)
    interp = _ChunkInterpreter(gm, run)
    decoder = OutputDecoder(dynamics)
    enc_state, dec_state = encoder.init_state(x), decoder.init_state()
    outputs: dict[int, torch.Tensor] = {}
    # One evaluation of the schedule for the whole run, so every chunking sees identical steps.
    etas = schedule.etas(1, T + 1, dtype=x.dtype, device=x.device)
    with torch.inference_mode():
        for t0 in range(1, T + 1, chunk):
            t1 = min(t0 + chunk, T + 1)
            run.etas = etas[t0 - 1:t1 - 1]
            run.t0 = t0
            encoded = encoder.run(enc_state, x, run.etas, t0)
            readout = interp.run(encoded.reshape((t1 - t0) * batch, *x.shape[1:]))
            readout = readout.reshape(t1 - t0, batch, *readout.shape[1:])
            decoded = decoder.run(dec_state, readout, run.etas)
            for t in range(t0, t1):
                if t in wanted:
                    outputs[t] = decoded[t - t0].clone()
    return SimulationResult(outputs, run.spikes, run.neurons, batch)
