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
        """A Markdown table: one row per T (``accuracy_table``, the command's table too)."""
        return accuracy_table(self.n, self.ann_accuracy, self.steps, [self.snn_accuracy[t] for t in self.steps],
                              [self.agreement[t] for t in self.steps])

    __str__ = table


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def accuracy_table(n: int, ann: float | None, steps: list[int], snn: list, agreement: list,
                   extra: dict[str, list[str]] | None = None, note: str = "") -> str:
    """The accuracy table, one row per T, of ``EvaluationReport.table`` and the report's ``summary``:
    the ANN's accuracy (``note`` added to that line), then per T the SNN's accuracy, its gap to the
    ANN and its agreement with the ANN; ``extra`` adds columns (a name and a cell per T). Values are
    fractions; None (a report's NaN) prints as n/a."""
    extra = extra or {}
    head = ["T", "SNN accuracy (%)", "gap to ANN (points)", "agreement with ANN (%)", *extra]
    lines = [f"ANN accuracy: {_pct(ann)}% ({n} samples){note}", "", f"| {' | '.join(head)} |",
             "|" + "---:|" * len(head)]
    for i, t in enumerate(steps):
        gap = "n/a" if snn[i] is None or ann is None else f"{100 * (snn[i] - ann):+.2f}"
        cells = [str(t), _pct(snn[i]), gap, _pct(agreement[i]), *(column[i] for column in extra.values())]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


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
