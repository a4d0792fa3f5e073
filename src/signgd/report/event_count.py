"""The literal operation count: the event-driven simulation run step by step, counting what each affine
node receives. It checks the report's fast count (``signgd.report.energy``), which follows the same
changes through the graph on 0/1 patterns (``signgd.costs``): both must give the same integers.

Nothing here reuses the fast count's per-op rules for fan-out. For each affine node and each of its
input-dependent operands the Jacobian of the node (its linear part, ``f(v) - f(0)`` with the other
operands at 0) is computed once with ``torch.func.jacfwd``; an input element's synapses are the non-zero
entries of its column. At each step the elements that changed are read off the event-driven
simulation itself (``signgd.event_driven``): the neurons whose output moved down (binary signGD: the
spike) or moved at all (adaptive steps, the sparse neuron's up and down spikes, the graded neuron's
power-of-two spikes), the input elements
whose encoding changed (moved down for the binary encodings), and downstream of them every output
element that a changed input reaches.

Pricing follows the cost model of ``docs/energy.md``: a weighted op costs an AC per synapse on an event
(a spike times a static scale, possibly reshaped or scaled by a constant; a power-of-two adaptive step or
graded spike too, its multiply being an exponent add) and a MAC on a real-valued change; additions are ACs; a mean
or average pool adds a MAC per output element that changed; a scaling by a constant is free on events
and a MAC per changed element otherwise; moving data is free.
For the sparse dynamics it also counts each neuron layer's events: the input elements that received
something (read off the changes, as above), the spikes (the neurons whose estimate moved), the outputs
evaluated again (those with a changed input) and the neurons that check their gap (all of them where the
threshold changed, else those evaluated again or that spiked at the step before): ``costs.changed``, the
one rule shared.
Slow (a Jacobian per node): for checking small networks.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..costs.changed import changed_mask, checked_mask, threshold_changes, windowed
from ..dynamics import BAND_DYNAMICS
from ..event_driven import simulate_spikes
from ..graph import spellings as sp
from ..graph.deps import depends_on_input
from ..neurons import SpikingNeuron
from ..schedules import phases

__all__ = ["count_operations", "EventCounter"]

_WEIGHTED = "weighted"
_ADD = "add"
_SCALE = "scale"
_SUM = "sum"
_AVERAGE = "average"
_MOVE = "move"


def _category(node: fx.Node, modules: dict, dependent: set) -> str:
    """What an affine node does with its input changes (``docs/energy.md``'s rules)."""
    t = node.target
    if node.op == "call_module":
        mod = modules[t]
        if isinstance(mod, sp.CONV_MODULES + sp.LINEAR_MODULES):
            return _WEIGHTED
        if isinstance(mod, sp.ANY_BATCH_NORM):
            return _SCALE
        if isinstance(mod, sp.AVG_POOL_MODULES + sp.ADAPTIVE_AVG_POOL_MODULES):
            return _AVERAGE
        if isinstance(mod, nn.Fold):
            return _SUM
        return _MOVE
    n_dep = sum(1 for a in node.all_input_nodes if a in dependent)
    if t in sp.CONV_FUNCTIONS or t in sp.LINEAR_FUNCTIONS or t in sp.MATMUL_FUNCTIONS | sp.MATMUL_METHODS \
            or t in sp.BATCHED_MATMUL_FUNCTIONS or t in sp.EINSUM_FUNCTIONS:
        return _WEIGHTED
    if t in sp.ADD_FUNCTIONS | sp.SUBTRACT_FUNCTIONS | sp.ADD_METHODS | sp.SUBTRACT_METHODS:
        return _ADD if n_dep > 1 else _MOVE
    if t in sp.MULTIPLY_FUNCTIONS | sp.DIVIDE_FUNCTIONS | sp.NEGATE_FUNCTIONS | sp.MULTIPLY_METHODS \
            | sp.DIVIDE_METHODS | sp.NEGATE_METHODS | {operator.pos}:
        return _SCALE
    if t in sp.MEAN_FUNCTIONS | sp.MEAN_METHODS or t in sp.AVG_POOL_FUNCTIONS | sp.ADAPTIVE_AVG_POOL_FUNCTIONS:
        return _AVERAGE
    if t is torch.addcmul:  # a scaling by constants (constant input), or a pass-through (constant factors)
        return _SCALE if node.args[0] not in dependent else _MOVE
    if t in sp.SUM_FUNCTIONS | sp.SUM_METHODS or t is F.fold:
        return _SUM
    return _MOVE


def _call(interp, node: fx.Node, replace: dict):
    """The node's op on its inputs from the interpreter's env, with ``replace[input node]`` instead."""
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: replace.get(n, interp.env.get(n)))
    if node.op == "call_module":
        return interp.submodules[node.target](*args, **kwargs)
    if node.op == "call_method":
        name = node.target
        if sp.is_inplace(name):
            name = name[:-1]
        return getattr(args[0], name)(*args[1:], **kwargs)
    fn = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
          operator.itruediv: operator.truediv}.get(node.target, node.target)
    return fn(*args, **kwargs)


