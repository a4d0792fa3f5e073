"""The SNN's operations and energy, counted on the events it sends, against the ANN's by the same rules.

The cost model (``docs/energy.md`` has it with examples):

- **Synaptic work, node by node** (``report/synapses.py``): in the event-driven execution every affine
  node receives the change of its input at each step; for every element that changed it does one
  operation per output it reaches through a non-zero weight. Neurons send a change only when they
  spike (the binary signGD neuron: its "down" steps; its "up" drift is a constant the receiver adds,
  priced below), at every step when their step size is adaptive (each receiver multiplies by the
  sender's gain), the integrate-and-fire neuron when it fires. The input sends its change: every
  element at every step for the ``float`` encoding, once for ``analog``, its spikes for ``spike``
  and ``stochastic``.
- **Accumulate or multiply**: an event (a spike times a static scale) costs an AC per synapse, a
  real-valued change (float input, adaptive gains, anything a sum produced) a MAC; additions are ACs.
- **Neuron work** (``report/op_costs.py``): per neuron per step, evaluating its target, comparing,
  moving its estimate, normalizing, the adaptive gain, and each input element's integration (the
  receiver's per-step scaling by ``eta_t``); the encoder's and the readout's work per element.
- **The ANN**: the same graph and rules on dense, real values: weighted ops are MACs, sums, biases
  and comparisons ACs, each nonlinearity priced from the same table.
- **Energy**: ``ACs x E_AC + MACs x E_MAC``, 0.9 pJ and 4.6 pJ by default (45 nm, Horowitz 2014;
  both are ``EnergyModel`` fields). Memory traffic is not counted, on either side.

``EnergyProbe`` counts on a ``runner.run``: it reads each neuron layer's output sequence, recovers
which neurons sent a change at each step, and runs ``SynapseCounter`` once per step.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx

from ..graph.provenance import module_path
from ..neurons import SpikingNeuron
from ..runner import Probe
from . import op_costs as oc
from .synapses import EVENT, REAL, SynapseCounter

__all__ = ["EnergyModel", "EnergyProbe", "ann_costs", "neuron_work", "dense_synaptic_ops", "energy_section",
           "INPUT", "READOUT"]

INPUT, READOUT = "input", "readout"
# Dynamics whose neurons pass on their spikes times a static size (0 when silent): a change is a spike.
_SPIKE_DYNAMICS = ("subgradient", "if")


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (45 nm CMOS, Horowitz 2014): a 32-bit float add (AC) and
    multiply-add (MAC)."""

    pj_per_ac: float = 0.9
    pj_per_mac: float = 4.6

    def energy(self, ac: float, mac: float) -> float:
        return ac * self.pj_per_ac + mac * self.pj_per_mac


def _counting_copy(snn) -> fx.GraphModule:
    """The graph on the CPU in float64 (exact integer counts up to 2**53), the user's network untouched."""
    return copy.deepcopy(snn.graph_module).to("cpu").double()


def _kinds(snn) -> tuple[str, str]:
    """The kind of change the input and the neurons send (``report/synapses.py``)."""
    input_kind = EVENT if snn.settings["encoding"] in ("spike", "stochastic") else REAL
    adaptive = snn.settings["dynamics"] == "signgd" and snn.schedule.rule is not None
    return input_kind, REAL if adaptive else EVENT


def ann_costs(snn) -> dict[str, tuple[float, float]]:
    """``{node: (ACs, MACs)}`` of one ANN forward pass per sample: affine nodes by the synapse rules on
    dense values, each neuron layer by its target's cost."""
    gm = _counting_copy(snn)
    counter = SynapseCounter(gm, ann=True)
    with torch.no_grad():
        counter.run(torch.ones((1, *snn.input_shape), dtype=torch.float64))
    out = {name: (ac, mac) for name, (ac, mac) in counter.ops.items()}
    for name, shapes in counter.neuron_inputs.items():
        n_out = _output_elements(gm, name, shapes)
        mod = gm.get_submodule(name)
        out[_node_of(gm, name)] = oc.target_cost(mod.target, n_out, shapes, mod.params)
    return out


