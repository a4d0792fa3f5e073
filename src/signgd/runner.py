"""The one run loop: a converted network over labelled data, batch by batch.

Per batch the ANN runs once and the SNN once for ``max(T)`` steps; the accuracy of both and the
SNN's agreement with the ANN at each T are counted (``Counts``). ``signgd.evaluate`` is this loop
alone; the report (``signgd.report.collect``) watches the same loop through a ``Probe``, which may run the ANN
itself (to keep its activations), sees each neuron layer's output through
``SpikingNetwork.simulate(probe=...)`` and each batch's spike counts, and hands back totals that are
summed over the processes together with the counts.

The data is read through ``signgd.batches``; in a torch.distributed group (``distributed``) each
rank reads its own shard (``signgd.distributed.shard_data``) and every rank returns the totals of
all of them, equal to one process's.
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from . import batches
from . import distributed as dist
from .network import SpikingNetwork, Steps, parse_steps
from .simulator import SimulationResult

__all__ = ["Counts", "Probe", "Probes", "Samples", "run", "ann_accuracy"]


class Counts(NamedTuple):
    """Samples run, correct ANN predictions, and per T the correct SNN predictions and the
    predictions that agree with the ANN's (``EvaluationReport.from_counts(*counts)``)."""

    n: int
    ann_correct: int
    snn_correct: dict[int, int]
    agree: dict[int, int]


