"""One pass over labelled data that measures everything a report shows, from one simulation per batch.

Per batch: the ANN runs once (its logits and every neuron layer's exact activation), the SNN runs
once for ``max(T)`` steps with spike counting on and a probe on every neuron layer, and the
accuracy, the agreement with the ANN, the spikes and the per-layer approximation error are all
accumulated from those two runs.

Approximation error of a layer at step ``t``: the relative L2 error
``||estimate_t - activation|| / ||activation||`` over all its elements and samples, where
``activation`` is the ANN's output of that nonlinearity and ``estimate_t`` the neuron layer's
estimate of it after ``t`` steps, in ANN units: what a signGD layer passes downstream; for the
subgradient dynamics the running average of what it passes downstream (the scaled firing rate,
``y_t = y_{t-1} - eta_t (y_{t-1} - s_t)``), as the decoder does. The mean absolute error is kept too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ..dynamics import passes_estimates
from ..evaluate import EvaluationReport
from ..network import SpikingNetwork, Steps, parse_steps
from ..neurons import SpikingNeuron
from ..runner import Probe, Probes, run
from .energy import EnergyProbe
from .names import layer_names

__all__ = ["LayerStatistics", "RunStatistics", "collect"]


@dataclass
class LayerStatistics:
    """One neuron layer: what it tracks, how many neurons per sample, and per-T measurements."""

    target: str
    neurons: int
    spikes_per_step: list[float]  # spikes per sample fired at step t = 1..max(T)
    relative_error: dict[int, float] = field(default_factory=dict)
    mean_abs_error: dict[int, float] = field(default_factory=dict)
    label: str = ""  # the readable name (``report.names.layer_names``): "features.6 (max, rows)"

    def spikes_per_sample(self, T: int) -> float:
        """Spikes per sample over the first T steps."""
        return float(sum(self.spikes_per_step[:T]))

    def firing_rate(self, T: int) -> float:
        """Fraction of (neuron, step) pairs that spiked in the first T steps."""
        return self.spikes_per_sample(T) / max(self.neurons * T, 1)


@dataclass
class RunStatistics:
    evaluation: EvaluationReport
    layers: dict[str, LayerStatistics]
    input_spikes_per_step: list[float] | None  # spike/stochastic encodings: input spikes per sample per step
    # The energy count (``report.energy.EnergyProbe``): synaptic [ACs, MACs] per graph node and step,
    # summed over the samples, and the node names of its rows.
    synaptic_ops: torch.Tensor | None = None
    synaptic_nodes: list[str] | None = None
    # The sparse neurons' events per layer (and the readout): ``[T, 4]`` sums over the samples of the
    # input elements that received something, the outputs evaluated again, the spikes and the checks
    # (costs.EVENT_KINDS).
    neuron_events: dict[str, torch.Tensor] | None = None


class _AnnProbe(fx.Interpreter):
    """The converted graph as an ANN, keeping every neuron layer's output."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=True)
        self.activations: dict[str, torch.Tensor] = {}

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        if isinstance(self.submodules[target], SpikingNeuron):
            self.activations[target] = out.detach().clone()  # a later in-place op must not change it
        return out