def dense_synaptic_ops(snn) -> float:
    """Synaptic operations per sample of one step where every input element and every neuron sends a
    change: the network's synapse count. No step of the SNN can do more."""
    gm = _counting_copy(snn)
    input_kind, neuron_kind = _kinds(snn)
    counter = SynapseCounter(gm, input_kind=input_kind)
    x = torch.ones((1, *snn.input_shape), dtype=torch.float64)
    shapes = _neuron_shapes(gm, x).outputs
    counter.neuron_patterns = {n: torch.ones((1, *s), dtype=torch.float64) for n, s in shapes.items()}
    counter.neuron_kinds = dict.fromkeys(shapes, neuron_kind)
    with torch.no_grad():
        counter.run(x)
    return sum(ac + mac for ac, mac in counter.ops.values())


def neuron_work(snn) -> dict[str, tuple[float, float]]:
    """``{layer: (ACs, MACs)}`` per sample per step of the SNN's neurons, encoder (``INPUT``) and
    readout (``READOUT``), from ``report/op_costs.py``."""
    gm = _counting_copy(snn)
    x = torch.zeros((1, *snn.input_shape), dtype=torch.float64)
    inputs = _neuron_shapes(gm, x).inputs
    dynamics = snn.settings["dynamics"]
    adaptive = dynamics == "signgd" and snn.schedule.rule is not None
    out: dict[str, tuple[float, float]] = {}
    enc = oc.ENCODER_STEP[snn.settings["encoding"]]
    n_in = x.numel()
    out[INPUT] = (enc[0] * n_in, enc[1] * n_in)
    for name, shapes in inputs.items():
        mod = gm.get_submodule(name)
        n_out = _output_elements(gm, name, shapes)
        received = sum(_numel(s) for s in shapes)
        if dynamics in _SPIKE_DYNAMICS:
            if mod.target == "max":
                ac, mac = oc.target_cost("max", n_out, shapes)
            else:
                step = oc.IF_STEP if dynamics == "if" else oc.SUBGRADIENT_STEP
                ac, mac = _add((0, 0), step, n_out)
                ac, mac = _add((ac, mac), oc.RECEIVE_SUBGRADIENT, received)
        else:
            ac, mac = oc.target_cost(mod.target, n_out, shapes, mod.params)
            ac, mac = _add((ac, mac), oc.SIGNGD_STEP, n_out)
            if mod.normalized:
                ac, mac = _add((ac, mac), oc.NORMALIZE, n_out)
            if adaptive:
                ac, mac = _add((ac, mac), oc.ADAPTIVE_STEP, n_out)
            ac, mac = _add((ac, mac), oc.RECEIVE_ADAPTIVE if adaptive else oc.RECEIVE_BINARY, received)
        out[name] = (ac, mac)
    with torch.no_grad():
        n_output = gm(x)[0].numel()
    per_output = oc.DECODE_SUBGRADIENT if dynamics in _SPIKE_DYNAMICS else (
        oc.RECEIVE_ADAPTIVE if adaptive else oc.RECEIVE_BINARY)
    out[READOUT] = (per_output[0] * n_output, per_output[1] * n_output)
    return out


def _synapse_label(node: fx.Node, gm: fx.GraphModule) -> str:
    """An affine node as the model names it: ``features.0 (Conv2d)``, ``blocks.0.norm1 (mean)``."""
    if node.op == "call_module":
        path = node.target
        what = type(gm.get_submodule(path)).__name__
    else:
        path = module_path(node)
        what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.name)
    path = f"model[{path.partition('.')[0]}]{path[len(path.partition('.')[0]):]}" if path[:1].isdigit() else path
    return f"{path or 'forward'} ({what})"


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


