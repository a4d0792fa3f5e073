"""Synaptic operations of the SNN against multiply-accumulates of the ANN, and an energy estimate.

Counting rules (per sample):

- **ANN MACs**: every weighted affine op of the converted graph (the same graph the SNN runs):
  a convolution costs ``output elements x (in_channels / groups) x kernel area``, a linear layer or
  a matmul by a constant ``output elements x in_features``, an unfolded BatchNorm one per element.
  Nonlinearities, pooling and additions are not counted (as usual in the SNN literature).
- **SNN synaptic operations (SOPs)**: a spike of a neuron costs one accumulate at every synapse it
  drives: every element of a downstream neuron's input (or of the network output) that depends on it
  through the affine ops in between. A neuron layer's *fan-out* is the number of those synapses
  per neuron, averaged over the layer; it is counted on the graph itself by running the affine ops
  with every weight replaced by ``1[w != 0]``, means and average pools by sums, and subtractions by
  additions (so each path counts once), on a one of the layer's outputs: ``L_bin(1) - L_bin(0)``.
  SOPs up to step T = sum over layers of (spikes per sample up to T) x (fan-out). The signGD
  neuron's signed update ``x_t = x_{t-1} - eta_t L(2 s_t - 1) = x_{t-1} + eta_t L(1) - 2 eta_t L(s_t)``
  needs accumulates only for the neurons that spike (the ``L(1)`` term is one constant per step).
- **Input layer**: with the ``float`` encoding the first layer sees a real-valued input that changes
  every step, so it costs its MACs at every step; with ``analog`` its input never changes, so it costs
  its MACs once; with ``spike``/``stochastic`` encodings input spikes cost their fan-out in SOPs.
- **Energy**: ``SOPs x E_AC + MACs x E_MAC`` with the 45 nm figures of Horowitz (ISSCC 2014) usually
  quoted: ``E_AC = 0.9 pJ``, ``E_MAC = 4.6 pJ``; both are arguments. Memory traffic is not counted.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..graph import spellings as sp
from ..graph.deps import depends_on_input
from ..neurons import SpikingNeuron

__all__ = ["EnergyModel", "fan_out", "ann_macs", "first_layer_macs", "energy_table", "INPUT"]

INPUT = "input"  # the name of the input "layer" in fan-out tables

# What the counts replay with 1[w != 0] (``graph/spellings.py``'s lists; ``torch.bmm`` by a constant
# is not among the scalings counted yet).
_SCALE_FUNCTIONS = sp.MULTIPLY_FUNCTIONS | sp.DIVIDE_FUNCTIONS | sp.MATMUL_FUNCTIONS


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (45 nm CMOS, Horowitz 2014): accumulate and multiply-accumulate."""

    pj_per_ac: float = 0.9
    pj_per_mac: float = 4.6


def _nonzero(w: torch.Tensor) -> torch.Tensor:
    return (w != 0).to(torch.float64)


