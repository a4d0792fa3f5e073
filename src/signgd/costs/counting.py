"""The SNN's operations counted on the changes its neurons send, step by step, and the ANN's by the same rules.

The cost model is the package docstring's (``signgd.costs``; docs/energy.md has it with examples). This
module holds the parts that read a converted network:

- ``ann_costs``: one ANN forward pass per sample, node by node;
- ``neuron_work``: the neuron work every step costs whatever is sent (per layer, per sample), and
  ``neuron_work_steps`` the same step by step (an ``adaptive(start=)`` schedule's neurons are binary up to
  ``start`` and adaptive after it: each step is priced as what it is);
- ``event_costs``: what the sparse neuron pays per event (an input element that received something, an
  output evaluated again, a spike, a check of its gap), zero for the other dynamics, whose neurons work at
  every step;
- ``StepCounter``: reads each neuron layer's output sequence during a simulation, recovers which neurons
  sent a change at each step, and runs ``SynapseCounter`` once per step: the synaptic ACs and MACs per
  node and step, and the sparse neurons' events per layer and step.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx

from ..dynamics import BAND_DYNAMICS, SPIKE_DYNAMICS
from ..neurons import SpikingNeuron
from ..schedules import Phase, is_power_of_two, phase, phases
from . import op_costs as oc
from .changed import checked_mask, threshold_changes, windowed
from .synapses import EVENT, REAL, SynapseCounter

__all__ = ["EnergyModel", "StepCounter", "ann_costs", "neuron_work", "neuron_work_steps", "event_costs",
           "dense_synaptic_ops", "counting_copy", "node_of", "ann_energy", "energy_per_sample", "INPUT", "READOUT",
           "EVENT_KINDS"]

INPUT, READOUT = "input", "readout"
#: The events a sparse neuron layer pays for, in the order ``StepCounter.events`` stores them.
EVENT_KINDS = ("received", "evaluated", "spike", "checked")


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (45 nm CMOS, Horowitz 2014): a 32-bit float add (AC) and
    multiply-add (MAC)."""

    pj_per_ac: float = 0.9
    pj_per_mac: float = 4.6

    def energy(self, ac: float, mac: float) -> float:
        return ac * self.pj_per_ac + mac * self.pj_per_mac


def counting_copy(snn) -> fx.GraphModule:
    """The graph on the CPU in float64 (exact integer counts up to 2**53), the user's network untouched."""
    return copy.deepcopy(snn.graph_module).to("cpu").double()


def _as_run(snn, p: Phase) -> Phase:
    """A schedule's phase as ``snn``'s neurons run it: signGD neurons may adapt; every other dynamics prices its
    own way (a binary phase)."""
    return p if snn.settings["dynamics"] == "signgd" else Phase(False, p.pow2)


def step_phases(snn, T: int, schedule=None) -> list[Phase]:
    """What the neurons do at each step 1..T (``schedules.phases`` of ``schedule``, the network's own by default)."""
    return [_as_run(snn, p) for p in phases(schedule or snn.schedule, T)]


def late_phase(snn, schedule=None) -> Phase:
    """The phase of every step past an adaptive schedule's ``start`` (every step of the other schedules)."""
    schedule = schedule or snn.schedule
    return _as_run(snn, phase(schedule, (schedule.rule.start if schedule.rule is not None else 0) + 1))


def kinds(snn, phase: Phase | None = None) -> tuple[str, str]:
    """The kind of change the input and the neurons send (``costs/synapses.py``) at a step of ``phase`` (default:
    ``late_phase``): adaptive neurons send real changes (a receiver multiplies by the sender's step), unless the
    steps are powers of two (``adaptive(pow2=True)``): then the multiply is an exponent add, priced as an event's
    AC."""
    phase = phase or late_phase(snn)
    input_kind = EVENT if snn.settings["encoding"] in ("spike", "stochastic") else REAL
    return input_kind, REAL if phase.adapting and not phase.pow2 else EVENT


