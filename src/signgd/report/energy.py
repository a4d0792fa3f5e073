"""The report's energy section: the SNN's operations and energy, counted on the events it sends
(``signgd.costs``: the cost model), against the ANN's by the same rules.

``EnergyProbe`` counts on a ``runner.run`` (``costs.StepCounter`` on the run loop); ``energy_section`` turns
its counts into the report's per-T totals, the split per layer and the headline.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from ..costs import (
    EVENT_KINDS,
    INPUT,
    READOUT,
    EnergyModel,
    StepCounter,
    ann_costs,
    dense_synaptic_ops,
    event_costs,
    neuron_work,
    neuron_work_steps,
    node_of,
)
from ..graph.provenance import module_path
from ..runner import Probe

__all__ = ["EnergyModel", "EnergyProbe", "ann_costs", "neuron_work", "dense_synaptic_ops", "energy_section",
           "INPUT", "READOUT"]


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


class EnergyProbe(Probe):
    """Synaptic ACs and MACs per affine node and step (and the sparse neurons' events), summed over the
    samples of a ``runner.run``: ``costs.StepCounter`` on the run loop."""

    def __init__(self, snn, T: int):
        self.steps = StepCounter(snn, T)
        self.nodes = self.steps.nodes

    def before_batch(self, snn, x):
        self.steps.start(x)

    def layer(self, name, t0, out):
        self.steps.layer(name, t0, out)

    def after_batch(self, snn, x, result):
        self.steps.finish_batch()

    def totals(self):
        sums = {"synaptic_ops": self.steps.ops}
        sums.update({f"events:{name}": ev for name, ev in self.steps.events.items()})
        return sums, {}

    def finish(self, totals):
        self.reduced = totals["synaptic_ops"]
        self.events = {key.partition(":")[2]: v for key, v in totals.items() if key.startswith("events:")}


def energy_section(snn, steps: list[int], synaptic: torch.Tensor, nodes: list[str], samples: int,
                   snn_accuracy: list[float], ann_accuracy: float, labels: dict[str, str] | None = None,
                   model: EnergyModel = EnergyModel(), events: dict[str, torch.Tensor] | None = None) -> dict:
    """The report's ``energy`` section: per T and per sample the SNN's synaptic ACs and MACs, its
    neuron operations and energy, the ANN's by the same rules, the split per layer, and the headline
    (the smallest T within 1 point of the ANN's accuracy and the energy ratio there). ``events``: the
    sparse neurons' events per layer (``EnergyProbe.events``), priced by ``costs.event_costs``."""
    labels = labels or {}
    unit = event_costs(snn)
    if unit and not events:
        raise ValueError("the sparse dynamics' energy needs its neurons' events (EnergyProbe.events)")
    cum_events = {name: ev / max(samples, 1) for name, ev in (events or {}).items()}
    cum_events = {name: ev.cumsum(0) for name, ev in cum_events.items()}
    per_sample = synaptic / max(samples, 1)  # [nodes, T, 2]
    cumulative = per_sample.cumsum(1)
    work = neuron_work_steps(snn, per_sample.shape[1])
    ann = ann_costs(snn)
    gm = snn.graph_module
    graph_nodes = {n.name: n for n in gm.graph.nodes}
    layers = []
    neuron_nodes = {node_of(gm, n) for n in snn.neurons}
    for i, node in enumerate(nodes):
        if node in neuron_nodes or (float(cumulative[i, -1].sum()) == 0 and node not in ann):
            continue
        layers.append({"name": node, "label": _synapse_label(graph_nodes[node], gm),
                       "kind": "synapses", "ac": [float(cumulative[i, t - 1, 0]) for t in steps],
                       "mac": [float(cumulative[i, t - 1, 1]) for t in steps],
                       "ann_ac": ann.get(node, (0.0, 0.0))[0], "ann_mac": ann.get(node, (0.0, 0.0))[1]})
    for name, rows in work.items():
        node = node_of(gm, name) if name not in (INPUT, READOUT) else name
        rows = rows.cumsum(0)
        ac_t, mac_t = [float(rows[t - 1, 0]) for t in steps], [float(rows[t - 1, 1]) for t in steps]
        for k, what in enumerate(EVENT_KINDS):
            if what in unit.get(name, {}):
                e_ac, e_mac = unit[name][what]
                ac_t = [a + e_ac * float(cum_events[name][t - 1, k]) for a, t in zip(ac_t, steps)]
                mac_t = [m + e_mac * float(cum_events[name][t - 1, k]) for m, t in zip(mac_t, steps)]
        layers.append({"name": node, "label": labels.get(name, name),
                       "kind": "neurons" if name not in (INPUT, READOUT) else name,
                       "ac": ac_t, "mac": mac_t,
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
        "rules": "signgd.costs (docs/energy.md): synaptic ops node by node on the changes sent "
                 "(events: AC per synapse; real-valued changes: MAC), neuron work per step (sparse neurons: "
                 "per event) from signgd.costs.op_costs, the ANN by the same rules; "
                 "energy = ACs x pJ/AC + MACs x pJ/MAC; memory traffic not counted.",
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
