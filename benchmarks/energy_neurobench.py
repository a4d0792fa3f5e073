"""An independent check of the energy count: NeuroBench's ``SynapticOperations`` on the event-driven run.

For small networks of each kind the tests check exactly (a CNN with conv/BN/ReLU/max pooling, a
residual net, an MLP-Mixer, a ViT), with the plain and the adaptive schedule and every input
encoding, the event-driven simulation (``signgd.event_driven``) runs step by step. At every step each
Conv/Linear module receives what changed at its input: ``-1`` where a spike arrived (an event: a
spike times a static scale) and the real value of the change elsewhere (float input, adaptive gains,
sums). NeuroBench's metric hooks those modules (its ``LayerHook``) and counts, as it does for any
model, effective ACs (inputs in {-1, 0, 1}) and MACs (any other input) from a binary copy of each
layer. Its totals are compared with signgd's count (``signgd.report.event_count`` and the report's
``EnergyProbe``, equal by the tests) on the same modules, and the ops NeuroBench does not see
(functional and constant matmuls, adds, means, pools) are listed beside::

    pip install --no-deps neurobench
    python benchmarks/energy_neurobench.py --out docs/energy_neurobench.md
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import torch  # noqa: E402
from torch import nn  # noqa: E402

import signgd  # noqa: E402
from signgd import models  # noqa: E402
from signgd.event_driven import simulate_spikes  # noqa: E402
from signgd.neurons import SpikingNeuron  # noqa: E402
from signgd.report.event_count import EventCounter, count_operations  # noqa: E402
from signgd.schedules import adaptive  # noqa: E402


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 2 * 2, 10))


NETS = {"cnn": _cnn, "resnet": lambda: models.SmallResNet(widths=(4, 6, 8)),
        "mixer": lambda: models.tiny_mixer(image_size=8), "vit": lambda: models.tiny_vit(image_size=8)}


class _HookedModules:
    """NeuroBench's view: a copy of every Conv/Linear module of the graph with its ``LayerHook``."""

    def __init__(self, snn):
        from neurobench.hooks.layer import LayerHook
        gm = snn.graph_module
        self.copies = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                mod = gm.get_submodule(node.target)
                if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                    self.copies[node] = copy.deepcopy(mod)
        self.connection_hooks = [LayerHook(m) for m in self.copies.values()]
        self.activation_hooks = []


class _Feeder:
    """Follows which elements changed, as ``signgd.report.event_count`` does, and feeds the hooked copies."""

    def __init__(self, snn, hooked, counter_state):
        self.hooked, self.state = hooked, counter_state

    def __call__(self, interp, node, value):
        self.state(interp, node, value)
        if node in self.hooked.copies:
            (arg,) = [a for a in node.all_input_nodes]
            changed = self.state.changed[arg]
            if self.state.event[arg]:
                x = -changed.to(value.dtype)
            else:
                x = changed.to(value.dtype) * (1.5 + torch.rand(changed.shape, dtype=value.dtype))
            with torch.no_grad():
                self.hooked.copies[node](x)


def check(net: str, encoding: str, adaptive_steps: bool, T: int = 6):
    from neurobench.metrics.workload import SynapticOperations

    torch.manual_seed(0)
    model = NETS[net]().eval().double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    snn = signgd.convert(model, x, encoding=encoding, schedule=adaptive() if adaptive_steps else "exponential")
    ours = count_operations(snn, x, T)
    hooked = _HookedModules(snn)
    state = EventCounter(snn, T)  # which elements changed, to feed NeuroBench
    simulate_spikes(snn, x, T, observer=_Feeder(snn, hooked, state))
    metric = SynapticOperations()
    nb = metric(hooked, None, (x, None))
    names = {node.name for node in hooked.copies}
    ac_mod = sum(float(v[:, 0].sum()) for k, v in ours.items() if k in names) / x.shape[0]
    mac_mod = sum(float(v[:, 1].sum()) for k, v in ours.items() if k in names) / x.shape[0]
    other = {k: v.sum(0) / x.shape[0] for k, v in ours.items() if k not in names and float(v.sum()) > 0}
    neurons = sum(isinstance(m, SpikingNeuron) for m in snn.graph_module.modules())
    return {"ours_ac": ac_mod, "ours_mac": mac_mod, "nb_ac": nb["Effective_ACs"], "nb_mac": nb["Effective_MACs"],
            "other": other, "neuron_layers": neurons}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--T", type=int, default=6)
    args = p.parse_args(argv)
    common.setup_torch(1)
    lines = ["# NeuroBench's SynapticOperations against signgd's count", "", f"`{common.command_line()}`", "",
             "Per sample, summed over T steps, on the Conv/Linear modules NeuroBench hooks; the last column "
             "lists signgd's count on the nodes NeuroBench does not see (ACs, MACs).", "",
             "| net | encoding | schedule | signgd ACs | NeuroBench ACs | signgd MACs | NeuroBench MACs | "
             "equal | other nodes (signgd only) |", "|---|---|---|---:|---:|---:|---:|---|---|"]
    for net in NETS:
        for encoding in ("float", "spike", "stochastic", "analog"):
            for adaptive_steps in (False, True):
                r = check(net, encoding, adaptive_steps, args.T)
                same = abs(r["ours_ac"] - r["nb_ac"]) < 1e-6 and abs(r["ours_mac"] - r["nb_mac"]) < 1e-6
                kinds = sorted({k.rstrip("0123456789").rstrip("_") for k in r["other"]})
                ac = sum(float(v[0]) for v in r["other"].values())
                mac = sum(float(v[1]) for v in r["other"].values())
                other = (f"{len(r['other'])} nodes ({', '.join(kinds)}): {ac:.0f} ACs, {mac:.0f} MACs"
                         if r["other"] else "")
                lines.append(f"| {net} | {encoding} | {'adaptive' if adaptive_steps else 'plain'} | "
                             f"{r['ours_ac']:.1f} | {r['nb_ac']:.1f} | {r['ours_mac']:.1f} | {r['nb_mac']:.1f} | "
                             f"{'yes' if same else 'NO'} | {other or '-'} |")
                common.log(lines[-1])
    common.emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