def _node_of(gm, target: str) -> str:
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == target:
            return node.name
    return target


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


class EnergyProbe(Probe):
    """Synaptic ACs and MACs per affine node and step, summed over the samples, from what each neuron
    layer passes downstream: a change is sent where the output moved down (binary signGD: a spike),
    moved at all (adaptive steps) or is non-zero (integrate-and-fire: the scaled spike)."""

    def __init__(self, snn, T: int):
        self.T = T
        self.gm = _counting_copy(snn)
        self.input_kind, self.neuron_kind = _kinds(snn)
        self.dynamics = snn.settings["dynamics"]
        self.counter = SynapseCounter(self.gm, input_kind=self.input_kind)
        self.counter.neuron_kinds = dict.fromkeys(snn.neurons, self.neuron_kind)
        self.nodes = [n.name for n in self.gm.graph.nodes]
        self.ops = torch.zeros(len(self.nodes), T, 2, dtype=torch.float64)
        self._index = {name: i for i, name in enumerate(self.nodes)}
        self.encoder, self.schedule = snn.encoder, snn.schedule

    def before_batch(self, snn, x):
        self.x = x.detach().to("cpu", torch.float64)
        self.enc_state = self.encoder.init_state(self.x)
        self.etas = self.schedule.etas(1, self.T + 1, dtype=torch.float64, device="cpu")
        self.prev_input = torch.zeros_like(self.x)
        self.prev: dict[str, torch.Tensor] = {}
        self.pending: dict[str, torch.Tensor] = {}
        self.t0 = None

    def layer(self, name, t0, out):
        if self.t0 is not None and t0 != self.t0:
            self._flush()
        self.t0 = t0
        out = out.detach().to("cpu", torch.float64)
        if self.dynamics in _SPIKE_DYNAMICS:
            sent = out != 0
        else:
            prev = self.prev.get(name)
            if prev is None:
                prev = torch.zeros_like(out[0])
            before = torch.cat([prev.unsqueeze(0), out[:-1]])
            sent = out != before if self.neuron_kind == REAL else out < before
            self.prev[name] = out[-1].clone()
        self.pending[name] = sent

    def after_batch(self, snn, x, result):
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
                self.counter.neuron_patterns = {n: s[k].to(torch.float64) for n, s in self.pending.items()}
                self.counter.run(sent_input[k].to(torch.float64))
                for node, (ac, mac) in self.counter.ops.items():
                    row = self.ops[self._index[node], t0 - 1 + k]
                    row[0] += ac
                    row[1] += mac
        self.pending = {}
        self.t0 = None

    def totals(self):
        return {"synaptic_ops": self.ops}, {}

    def finish(self, totals):
        self.reduced = totals["synaptic_ops"]