def ann_costs(snn) -> dict[str, tuple[float, float]]:
    """``{node: (ACs, MACs)}`` of one ANN forward pass per sample: affine nodes by the synapse rules on
    dense values, each neuron layer by its target's cost."""
    gm = counting_copy(snn)
    counter = SynapseCounter(gm, ann=True)
    with torch.no_grad():
        counter.run(torch.ones((1, *snn.input_shape), dtype=torch.float64))
    out = {name: (ac, mac) for name, (ac, mac) in counter.ops.items()}
    for name, shapes in counter.neuron_inputs.items():
        n_out = _output_elements(gm, name, shapes)
        mod = gm.get_submodule(name)
        out[node_of(gm, name)] = oc.target_cost(mod.target, n_out, shapes, mod.params)
    return out


def dense_synaptic_ops(snn) -> float:
    """Synaptic operations per sample of one step where every input element and every neuron sends a
    change: the network's synapse count. No step of the SNN can do more."""
    gm = counting_copy(snn)
    input_kind, neuron_kind = kinds(snn)
    counter = SynapseCounter(gm, input_kind=input_kind)
    x = torch.ones((1, *snn.input_shape), dtype=torch.float64)
    shapes = _neuron_shapes(gm, x).outputs
    counter.neuron_patterns = {n: torch.ones((1, *s), dtype=torch.float64) for n, s in shapes.items()}
    counter.neuron_kinds = dict.fromkeys(shapes, neuron_kind)
    with torch.no_grad():
        counter.run(x)
    return sum(ac + mac for ac, mac in counter.ops.values())


def neuron_work(snn, schedule=None, phase: Phase | None = None) -> dict[str, tuple[float, float]]:
    """``{layer: (ACs, MACs)}`` per sample per step of the SNN's neurons, encoder (``INPUT``) and
    readout (``READOUT``), from ``costs/op_costs.py``: the work done at every step whatever is sent
    (nothing for the sparse neurons: they pay per event, ``event_costs``).
    ``schedule``: the steps to price (whether they are powers of two) instead of the network's own.
    ``phase``: the step's ``schedules.Phase`` (default: ``late_phase``; an ``adaptive(start=)`` schedule's steps up
    to its start are of another, ``neuron_work_steps`` puts them together)."""
    gm = counting_copy(snn)
    x = torch.zeros((1, *snn.input_shape), dtype=torch.float64)
    inputs = _neuron_shapes(gm, x).inputs
    dynamics = snn.settings["dynamics"]
    phase = phase or late_phase(snn, schedule)
    adaptive, pow2 = phase.adapting, phase.pow2
    out: dict[str, tuple[float, float]] = {}
    enc = oc.ENCODER_STEP[snn.settings["encoding"]]
    n_in = x.numel()
    out[INPUT] = (enc[0] * n_in, enc[1] * n_in)
    for name, shapes in inputs.items():
        mod = gm.get_submodule(name)
        n_out = _output_elements(gm, name, shapes)
        received = sum(_numel(s) for s in shapes)
        if dynamics in BAND_DYNAMICS:
            ac, mac = 0, 0
        elif dynamics in SPIKE_DYNAMICS:
            if mod.target == "max":
                ac, mac = oc.target_cost("max", n_out, shapes)
            else:
                step = oc.IF_STEP if dynamics == "if" else oc.SUBGRADIENT_STEP
                ac, mac = _add((0, 0), step, n_out)
                ac, mac = _add((ac, mac), oc.RECEIVE_SUBGRADIENT, received)
        else:
            ac, mac = oc.target_cost(mod.target, n_out, shapes, mod.params)
            ac, mac = _add((ac, mac), oc.SIGNGD_STEP, n_out)
            ac, mac = _add((ac, mac), oc.normalize_cost(mod.target, mod.normalized), n_out)
            if adaptive:
                ac, mac = _add((ac, mac), oc.adaptive_step(phase), n_out)
            ac, mac = _add((ac, mac), oc.receive(oc.RECEIVE_ADAPTIVE if adaptive else oc.RECEIVE_BINARY, pow2),
                           received)
        out[name] = (ac, mac)
    with torch.no_grad():
        n_output = gm(x)[0].numel()
    if dynamics in BAND_DYNAMICS:
        per_output = (0, 0)  # the readout integrates what arrives: event_costs
    else:
        per_output = oc.DECODE_SUBGRADIENT if dynamics in SPIKE_DYNAMICS else oc.receive(
            oc.RECEIVE_ADAPTIVE if adaptive else oc.RECEIVE_BINARY, pow2)
    out[READOUT] = (per_output[0] * n_output, per_output[1] * n_output)
    return out


