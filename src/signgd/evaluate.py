"""Accuracy of the ANN and of the SNN at each number of time steps, from one simulation per batch."""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from . import distributed as _dist
from .network import SpikingNetwork, Steps, parse_steps

DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class EvaluationReport:
    """ANN accuracy, SNN accuracy per T, and the fraction of samples where the SNN's prediction
    agrees with the ANN's, over ``n`` samples."""

    n: int
    ann_accuracy: float
    snn_accuracy: dict[int, float] = field(default_factory=dict)
    agreement: dict[int, float] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, n: int, ann_correct: int, snn_correct: dict[int, int], agree: dict[int, int]
                    ) -> "EvaluationReport":
        """The report of ``n`` samples from the numbers of correct and agreeing predictions per T."""
        n = int(n)
        if n == 0:
            raise ValueError("no samples to evaluate: the data is empty")
        return cls(n, int(ann_correct) / n, {t: int(c) / n for t, c in snn_correct.items()},
                   {t: int(c) / n for t, c in agree.items()})

    @property
    def steps(self) -> list[int]:
        return sorted(self.snn_accuracy)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A Markdown table: one row per T."""
        lines = [f"ANN accuracy: {100 * self.ann_accuracy:.2f}% ({self.n} samples)", "",
                 "| T | SNN accuracy (%) | gap to ANN (points) | agreement with ANN (%) |",
                 "|---:|---:|---:|---:|"]
        for t in self.steps:
            acc = self.snn_accuracy[t]
            lines.append(f"| {t} | {100 * acc:.2f} | {100 * (acc - self.ann_accuracy):+.2f} | "
                         f"{100 * self.agreement[t]:.2f} |")
        return "\n".join(lines)

    __str__ = table


def evaluate(snn: SpikingNetwork, data, T: Steps = DEFAULT_STEPS, *, batch_size: int = 256,
             limit: int | None = None, progress: bool | None = None, chunk: int | None = None,
             distributed: bool | None = None) -> EvaluationReport:
    """Evaluate classification accuracy. ``data``: a DataLoader or iterable of ``(x, y)`` batches,
    a Dataset of ``(x, y)`` samples, or a pair of tensors ``(x, y)``. ``limit`` caps the samples.

    ``distributed``: split the (first ``limit``) samples between the processes of a torch.distributed
    group, each simulating its own shard, and sum the counts (``signgd.distributed``). ``None`` (the
    default): on when a process group is initialized; ``True``: require one; ``False``: this process
    evaluates all the data alone. When on, every rank must call ``evaluate`` with the same data and
    arguments, and every rank returns the same report, equal to one process's; ``data`` must then
    be a Dataset, a pair of tensors or an in-order DataLoader (the ranks split it by index).
    """
    steps = parse_steps(T)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    samples = Samples(data, batch_size, limit, distributed, steps)
    device, dtype = snn.placement
    n = ann_correct = 0
    snn_correct = dict.fromkeys(steps, 0)
    agree = dict.fromkeys(steps, 0)
    with tqdm(total=samples.total, desc="evaluate", unit="sample", disable=not samples.show(progress)) as bar:
        for x, y in samples:
            x, y = _labelled(x, y, device, dtype)
            ann_pred = snn.ann(x).argmax(-1)
            outs = snn.simulate(x, steps, chunk=chunk).outputs
            ann_correct += int((ann_pred == y).sum())
            for t in steps:
                pred = outs[t].argmax(-1)
                snn_correct[t] += int((pred == y).sum())
                agree[t] += int((pred == ann_pred).sum())
            n += x.shape[0]
            bar.update(x.shape[0])
    counts = samples.sum({"counts": torch.tensor([n, ann_correct, *snn_correct.values(), *agree.values()])})
    n, ann_correct, *rest = counts["counts"].tolist()
    return EvaluationReport.from_counts(n, ann_correct, dict(zip(steps, rest[:len(steps)])),
                                        dict(zip(steps, rest[len(steps):])))


class Samples:
    """The labelled batches this process evaluates (the first ``limit`` samples of ``data``, or its
    shard of them in a distributed run), their number, and how its totals become the global ones."""

    def __init__(self, data, batch_size: int, limit: int | None, distributed: bool | None, steps: list[int]):
        self.distributed = _dist.active(distributed)
        if self.distributed:
            n_all = _length(data, batch_size, limit)
            data, self.total = _dist.shard_data(data, batch_size, limit, _dist.rank(), _dist.world_size())
            _dist.check_same([n_all, len(steps), sum(steps), max(steps)],
                             "data or steps (samples, number of T, sum of T, largest T)")
            limit = None
        else:
            self.total = _length(data, batch_size, limit)
        self.data, self.batch_size, self.limit = data, batch_size, limit

    def __iter__(self):
        seen = 0
        for x, y in _batches(self.data, self.batch_size):
            if self.limit is not None:
                if seen >= self.limit:
                    break
                x, y = x[:self.limit - seen], y[:self.limit - seen]
            seen += len(x)
            yield x, y

    def show(self, progress: bool | None) -> bool:
        """Whether to draw a progress bar: as asked (default: stderr is a terminal), on rank 0 only."""
        if progress is None:
            progress = sys.stderr.isatty()
        return bool(progress) and _dist.is_main()

    def sum(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Totals over every rank (integers exactly); this process's own numbers when not distributed."""
        return _dist.all_reduce(tensors) if self.distributed else tensors

    def max(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _dist.all_reduce(tensors, op="max") if self.distributed else tensors


def _labelled(x, y, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the network's device and dtype, with its labels checked: class indices, one per sample."""
    x = x.to(device=device, dtype=dtype)
    y = torch.as_tensor(y, device=device)
    if y.numel() != x.shape[0] or y.is_floating_point():
        raise ValueError(f"labels must be class indices, one per sample: got {tuple(y.shape)} "
                         f"{y.dtype} for a batch of {x.shape[0]} inputs")
    return x, y.reshape(-1)


def _batches(data, batch_size):
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, torch.Tensor) for d in data):
        data = TensorDataset(*data)
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size)
    for item in data:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise ValueError("evaluate() needs labelled data: batches of (x, y)")
        yield item[0], item[1]


def _length(data, batch_size, limit):
    try:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            n = len(data[0])
        elif isinstance(data, DataLoader):
            n = len(data.dataset)
        else:
            n = len(data)
    except TypeError:
        return limit
    return min(n, limit) if limit is not None else n