def energy_section(snn, steps: list[int], synaptic: torch.Tensor, nodes: list[str], samples: int,
                   snn_accuracy: list[float], ann_accuracy: float, labels: dict[str, str] | None = None,
                   model: EnergyModel = EnergyModel()) -> dict:
    """The report's ``energy`` section: per T and per sample the SNN's synaptic ACs and MACs, its
    neuron operations and energy, the ANN's by the same rules, the split per layer, and the headline
    (the smallest T within 1 point of the ANN's accuracy and the energy ratio there)."""
    labels = labels or {}
    per_sample = synaptic / max(samples, 1)  # [nodes, T, 2]
    cumulative = per_sample.cumsum(1)
    work = neuron_work(snn)
    ann = ann_costs(snn)
    gm = snn.graph_module
    graph_nodes = {n.name: n for n in gm.graph.nodes}
    layers = []
    neuron_nodes = {_node_of(gm, n) for n in snn.neurons}
    for i, node in enumerate(nodes):
        if node in neuron_nodes or (float(cumulative[i, -1].sum()) == 0 and node not in ann):
            continue
        layers.append({"name": node, "label": _synapse_label(graph_nodes[node], gm),
                       "kind": "synapses", "ac": [float(cumulative[i, t - 1, 0]) for t in steps],
                       "mac": [float(cumulative[i, t - 1, 1]) for t in steps],
                       "ann_ac": ann.get(node, (0.0, 0.0))[0], "ann_mac": ann.get(node, (0.0, 0.0))[1]})
    for name, (ac, mac) in work.items():
        node = _node_of(gm, name) if name not in (INPUT, READOUT) else name
        first = 1 if (name == INPUT and snn.settings["encoding"] == "analog") else None
        layers.append({"name": node, "label": labels.get(name, name),
                       "kind": "neurons" if name not in (INPUT, READOUT) else name,
                       "ac": [ac * (first or t) for t in steps], "mac": [mac * (first or t) for t in steps],
                       "ann_ac": ann.get(node, (0.0, 0.0))[0] if name not in (INPUT, READOUT) else 0.0,
                       "ann_mac": ann.get(node, (0.0, 0.0))[1] if name not in (INPUT, READOUT) else 0.0})
    syn_ac = [float(cumulative[:, t - 1, 0].sum()) for t in steps]
    syn_mac = [float(cumulative[:, t - 1, 1].sum()) for t in steps]
    n_ac = [sum(row["ac"][j] for row in layers if row["kind"] != "synapses") for j in range(len(steps))]
    n_mac = [sum(row["mac"][j] for row in layers if row["kind"] != "synapses") for j in range(len(steps))]
    ann_syn_ac = sum(ac for node, (ac, _) in ann.items() if node not in neuron_nodes)
    ann_syn_mac = sum(mac for node, (_, mac) in ann.items() if node not in neuron_nodes)
    ann_n_ac = sum(ac for node, (ac, _) in ann.items() if node in neuron_nodes)
    ann_n_mac = sum(mac for node, (_, mac) in ann.items() if node in neuron_nodes)
    ann_energy = model.energy(ann_syn_ac + ann_n_ac, ann_syn_mac + ann_n_mac)
    energy = [model.energy(a + na, m + nm) for a, m, na, nm in zip(syn_ac, syn_mac, n_ac, n_mac)]
    ratio = [e / ann_energy if ann_energy else None for e in energy]
    per_step = (per_sample[:, :, 0] + per_sample[:, :, 1]).sum(0)
    headline = None
    for j, t in enumerate(steps):
        if snn_accuracy[j] >= ann_accuracy - 0.01:
            headline = {"T": t, "snn_accuracy": snn_accuracy[j], "energy_ratio_to_ann": ratio[j]}
            break
    return {
        "rules": "signgd.report.energy (docs/energy.md): synaptic ops node by node on the changes sent "
                 "(events: AC per synapse; real-valued changes: MAC), neuron work per step from "
                 "signgd.report.op_costs, the ANN by the same rules; energy = ACs x pJ/AC + MACs x pJ/MAC; "
                 "memory traffic not counted.",
        "pj_per_ac": model.pj_per_ac, "pj_per_mac": model.pj_per_mac,
        "ann": {"ac": ann_syn_ac, "mac": ann_syn_mac, "neuron_ac": ann_n_ac, "neuron_mac": ann_n_mac,
                "neuron_ops": ann_n_ac + ann_n_mac},
        "ann_energy_pj": ann_energy,
        "snn": {"ac": syn_ac, "mac": syn_mac, "neuron_ac": n_ac, "neuron_mac": n_mac,
                "neuron_ops": [a + m for a, m in zip(n_ac, n_mac)]},
        "energy_pj": energy,
        "energy_ratio_to_ann": ratio,
        "dense_synaptic_ops_per_step": dense_synaptic_ops(snn),
        "max_synaptic_ops_per_step": float(per_step.max()) if per_step.numel() else 0.0,
        "headline": headline,
        "layers": layers,
    }
