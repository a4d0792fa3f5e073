"""The event-driven simulation: neurons exchange signed spikes, not estimates.

The fast simulator propagates estimates: each neuron's input at step t is the ANN pre-activation of the
upstream estimates, ``x_t = A(y^up_t)``. Spiking hardware cannot send an estimate; it sends the spike
``s_t`` and every downstream neuron integrates it, ``x_t = x_{t-1} - eta_t L(2 s^up_t - 1)`` from ``x_0
= A(y_0)`` (``A(0)`` where the estimates start at 0), where ``L = A - A(0)`` is the linear part. This
module simulates that second view literally, one step at a time, so a test can show that both give the
same spikes and outputs. It is slow and meant for checking, not for use (the signGD dynamics and its
sparse form). With an adaptive schedule (``signgd.schedules.adaptive``) each receiver rebuilds the
sender's step from the spikes it has seen, the way spiking hardware would (rounded to a power of two
with ``adaptive(pow2=True)``). A sparse neuron
(``dynamics="sparse"``) sends an up or a down spike or nothing; each receiver adds ``+- eta_t`` times
the sender's scale for it (a graded neuron, ``dynamics="graded"``: the power of two its spike carries)."""
from __future__ import annotations

import torch
import torch.fx as fx

from .dynamics import BAND_DYNAMICS, passes_estimates
from .graph.calibrate import start_response, zero_response
from .kernels import next_step, pow2_step, sparse_fire, sparse_step
from .kernels.reference import gain_floor_values, gate, sparse_thresholds
from .network import SpikingNetwork
from .neurons import SpikingNeuron, signgd_fire, signgd_update
from .schedules import gain_floors


class _SpikeInterpreter(fx.Interpreter):
    """Evaluates the affine maps on the *changes* (spike deltas) of one step."""

    def __init__(self, gm, zero_inputs, start_inputs, eta, rule=None, observer=None, tolerance=None, graded=False,
                 windows=None):
        super().__init__(gm, garbage_collect_values=True)
        self.windows = windows or {}  # convert(window=): the steps each neuron layer may spike at
        self.tolerance = tolerance  # the sparse dynamics: its silence band (a fraction of eta_t)
        self.graded = graded  # the graded dynamics: a spike moves by the power of two it carries
        self.threshold = None
        self.observer = observer
        self.rule = rule
        self.floor = None  # the adaptive gain's floor at this step (a number of the network's dtype)
        self.t = 0  # the step being run (1-based)
        self.d: dict[str, torch.Tensor] = {}  # adaptive: the signed last step of each neuron
        self.zero_inputs = zero_inputs
        self.start_inputs = start_inputs  # x_0 = A(y_0)
        self.x: dict[str, list[torch.Tensor]] = {}
        self.y: dict[str, torch.Tensor] = {}
        self.spikes: dict[str, torch.Tensor] = {}
        self.eta = eta

    def run_node(self, n):
        out = super().run_node(n)
        if self.observer is not None:
            self.observer(self, n, out)
        return out

    def call_module(self, target, args, kwargs):
        mod = self.submodules[target]
        if not isinstance(mod, SpikingNeuron):
            return super().call_module(target, args, kwargs)
        a0 = self.zero_inputs[target]
        if target not in self.x:  # x_0 = A(y_0); y_0 = start / scale (0 unless convert(start=...))
            x0 = self.start_inputs[target]
            self.x[target] = [x0[i].expand_as(args[i]).clone() for i in range(len(args))]
            self.y[target] = mod.initial_estimate(mod(*args))
        # Integrate the linear part of what arrived: A(delta) - A(0).
        xs = self.x[target]
        for i, a in enumerate(args):
            xs[i] = xs[i] + (a - a0[i])
        target_value = mod(*xs)
        if mod.normalized:
            target_value = target_value / mod.scale
        y = self.y[target]
        if self.tolerance is not None:  # sparse: +1 up, -1 down, 0 silent
            threshold = gate(self.threshold.reshape(1), self.t, self.windows.get(target))[0]
            spike = sparse_fire(y, target_value, threshold, self.graded)
            y_new = sparse_step(y, target_value, spike, self.eta, self.graded)
        elif self.rule is None:
            spike = signgd_fire(y, target_value)
            y_new = signgd_update(y, spike, self.eta)
        else:
            spike = signgd_fire(y, target_value)
            # up to adaptive(start=) the early rule, unrounded ((1, 1): the gain stays 1, the plain signGD neuron)
            late = self.t > self.rule.start
            grow, shrink = (self.rule.grow, self.rule.shrink) if late else self.rule.early
            d = self.d[target] = next_step(spike, self.d.get(target, torch.zeros_like(y)), grow, shrink, self.floor)
            y_new = y + self.eta * (pow2_step(d) if self.rule.pow2 and late else d)
        delta = (y_new - y) * (mod.scale if mod.normalized else 1)
        self.y[target] = y_new
        self.spikes[target] = spike
        return delta


def simulate_spikes(snn: SpikingNetwork, x: torch.Tensor, T: int, observer=None):
    """Returns ``(outputs [T, B, ...], spikes {neuron: [T, B, ...]}, inputs {neuron: [T, B, ...]})``
    (spikes: bool for signGD, +1/-1/0 in the input's dtype for the sparse dynamics)
    where ``inputs`` are the integrated input estimates of each neuron's first input.

    ``observer(interpreter, node, value)``, when given, sees every node of every step as it is
    computed: the change it passes on (a neuron's change of output, the input's change of encoding),
    with ``interpreter.env`` holding the changes its inputs received (``signgd.report.event_count`` counts
    the operations this way)."""
    if not passes_estimates(snn.settings["dynamics"]):
        raise ValueError("the spike-propagation reference covers the signGD dynamics and its sparse and graded forms")
    gm = snn.graph_module
    zero_inputs, out0 = zero_response(gm, x)
    start_inputs, start_out = start_response(gm, x)
    etas = snn.schedule.etas(1, T + 1, dtype=x.dtype, device=x.device)
    rule = snn.schedule.rule
    floors = gain_floor_values(gain_floors(rule, 1, T + 1, dtype=torch.float64), T, x.dtype) if rule is not None \
        else None
    enc_state = snn.encoder.init_state(x)
    e_prev = torch.zeros_like(x)
    dynamics = snn.settings["dynamics"]
    tolerance = snn.settings.get("tolerance") if dynamics in BAND_DYNAMICS else None
    interp = _SpikeInterpreter(gm, zero_inputs, start_inputs, None, snn.schedule.rule, observer, tolerance,
                               graded=dynamics == "graded", windows=snn.windows())
    thresholds = sparse_thresholds(etas, tolerance) if tolerance is not None else None
    readout = start_out.expand(x.shape[0], *start_out.shape).clone()
    outputs, spikes, inputs = [], {}, {}
    with torch.no_grad():
        for t in range(1, T + 1):
            interp.eta, interp.t = etas[t - 1], t
            interp.floor = floors[t - 1] if floors is not None else None
            interp.threshold = thresholds[t - 1] if thresholds is not None else None
            e = snn.encoder.run(enc_state, x, etas[t - 1:t], t)[0]
            delta_out = interp.run(e - e_prev)
            e_prev = e
            readout = readout + (delta_out - out0)
            outputs.append(readout.clone())
            for name, s in interp.spikes.items():
                spikes.setdefault(name, []).append(s)
                inputs.setdefault(name, []).append(interp.x[name][0].clone())
    return (torch.stack(outputs), {k: torch.stack(v) for k, v in spikes.items()},
            {k: torch.stack(v) for k, v in inputs.items()})