class _ErrorProbe:
    """Receives each neuron layer's downstream sequence per chunk and accumulates its error at the
    requested steps against the ANN activations of the current batch."""

    def __init__(self, steps: list[int], etas: torch.Tensor, dynamics: str, spike_routers: set[str] = frozenset()):
        self.steps, self.etas, self.dynamics = steps, etas.to(torch.float64), dynamics
        # Layers that pass spikes on without firing (subgradient max pooling: a max over the scaled
        # spikes): their spikes are the non-zero outputs, counted here per step.
        self.spike_routers = spike_routers
        self.routed = {name: torch.zeros(len(etas), dtype=torch.float64) for name in spike_routers}
        self.sq_err: dict[str, dict[int, float]] = {}
        self.abs_err: dict[str, dict[int, float]] = {}
        self.sq_ref: dict[str, float] = {}
        self.elements: dict[str, int] = {}

    def start_batch(self, activations: dict[str, torch.Tensor]) -> None:
        self.activations = activations
        self.running: dict[str, torch.Tensor] = {}
        for name, act in activations.items():
            self.sq_ref[name] = self.sq_ref.get(name, 0.0) + float(act.to(torch.float64).square().sum())
            self.elements[name] = self.elements.get(name, 0) + act.numel()

    def __call__(self, name: str, t0: int, out: torch.Tensor) -> None:
        act = self.activations[name]
        tc = out.shape[0]
        if name in self.spike_routers:
            self.routed[name][t0 - 1:t0 - 1 + tc] += (out != 0).flatten(1).sum(1).to(torch.float64).cpu()
        wanted = {t for t in self.steps if t0 <= t < t0 + tc}
        if passes_estimates(self.dynamics):
            for t in sorted(wanted):
                self._accumulate(name, t, out[t - t0], act)
            return
        # Subgradient and IF: the estimate is the running average of what the layer passes downstream.
        y = self.running.get(name)
        if y is None:
            y = self.running[name] = torch.zeros_like(out[0])
        for k in range(tc):
            eta = float(self.etas[t0 - 1 + k])
            y.mul_(1 - eta).add_(out[k], alpha=eta)
            if t0 + k in wanted:
                self._accumulate(name, t0 + k, y, act)

    def _accumulate(self, name: str, t: int, estimate: torch.Tensor, act: torch.Tensor) -> None:
        diff = estimate - act
        sq, ab = self.sq_err.setdefault(name, {}), self.abs_err.setdefault(name, {})
        sq[t] = sq.get(t, 0.0) + float(torch.sum(diff * diff, dtype=torch.float64))
        ab[t] = ab.get(t, 0.0) + float(torch.sum(diff.abs_(), dtype=torch.float64))


def _input_spikes(snn: SpikingNetwork, x: torch.Tensor, T: int) -> torch.Tensor:
    """Spikes per step of a binary input encoding (``spike``/``stochastic``), summed over the batch.
    The encoder moves its estimate down by eta on a spike and up otherwise, so a spike is a drop."""
    etas = snn.schedule.etas(1, T + 1, dtype=x.dtype, device=x.device)
    state = snn.encoder.init_state(x)
    e = snn.encoder.run(state, x, etas, 1)
    prev = torch.cat([torch.zeros_like(x).unsqueeze(0), e[:-1]])
    return (e < prev).flatten(1).sum(1).to(torch.float64).cpu()