class Probe:
    """Watches a ``run``: override what you need. The defaults measure nothing."""

    #: Whether the simulation counts spikes (``SimulationResult.spikes``) for ``after_batch``.
    stats = False

    def before_batch(self, snn: SpikingNetwork, x: torch.Tensor) -> None:
        """A batch ``x`` (on the network's device and dtype) is about to run."""

    def ann(self, snn: SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
        """The ANN's logits on the batch ``x`` (checked, on the network's device and dtype)."""
        return snn.ann(x)

    def layer(self, name: str, t0: int, out: torch.Tensor) -> None:
        """What neuron layer ``name`` passes downstream at steps ``t0 .. t0 + len(out) - 1``
        (``SpikingNetwork.simulate``'s ``probe``); the whole batch at once, read-only."""

    def after_batch(self, snn: SpikingNetwork, x: torch.Tensor, result: SimulationResult) -> None:
        """The batch's simulation has ended."""

    def totals(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """This process's measurements: ``(summed over the ranks, reduced by max over the ranks)``."""
        return {}, {}

    def finish(self, totals: dict[str, torch.Tensor]) -> None:
        """The totals over every rank (both kinds, under their names)."""

    @property
    def watches_layers(self) -> bool:
        """Whether ``layer`` is overridden: only then does the simulation call it."""
        return type(self).layer is not Probe.layer


class Probes(Probe):
    """Several probes on one run: the first runs the ANN; each sees every layer, batch and its own totals."""

    def __init__(self, *probes: Probe):
        self.probes = probes
        self.stats = any(p.stats for p in probes)
        self._watching = [p for p in probes if p.watches_layers]

    @property
    def watches_layers(self) -> bool:
        return bool(self._watching)

    def before_batch(self, snn, x):
        for p in self.probes:
            p.before_batch(snn, x)

    def ann(self, snn, x):
        return self.probes[0].ann(snn, x)

    def layer(self, name, t0, out):
        for p in self._watching:
            p.layer(name, t0, out)

    def after_batch(self, snn, x, result):
        for p in self.probes:
            p.after_batch(snn, x, result)

    def totals(self):
        sums, maxima = {}, {}
        for i, p in enumerate(self.probes):
            s, m = p.totals()
            sums.update({f"{i}:{k}": v for k, v in s.items()})
            maxima.update({f"{i}:{k}": v for k, v in m.items()})
        return sums, maxima

    def finish(self, totals):
        for i, p in enumerate(self.probes):
            prefix = f"{i}:"
            p.finish({k[len(prefix):]: v for k, v in totals.items() if k.startswith(prefix)})


def run(snn: SpikingNetwork, data, T: Steps, *, batch_size: int = 256, limit: int | None = None,
        progress: bool | None = None, chunk: int | None = None, distributed: bool | None = None,
        probe: Probe | None = None, desc: str = "evaluate") -> Counts:
    """Run ``snn`` over labelled ``data`` (a DataLoader or iterable of ``(x, y)`` batches, a Dataset
    of ``(x, y)`` samples, or a pair of tensors) for each T in one simulation per batch; the first
    ``limit`` samples only. ``distributed`` as in ``signgd.evaluate``."""
    steps = parse_steps(T)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    probe = probe or Probe()
    samples = Samples(data, batch_size, limit, distributed, steps)
    device, dtype = snn.placement
    n = ann_correct = 0
    snn_correct, agree = dict.fromkeys(steps, 0), dict.fromkeys(steps, 0)
    layer_probe = probe.layer if probe.watches_layers else None
    with tqdm(total=samples.total, desc=desc, unit="sample", disable=not samples.show(progress)) as bar:
        for x, y in samples:
            x, y = _labelled(x, y, device, dtype)
            probe.before_batch(snn, x)
            ann_pred = probe.ann(snn, x).argmax(-1)
            result = snn.simulate(x, steps, chunk=chunk, stats=probe.stats, probe=layer_probe)
            ann_correct += int((ann_pred == y).sum())
            for t in steps:
                pred = result.outputs[t].argmax(-1)
                snn_correct[t] += int((pred == y).sum())
                agree[t] += int((pred == ann_pred).sum())
            probe.after_batch(snn, x, result)
            n += x.shape[0]
            bar.update(x.shape[0])
    sums, maxima = probe.totals()
    counts = torch.tensor([n, ann_correct, *snn_correct.values(), *agree.values()])
    totals = samples.sum({"counts": counts, **sums})
    totals.update(samples.max(maxima))
    n, ann_correct, *rest = totals.pop("counts").tolist()
    probe.finish(totals)
    return Counts(n, ann_correct, dict(zip(steps, rest[:len(steps)])), dict(zip(steps, rest[len(steps):])))


def ann_accuracy(snn: SpikingNetwork, data, *, batch_size: int = 256, limit: int | None = None,
                 distributed: bool | None = None) -> tuple[int, int, int]:
    """The ANN alone over the samples ``run`` reads (no simulation, a few seconds): ``(samples, correct,
    classes)``, summed over the ranks like ``run``'s counts. The command prints it before simulating,
    so a chance-level ANN (no weights, the wrong preprocessing) shows at once."""
    samples = Samples(data, batch_size, limit, distributed, [1])
    device, dtype = snn.placement
    n = correct = classes = 0
    for x, y in samples:
        x, y = _labelled(x, y, device, dtype)
        logits = snn.ann(x)
        correct += int((logits.argmax(-1) == y).sum())
        n, classes = n + x.shape[0], logits.shape[-1]
    n, correct = samples.sum({"counts": torch.tensor([n, correct])})["counts"].tolist()
    return n, correct, int(samples.max({"classes": torch.tensor([classes])})["classes"])


class Samples:
    """The labelled batches this process runs (the first ``limit`` samples of ``data``, or its
    shard of them in a distributed run), their number, and how its totals become the global ones."""

    def __init__(self, data, batch_size: int, limit: int | None, distributed: bool | None, steps: list[int]):
        self.distributed = dist.active(distributed)
        if self.distributed:
            n_all = batches.count(data, limit)
            data, self.total = dist.shard_data(data, batch_size, limit, dist.rank(), dist.world_size())
            dist.check_same([n_all, len(steps), sum(steps), max(steps)],
                            "data or steps (samples, number of T, sum of T, largest T)")
            limit = None
        else:
            self.total = batches.count(data, limit)
        self.data, self.batch_size, self.limit = data, batch_size, limit

    def __iter__(self):
        return batches.take(batches.labelled(self.data, self.batch_size), self.limit)

    def show(self, progress: bool | None) -> bool:
        """Whether to draw a progress bar: as asked (default: stderr is a terminal), on rank 0 only."""
        if progress is None:
            progress = sys.stderr.isatty()
        return bool(progress) and dist.is_main()

    def sum(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Totals over every rank (integers exactly); this process's own numbers when not distributed."""
        return dist.all_reduce(tensors) if self.distributed and tensors else dict(tensors)

    def max(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dist.all_reduce(tensors, op="max") if self.distributed and tensors else dict(tensors)


def _labelled(x, y, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the network's device and dtype, with its labels checked: class indices, one per sample."""
    x = x.to(device=device, dtype=dtype)
    y = torch.as_tensor(y, device=device)
    if y.numel() != x.shape[0] or y.is_floating_point():
        raise ValueError(f"labels must be class indices, one per sample: got {tuple(y.shape)} "
                         f"{y.dtype} for a batch of {x.shape[0]} inputs")
    return x, y.reshape(-1)