class _Counter(fx.Interpreter):
    """The graph's affine part as path counts: neuron layers emit ones (the chosen source) or zeros,
    weights become 1[w != 0], means become sums, subtractions additions. The input of every neuron
    and the output are recorded: their sums are the synapses the source drives."""

    def __init__(self, gm: fx.GraphModule, source: str, dependent: set[fx.Node]):
        super().__init__(gm)
        self.source, self.dependent = source, dependent
        self.received = 0.0
        self.source_size = 0
        self._node: fx.Node | None = None

    def run_node(self, n: fx.Node):
        self._node = n
        return super().run_node(n)

    def placeholder(self, target, args, kwargs):
        x = super().placeholder(target, args, kwargs)
        if not isinstance(x, torch.Tensor):  # a forward option fixed at its default (is_causal=False)
            return x
        out = torch.ones_like(x) if self.source == INPUT else torch.zeros_like(x)
        if self.source == INPUT:
            self.source_size = out[0].numel()
        return out

    def output(self, target, args, kwargs):
        out = args[0]
        self.received += float(out.sum())
        return out

    def call_module(self, target, args, kwargs):
        mod = self.submodules[target]
        if isinstance(mod, SpikingNeuron):
            self.received += sum(float(a.sum()) for a in args if isinstance(a, torch.Tensor))
            like = mod(*args)
            if target == self.source:
                self.source_size = like[0].numel()
                return torch.ones_like(like)
            return torch.zeros_like(like)
        x = args[0]
        if isinstance(mod, sp.CONV_MODULES):
            return mod._conv_forward(x, _nonzero(mod.weight), None)
        if isinstance(mod, sp.LINEAR_MODULES):
            return F.linear(x, _nonzero(mod.weight))
        if isinstance(mod, sp.ANY_BATCH_NORM):
            return x
        if isinstance(mod, sp.AVG_POOL_MODULES):
            k = mod.kernel_size if isinstance(mod.kernel_size, tuple) else (mod.kernel_size,) * (x.dim() - 2)
            return mod(x) * float(torch.tensor(k).prod())
        if isinstance(mod, sp.ADAPTIVE_AVG_POOL_MODULES):
            out = mod(x)
            return out * (x[0].numel() / out[0].numel())
        return mod(x, *args[1:], **kwargs)  # reshapes and constant pads: structure only

    def call_function(self, target, args, kwargs):
        node = self._node
        if target in sp.CONV_FUNCTIONS or target in sp.LINEAR_FUNCTIONS:
            args = list(args)
            kw = dict(kwargs)
            if "weight" in kw:
                kw["weight"] = _nonzero(kw["weight"])
            else:
                args[1] = _nonzero(args[1])
            kw.pop("bias", None)
            if len(args) > 2:
                args[2] = None
            return target(*args, **kw)
        if target in sp.SUBTRACT_FUNCTIONS:
            return self._dependent_sum(node, args)
        if target in sp.NEGATE_FUNCTIONS:
            return args[0]
        if target in _SCALE_FUNCTIONS:
            return self._scaled(node, target, args)
        if target in sp.MEAN_FUNCTIONS:
            out = target(*args, **kwargs)
            return out * (args[0].numel() / max(out.numel(), 1))
        if target in sp.AVG_POOL_FUNCTIONS or target in sp.ADAPTIVE_AVG_POOL_FUNCTIONS:
            out = target(*args, **kwargs)
            return out * (args[0][0].numel() / out[0].numel())
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        node = self._node
        if target in sp.SUBTRACT_METHODS:
            return self._dependent_sum(node, args)
        if target in sp.NEGATE_METHODS:
            return args[0]
        if target in sp.SCALING_METHOD_FUNCTIONS:
            return self._scaled(node, sp.SCALING_METHOD_FUNCTIONS[target], args)
        if target in sp.MEAN_METHODS:
            out = super().call_method(target, args, kwargs)
            return out * (args[0].numel() / max(out.numel(), 1))
        return super().call_method(target, args, kwargs)

    def _dependent_sum(self, node, args):
        """``a - b`` counts the paths of both operands; a constant operand adds nothing."""
        parts = [a for a, n in zip(args, node.args) if isinstance(a, torch.Tensor) and n in self.dependent]
        if not parts:
            return args[0]
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out

    def _scaled(self, node, fn, args):
        """Scaling or a matmul by a constant: the constant becomes 1[c != 0]."""
        a, b = args[0], args[1]
        na, nb = node.args[0], node.args[1]
        if nb not in self.dependent and na in self.dependent:
            c = _nonzero(b) if isinstance(b, torch.Tensor) else float(b != 0)
            return a * c if fn in sp.DIVIDE_FUNCTIONS else fn(a, c)
        if na not in self.dependent and nb in self.dependent:
            c = _nonzero(a) if isinstance(a, torch.Tensor) else float(a != 0)
            return fn(c, b)
        return fn(a, b)


