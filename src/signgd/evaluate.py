"""Accuracy of the ANN and of the SNN at each number of time steps, from one simulation per batch."""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

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
             limit: int | None = None, progress: bool | None = None, chunk: int | None = None
             ) -> EvaluationReport:
    """Evaluate classification accuracy. ``data``: a DataLoader or iterable of ``(x, y)`` batches,
    a Dataset of ``(x, y)`` samples, or a pair of tensors ``(x, y)``. ``limit`` caps the samples."""
    steps = parse_steps(T)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    device, dtype = snn.placement
    batches = _batches(data, batch_size)
    total = _length(data, batch_size, limit)
    if progress is None:
        progress = sys.stderr.isatty()
    n = ann_correct = 0
    snn_correct = dict.fromkeys(steps, 0)
    agree = dict.fromkeys(steps, 0)
    with tqdm(total=total, desc="evaluate", unit="sample", disable=not progress) as bar:
        for x, y in batches:
            if limit is not None and n >= limit:
                break
            if limit is not None:
                x, y = x[:limit - n], y[:limit - n]
            x = x.to(device=device, dtype=dtype)
            y = torch.as_tensor(y, device=device)
            if y.numel() != x.shape[0] or y.is_floating_point():
                raise ValueError(f"labels must be class indices, one per sample: got {tuple(y.shape)} "
                                 f"{y.dtype} for a batch of {x.shape[0]} inputs")
            y = y.reshape(-1)
            ann_pred = snn.ann(x).argmax(-1)
            outs = snn.simulate(x, steps, chunk=chunk).outputs
            ann_correct += int((ann_pred == y).sum())
            for t in steps:
                pred = outs[t].argmax(-1)
                snn_correct[t] += int((pred == y).sum())
                agree[t] += int((pred == ann_pred).sum())
            n += x.shape[0]
            bar.update(x.shape[0])
    if n == 0:
        raise ValueError("no samples to evaluate: the data is empty")
    return EvaluationReport(n, ann_correct / n, {t: snn_correct[t] / n for t in steps},
                            {t: agree[t] / n for t in steps})


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