def neuron_work_steps(snn, T: int, schedule=None) -> dict[str, torch.Tensor]:
    """``{layer: [T, 2]}``: ``neuron_work`` at each step 1..T (ACs, MACs per sample), each step priced as what it
    is (``step_phases``), with the ``analog`` input's encoder paid at the first step only."""
    steps = step_phases(snn, T, schedule)
    work = {phase: neuron_work(snn, schedule, phase) for phase in dict.fromkeys(steps)}
    out = {}
    for name in work[steps[0]]:
        rows = torch.tensor([work[phase][name] for phase in steps], dtype=torch.float64).reshape(T, 2)
        if name == INPUT and snn.settings["encoding"] == "analog":
            rows[1:] = 0
        out[name] = rows
    return out


def event_costs(snn, schedule=None) -> dict[str, dict[str, tuple[float, float]]]:
    """``{layer: {event: (ACs, MACs)}}``: what one event costs a sparse or graded neuron layer (``EVENT_KINDS``:
    an input element that received something, an output whose target is evaluated again, a spike, a
    neuron that compares its gap with the threshold: ``costs.changed.checked_mask``),
    and the readout (``READOUT``: per output element that received something). Empty for the other
    dynamics (their neurons work at every step: ``neuron_work``). ``schedule``: as for ``neuron_work``."""
    dynamics = snn.settings["dynamics"]
    if dynamics not in BAND_DYNAMICS:
        return {}
    gm = counting_copy(snn)
    x = torch.zeros((1, *snn.input_shape), dtype=torch.float64)
    pow2 = is_power_of_two(schedule or snn.schedule)
    # the graded neuron's spike arrives scaled: a receiver adds it; the sparse one's is scaled by eta_t
    received = oc.RECEIVE_GRADED if dynamics == "graded" else oc.receive(oc.RECEIVE_SPARSE, pow2)
    spike = oc.GRADED_SPIKE if dynamics == "graded" else oc.SPARSE_SPIKE
    out = {}
    for name, shapes in _neuron_shapes(gm, x).inputs.items():
        mod = gm.get_submodule(name)
        # The target evaluated for one output element (matmul/einsum: its K products; divide_sqrt: the
        # reciprocal square root of each variance element is charged per output that reads it).
        n_out = _output_elements(gm, name, shapes)
        ac, mac = oc.target_cost(mod.target, n_out, shapes, mod.params)
        ac, mac = ac / n_out, mac / n_out
        ac, mac = _add((ac, mac), oc.SPARSE_EVALUATE, 1)
        ac, mac = _add((ac, mac), oc.normalize_cost(mod.target, mod.normalized), 1)
        out[name] = {"received": received, "evaluated": (ac, mac), "spike": spike, "checked": oc.SPARSE_CHECK}
    out[READOUT] = {"received": received}
    return out


def node_of(gm, target: str) -> str:
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == target:
            return node.name
    return target


def _add(total, per, n):
    return total[0] + per[0] * n, total[1] + per[1] * n


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _output_elements(gm, name, shapes) -> int:
    mod = gm.get_submodule(name)
    with torch.no_grad():
        return mod(*(torch.ones((1, *s), dtype=torch.float64) for s in shapes))[0].numel()