def _source_size(gm: fx.GraphModule, source: str, sample: torch.Tensor) -> tuple[float, int]:
    dependent = depends_on_input(gm)
    ones = _Counter(gm, source, dependent)
    zeros = _Counter(gm, "\0none", dependent)
    with torch.no_grad():
        ones.run(sample)
        zeros.run(sample)
    return ones.received - zeros.received, ones.source_size


def fan_out(snn) -> dict[str, float]:
    """Average synapses driven per neuron, for the input and every neuron layer (in float64)."""
    gm = _float64_copy(snn.graph_module)
    sample = torch.zeros((1, *snn.input_shape), dtype=torch.float64)
    out = {}
    for source in [INPUT, *snn.neurons]:
        total, size = _source_size(gm, source, sample)
        out[source] = total / max(size, 1)
    return out


def _float64_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """Counts in float64 on the CPU: exact integers up to 2**53, and the user's network untouched."""
    return copy.deepcopy(gm).to("cpu").double()


class _MacCounter(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.macs = 0

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        mod = self.submodules[target]
        if isinstance(mod, sp.CONV_MODULES):
            self.macs += out[0].numel() * mod.weight[0].numel()
        elif isinstance(mod, sp.LINEAR_MODULES):
            self.macs += out[0].numel() * mod.in_features
        elif isinstance(mod, sp.ANY_BATCH_NORM):
            self.macs += out[0].numel()
        return out

    def call_function(self, target, args, kwargs):
        out = super().call_function(target, args, kwargs)
        if target in sp.CONV_FUNCTIONS:
            w = kwargs.get("weight", args[1] if len(args) > 1 else None)
            self.macs += out[0].numel() * w[0].numel()
        elif target in sp.LINEAR_FUNCTIONS:
            w = kwargs.get("weight", args[1] if len(args) > 1 else None)
            self.macs += out[0].numel() * w.shape[-1]
        return out


def ann_macs(snn) -> int:
    """Multiply-accumulates of one ANN forward pass of the converted graph (per sample)."""
    device, dtype = snn.placement
    counter = _MacCounter(snn.graph_module)
    with torch.inference_mode():
        counter.run(torch.zeros((1, *snn.input_shape), dtype=dtype, device=device))
    return int(counter.macs)


def first_layer_macs(snn, fanout: dict[str, float]) -> int:
    """MACs of the ops that read the input directly (the real-valued part of the SNN's first layer):
    the input's synapses, ``fan-out x input elements`` per sample."""
    return int(round(fanout[INPUT] * torch.Size(snn.input_shape).numel()))


def energy_table(steps: list[int], spikes_per_step: dict[str, list[float]], fanout: dict[str, float],
                 macs: int, input_macs: int, encoding: str, input_spikes_per_step: list[float] | None,
                 model: EnergyModel = EnergyModel()) -> dict:
    """SOPs, input MACs and energy of the SNN per sample at each T, beside the ANN's."""
    rows = {}
    for T in steps:
        sops = sum(sum(spikes_per_step[name][:T]) * fanout[name] for name in spikes_per_step)
        if encoding in ("spike", "stochastic") and input_spikes_per_step is not None:
            sops += sum(input_spikes_per_step[:T]) * fanout[INPUT]
            in_macs = 0
        else:
            in_macs = input_macs * (T if encoding == "float" else 1)
        energy = sops * model.pj_per_ac + in_macs * model.pj_per_mac
        rows[T] = {"sops": sops, "input_macs": in_macs, "energy_pj": energy}
    ann_energy = macs * model.pj_per_mac
    for row in rows.values():
        row["energy_ratio_to_ann"] = row["energy_pj"] / ann_energy if ann_energy else float("nan")
    return {"ann_macs": macs, "ann_energy_pj": ann_energy, "pj_per_ac": model.pj_per_ac,
            "pj_per_mac": model.pj_per_mac, "fan_out": dict(fanout), "input_macs_per_step": input_macs,
            "snn": rows}
