"""Readable, unique names for a network's neuron layers: the model's module path and what the neuron is.

The converter names neuron modules after graph nodes (``neurons.features_6_h0``), which a reader
cannot map back to the model. Conversion records where each neuron came from
(``signgd.graph.provenance``, saved with the network), and ``layer_names`` makes labels from it:

- ``features.1 (relu)``: a ReLU module or function traced inside ``features.1``;
- ``features.6 (max, rows)``: the row maxima of the max pooling ``features.6`` (then ``columns``);
- ``blocks.0.norm1 (square, LayerNorm)``, ``blocks.0.attn (exp, attention softmax)``: the neurons a
  decomposition made;
- ``after fc (relu)``: a function called in the model's own ``forward``, after module ``fc``;
- ``model[2] (relu)``: the child ``2`` of a model that is an ``nn.Sequential``;
- a label that would repeat (a module called twice, a max tree of several levels) is numbered in
  graph order: ``layer1.0.relu (relu) #1``, ``#2``.

A network saved before origins were recorded gets its neuron's node name and target instead.
"""
from __future__ import annotations

from ..network import SpikingNetwork

__all__ = ["layer_names", "layer_label"]


def _readable(path: str) -> str:
    """A module path as a reader finds it: a top-level ``nn.Sequential``'s child ``"6"`` is ``model[6]``."""
    head, dot, rest = path.partition(".")
    return f"model[{head}]{dot}{rest}" if head.isdigit() else path


def _base(node, target: str) -> str:
    origin = node.meta.get("signgd_origin")
    if not isinstance(origin, dict):
        return f"{node.target.removeprefix('neurons.')} ({target})"
    module, after, part = origin.get("module", ""), origin.get("after", ""), origin.get("part", "")
    where = _readable(module) if module else (f"after {_readable(after)}" if after else "forward")
    return f"{where} ({target}{', ' + part if part else ''})"


def layer_names(snn: SpikingNetwork) -> dict[str, str]:
    """Neuron layer -> readable unique label, in graph order. Keys are the names ``snn.neurons`` uses
    (the neuron modules' paths, ``neurons.<node>``: the keys of the report's per-layer statistics)."""
    neurons = snn.neurons
    nodes = {n.target: n for n in snn.graph_module.graph.nodes if n.op == "call_module" and n.target in neurons}
    bases = {name: _base(nodes[name], neurons[name].target) for name in neurons}
    counts: dict[str, int] = {}
    for base in bases.values():
        counts[base] = counts.get(base, 0) + 1
    seen: dict[str, int] = {}
    labels = {}
    for name, base in bases.items():
        if counts[base] > 1:
            seen[base] = seen.get(base, 0) + 1
            base = f"{base} #{seen[base]}"
        labels[name] = base
    return labels


def layer_label(layer: dict) -> str:
    """A report layer's label (``report.json``'s ``layers[i]``); a report written before labels
    existed has its node name."""
    return layer.get("label") or layer["name"].removeprefix("neurons.")