class _Shapes(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.inputs: dict[str, list[tuple[int, ...]]] = {}
        self.outputs: dict[str, tuple[int, ...]] = {}

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        if isinstance(self.submodules[target], SpikingNeuron):
            self.inputs[target] = [tuple(a.shape[1:]) for a in args]
            self.outputs[target] = tuple(out.shape[1:])
        return out


def _neuron_shapes(gm, x) -> _Shapes:
    """Every neuron layer's per-sample input shapes (``.inputs``) and output shape (``.outputs``)."""
    probe = _Shapes(gm)
    with torch.no_grad():
        probe.run(x)
    return probe


class StepCounter:
    """Synaptic ACs and MACs per affine node and step, summed over the samples, from what each neuron
    layer passes downstream: a change is sent where the output moved down (binary signGD: a spike),
    moved at all (the sparse neuron's up and down spikes; adaptive steps) or is non-zero
    (integrate-and-fire: the scaled spike). For the sparse dynamics also its events per layer and step
    (``events[layer]``: ``[T, 4]``, ``EVENT_KINDS``) and the readout elements that received something.

    Use: ``start(x)`` before a batch, ``layer(name, t0, out)`` as the simulator's probe, ``finish_batch()``
    after it."""

    def __init__(self, snn, T: int):
        self.T = T
        self.gm = counting_copy(snn)
        self.snn = snn
        self.input_kind, _ = kinds(snn)
        self.dynamics = snn.settings["dynamics"]
        self.counter = SynapseCounter(self.gm, input_kind=self.input_kind)
        self.nodes = [n.name for n in self.gm.graph.nodes]
        self.ops = torch.zeros(len(self.nodes), T, 2, dtype=torch.float64)
        self.events: dict[str, torch.Tensor] = {}
        if self.dynamics in BAND_DYNAMICS:
            self.events = {name: torch.zeros(T, len(EVENT_KINDS), dtype=torch.float64)
                           for name in [*snn.neurons, READOUT]}
        self._index = {name: i for i, name in enumerate(self.nodes)}
        self.encoder, self.schedule = snn.encoder, snn.schedule
        # neurons whose estimates do not start at 0 (convert(start=...)): their output before step 1
        self.starts = {name: mod for name, mod in snn.neurons.items() if not mod.starts_at_zero}
        self.windows = snn.windows() or {}  # convert(window=): the steps each neuron layer works at

    def start(self, x: torch.Tensor, schedule=None, reset: bool = False) -> None:
        """Before a batch (``schedule``: the steps of the run, when not the network's own; ``reset``:
        forget what earlier runs counted)."""
        if reset:
            self.ops.zero_()
            for ev in self.events.values():
                ev.zero_()
        self.x = x.detach().to("cpu", torch.float64)
        self.enc_state = self.encoder.init_state(self.x)
        self.etas = (schedule or self.schedule).etas(1, self.T + 1, dtype=torch.float64, device="cpu")
        # per step: whether the neurons adapt (send every move, real unless powers of two) or are binary
        self.phases = step_phases(self.snn, self.T, schedule)
        self.adapting = torch.tensor([p.adapting for p in self.phases])
        self.threshold_changed = threshold_changes(self.etas)
        self.spiked: dict[str, torch.Tensor] = {}  # the sparse neurons that spiked at the step before
        self.prev_input = torch.zeros_like(self.x)
        self.prev: dict[str, torch.Tensor] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.t0 = None

    def layer(self, name: str, t0: int, out: torch.Tensor) -> None:
        if self.t0 is not None and t0 != self.t0:
            self._flush()
        self.t0 = t0
        if name in self.starts and name not in self.prev:  # as the engine computes it, in its dtype
            self.prev[name] = self.starts[name].initial_output(out[0].detach()).to("cpu", torch.float64)
        out = out.detach().to("cpu", torch.float64)
        if self.dynamics in SPIKE_DYNAMICS:
            sent = out != 0
        else:
            prev = self.prev.get(name)
            if prev is None:  # what the neuron passed on before its first step: 0
                prev = torch.zeros_like(out[0])
            before = torch.cat([prev.unsqueeze(0), out[:-1]])
            if self.dynamics == "signgd":  # binary: its down steps; adaptive: every move
                now = self.adapting[t0 - 1:t0 - 1 + out.shape[0]].reshape(-1, *[1] * (out.dim() - 1))
                sent = torch.where(now, out != before, out < before)
            else:
                sent = out != before
            self.prev[name] = out[-1].clone()
        self.pending[name] = sent

    def finish_batch(self) -> None:
        if self.pending:
            self._flush()

    def _flush(self):
        steps = next(iter(self.pending.values())).shape[0]
        t0 = self.t0
        e = self.encoder.run(self.enc_state, self.x, self.etas[t0 - 1:t0 - 1 + steps], t0)
        before = torch.cat([self.prev_input.unsqueeze(0), e[:-1]])
        sent_input = e < before if self.input_kind == EVENT else e != before
        self.prev_input = e[-1].clone()
        with torch.no_grad():
            for k in range(steps):
                patterns = {n: s[k].to(torch.float64) for n, s in self.pending.items()}
                t = t0 - 1 + k
                self.counter.neuron_patterns = patterns
                self.counter.neuron_kinds = dict.fromkeys(self.snn.neurons, kinds(self.snn, self.phases[t])[1])
                readout = self.counter.run(sent_input[k].to(torch.float64))
                for node, (ac, mac) in self.counter.ops.items():
                    row = self.ops[self._index[node], t]
                    row[0] += ac
                    row[1] += mac
                if self.events:
                    for name, (received, evaluated) in self.counter.neuron_events.items():
                        checked = checked_mask(evaluated, self.spiked.get(name), bool(self.threshold_changed[t]))
                        evaluated, checked = windowed(evaluated, checked, t + 1, self.windows.get(name))
                        self.spiked[name] = patterns[name]
                        self.events[name][t] += torch.tensor(
                            [received, float(evaluated.sum(dtype=torch.float64)), float(patterns[name].sum()),
                             float(checked.sum(dtype=torch.float64))], dtype=torch.float64)
                    self.events[READOUT][t, 0] += float(readout.sum(dtype=torch.float64))
        self.pending = {}
        self.t0 = None


def ann_energy(snn, model: EnergyModel = EnergyModel()) -> float:
    """The ANN's energy per sample (pJ), by the same rules."""
    costs = ann_costs(snn).values()
    return model.energy(sum(a for a, _ in costs), sum(m for _, m in costs))


def energy_per_sample(snn, counter: StepCounter, samples: int, model: EnergyModel = EnergyModel(),
                      schedule=None) -> torch.Tensor:
    """``[T]``: the SNN's energy per sample (pJ) after 1..T steps, from a ``StepCounter`` that saw
    ``samples`` samples: synaptic work, neuron work every step, and the sparse neurons' events.
    ``schedule``: the steps the counter's run used, when not the network's own."""
    T = counter.T
    syn = counter.ops.sum(0) / max(samples, 1)  # [T, 2]
    total = model.pj_per_ac * syn[:, 0] + model.pj_per_mac * syn[:, 1]
    for rows in neuron_work_steps(snn, T, schedule).values():
        total = total + model.pj_per_ac * rows[:, 0] + model.pj_per_mac * rows[:, 1]
    for name, costs in event_costs(snn, schedule).items():
        ev = counter.events[name] / max(samples, 1)
        for k, what in enumerate(EVENT_KINDS):
            if what in costs:
                total = total + model.energy(*costs[what]) * ev[:, k]
    return total.cumsum(0)
