"""Accuracy of the ANN and of the SNN at each number of time steps, from one simulation per batch."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import runner
from .network import SpikingNetwork, Steps

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
    counts = runner.run(snn, data, T, batch_size=batch_size, limit=limit, progress=progress, chunk=chunk,
                        distributed=distributed)
    return EvaluationReport.from_counts(*counts)