class _ReportProbe(Probe):
    """What a report measures on top of the run's counts: each neuron layer's spikes per step and
    error against the ANN activation, and the input spikes of a binary encoding."""

    stats = True

    def __init__(self, snn: SpikingNetwork, steps: list[int]):
        self.names, self.steps, self.T = list(snn.neurons), steps, max(steps)
        device, _ = snn.placement
        dynamics = snn.settings["dynamics"]
        self.routers = {name for name, m in snn.neurons.items() if not passes_estimates(dynamics) and m.target == "max"}
        self.errors = _ErrorProbe(steps, snn.schedule.etas(1, self.T + 1, dtype=torch.float64, device=device),
                                  dynamics, self.routers)
        self.binary_input = snn.settings["encoding"] in ("spike", "stochastic")
        self.spikes: dict[str, torch.Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.input_spikes = torch.zeros(self.T, dtype=torch.float64)

    def ann(self, snn: SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
        snn.check_input(x)
        ann = _AnnProbe(snn.graph_module)
        with torch.inference_mode():
            logits = ann.run(x.clone())
        self.errors.start_batch(ann.activations)
        return logits

    def layer(self, name: str, t0: int, out: torch.Tensor) -> None:
        self.errors(name, t0, out)

    def after_batch(self, snn: SpikingNetwork, x: torch.Tensor, result) -> None:
        for name, counts in result.spikes.items():
            self.spikes[name] = self.spikes.get(name, 0) + counts.cpu()
            self.neurons[name] = result.neurons[name]
        if self.binary_input:
            self.input_spikes += _input_spikes(snn, x, self.T)

    def totals(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One row per neuron layer (zeros for a layer this process never ran, as on a rank with an
        empty shard); the neuron counts per sample, the same wherever a layer ran, go by max."""
        for name in self.routers:
            if name in self.spikes:
                self.spikes[name] = self.errors.routed[name]
        names, steps, probe = self.names, self.steps, self.errors
        f64 = dict(dtype=torch.float64)
        zeros = torch.zeros(self.T, **f64)
        sums = {
            "spikes": torch.stack([self.spikes[k].to(**f64) if k in self.spikes else zeros for k in names])
            if names else torch.zeros(0, self.T, **f64),
            "sq_err": torch.tensor([[probe.sq_err.get(k, {}).get(t, 0.0) for t in steps] for k in names], **f64
                                   ).reshape(len(names), len(steps)),
            "abs_err": torch.tensor([[probe.abs_err.get(k, {}).get(t, 0.0) for t in steps] for k in names], **f64
                                    ).reshape(len(names), len(steps)),
            "sq_ref": torch.tensor([probe.sq_ref.get(k, 0.0) for k in names], **f64),
            "elements": torch.tensor([probe.elements.get(k, 0) for k in names], dtype=torch.int64),
            "input_spikes": self.input_spikes,
        }
        return sums, {"neurons": torch.tensor([self.neurons.get(k, 0) for k in names], dtype=torch.int64)}

    def finish(self, totals: dict[str, torch.Tensor]) -> None:
        self.reduced = totals


def collect(snn: SpikingNetwork, data, T: Steps, *, batch_size: int = 256, limit: int | None = None,
            progress: bool | None = None, chunk: int | None = None, distributed: bool | None = None,
            energy: bool = True) -> RunStatistics:
    """Accuracy, agreement, spikes and per-layer error at each T in one pass over ``data``
    (a Dataset, DataLoader, iterable of ``(x, y)`` batches or a pair of tensors): ``signgd.runner.run``
    with a probe.

    ``distributed`` as in ``signgd.evaluate``: in a torch.distributed group each rank measures its
    shard and every rank returns the totals. Counts (samples, correct predictions, spikes) are exact;
    the error sums equal one process's up to float64 rounding. ``energy``: also count the synaptic
    operations on the same run (``report.energy.EnergyProbe``; the report's energy section needs them)."""
    steps = parse_steps(T)
    probe = _ReportProbe(snn, steps)
    counter = EnergyProbe(snn, max(steps)) if energy else None
    evaluation = EvaluationReport.from_counts(*run(snn, data, steps, batch_size=batch_size, limit=limit,
                                                   progress=progress, chunk=chunk, distributed=distributed,
                                                   probe=Probes(probe, counter) if counter else probe,
                                                   desc="simulate"))
    totals, n, mods, labels = probe.reduced, evaluation.n, snn.neurons, layer_names(snn)
    layers = {}
    for i, name in enumerate(mods):
        if int(totals["neurons"][i]) == 0:  # no batch ran through this layer's spike counter
            continue
        ref_norm = max(float(totals["sq_ref"][i]), 1e-30) ** 0.5
        elements = max(int(totals["elements"][i]), 1)
        layers[name] = LayerStatistics(
            target=mods[name].target, neurons=int(totals["neurons"][i]),
            spikes_per_step=(totals["spikes"][i] / n).tolist(),
            relative_error={t: float(e) ** 0.5 / ref_norm for t, e in zip(steps, totals["sq_err"][i])},
            mean_abs_error={t: float(e) / elements for t, e in zip(steps, totals["abs_err"][i])},
            label=labels[name])
    binary = probe.binary_input
    return RunStatistics(evaluation, layers, (totals["input_spikes"] / n).tolist() if binary else None,
                         counter.reduced if counter else None, counter.nodes if counter else None,
                         counter.events if counter else None)