class EventCounter:
    """The observer of ``simulate_spikes``: which elements changed (``changed``, ``event``: whether a change
    is a spike of static size) and the operations per node and step (``ops``)."""

    def __init__(self, snn, T: int):
        gm = snn.graph_module
        self.dependent = depends_on_input(gm)
        self.modules = dict(gm.named_modules())
        self.input_event = snn.settings["encoding"] in ("spike", "stochastic")
        # per step: whether the neurons adapt (send every move) or are binary (their spikes), and whether the
        # steps are powers of two (a receiver scales by the sender's step with an exponent add: an AC)
        self.phases = phases(snn.schedule, T)
        self.sparse = snn.settings["dynamics"] in BAND_DYNAMICS
        # sparse: per neuron layer, [T, 4] received input elements, outputs evaluated, spikes, checks
        self.events = {name: torch.zeros(T, 4, dtype=torch.float64) for name, m in self.modules.items()
                       if isinstance(m, SpikingNeuron)} if self.sparse else {}
        self.threshold_changed = threshold_changes(snn.schedule.etas(1, T + 1, dtype=torch.float64, device="cpu"))
        self.windows = snn.windows() or {}  # convert(window=): the steps each neuron layer works at
        self.names = [n.name for n in gm.graph.nodes]
        self.ops = {name: torch.zeros(T, 2, dtype=torch.float64) for name in self.names}
        self.changed: dict[fx.Node, object] = {}
        self.event: dict[fx.Node, bool] = {}
        self.jacobians: dict[tuple[fx.Node, fx.Node], torch.Tensor] = {}
        self.prev_input = None
        self.t = 0

    def __call__(self, interp, node: fx.Node, value) -> None:
        if node.op == "placeholder":
            if not isinstance(value, torch.Tensor):  # a forward option fixed at its default
                return
            self.t += 1
            delta = value
            self.changed[node] = (delta < 0) if self.input_event else (delta != 0)
            self.event[node] = self.input_event
            return
        if node.op in ("output", "get_attr") or node not in self.dependent:
            return
        if node.op == "call_module" and isinstance(self.modules[node.target], SpikingNeuron):
            spiked_before = self.changed.get(node)  # this layer's spikes at the step before
            phase = self.phases[self.t - 1]
            self.changed[node] = (value != 0) if phase.adapting or self.sparse else (value < 0)
            self.event[node] = not phase.adapting or phase.pow2
            if self.sparse:
                received = [self.changed[a].to(torch.float64) if a in self.changed else
                            torch.zeros_like(interp.env[a], dtype=torch.float64) for a in node.args]
                row = self.events[node.target][self.t - 1]
                row[0] += sum(float(r.sum()) for r in received)
                evaluated = changed_mask(self.modules[node.target], received)
                checked = checked_mask(evaluated, spiked_before, bool(self.threshold_changed[self.t - 1]))
                evaluated, checked = windowed(evaluated, checked, self.t, self.windows.get(node.target))
                row[1] += float(evaluated.sum(dtype=torch.float64))
                row[2] += float(self.changed[node].sum())
                row[3] += float(checked.sum(dtype=torch.float64))
            return
        self._affine(interp, node, value)

    def _affine(self, interp, node, value) -> None:
        deps = list(dict.fromkeys(a for a in node.all_input_nodes if a in self.dependent))
        category = _category(node, self.modules, self.dependent)
        event = all(self.event[d] for d in deps)
        if not isinstance(value, torch.Tensor) or any(not isinstance(self.changed[d], torch.Tensor) for d in deps):
            # Tuples (split, chunk, unbind, getitem of them): data moves, the pattern moves with it.
            if category != _MOVE:
                raise ValueError(f"the literal count expects only data movement around tuples: {node.format_node()}")
            patterns = {d: _as_float(self.changed[d]) for d in deps}
            self.changed[node] = _as_bool(_call(interp, node, patterns))
            self.event[node] = event
            return
        out = torch.zeros(value.numel(), dtype=torch.float64)
        synapses = 0.0
        for d in deps:
            jac = self._jacobian(interp, node, d, value)  # [out elements, in elements], 0/1
            changed = self.changed[d].reshape(-1).to(torch.float64)
            synapses += float(jac.sum(0) @ changed)
            out += jac @ changed
        changed_out = (out > 0).reshape(value.shape)
        self.changed[node] = changed_out
        n_out = float(changed_out.sum())
        ac = mac = 0.0
        if category == _WEIGHTED:
            ac, mac = (synapses, 0.0) if event else (0.0, synapses)
        elif category in (_ADD, _SUM):
            ac = synapses
        elif category == _AVERAGE:
            ac, mac = synapses, n_out
        elif category == _SCALE and not event:
            mac = n_out
        self.event[node] = event and category in (_SCALE, _MOVE)
        row = self.ops[node.name][self.t - 1]
        row[0] += ac
        row[1] += mac

    def _jacobian(self, interp, node, d, value) -> torch.Tensor:
        key = (node, d)
        if key not in self.jacobians:
            others = {a: torch.zeros_like(interp.env[a]) for a in node.all_input_nodes
                      if a in self.dependent and a is not d}
            base = interp.env[d]

            def linear(v):
                return _call(interp, node, {**others, d: v}) - _call(interp, node, {**others, d: torch.zeros_like(v)})

            jac = torch.func.jacfwd(linear)(torch.zeros_like(base))
            self.jacobians[key] = (jac.reshape(value.numel(), base.numel()) != 0).to(torch.float64)
        return self.jacobians[key]


def _as_float(value):
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64)
    return tuple(_as_float(v) for v in value)


def _as_bool(value):
    if isinstance(value, torch.Tensor):
        return value != 0
    return tuple(_as_bool(v) for v in value)


def count_operations(snn, x: torch.Tensor, T: int, events: bool = False):
    """``{node name: [T, 2]}``: the ACs and MACs each affine node does at each step on the batch ``x``
    (summed over its samples), counted on ``signgd.event_driven``'s step-by-step simulation. Nodes
    that do nothing have rows of zeros. ``events``: also return the sparse neurons' events
    (``{neuron: [T, 4]}``: received input elements, outputs evaluated, spikes, checks), as ``(ops, events)``."""
    counter = EventCounter(snn, T)
    simulate_spikes(snn, x, T, observer=counter)
    return (counter.ops, counter.events) if events else counter.ops
