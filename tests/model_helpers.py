"""Small helpers the tests share: a model written as a forward function, a relative error, a small CNN, and the
report's energy count on one batch."""
from __future__ import annotations

import torch
from torch import nn


class Fn(nn.Module):
    """``fn(self, x)`` as a model, with ``mods`` as its submodules (``self.mods[i]``), so a test can
    write the op it checks directly in a forward function."""

    def __init__(self, fn, *mods):
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        return self.fn(self, x)


def relerr(a, b) -> float:
    """``||a - b|| / ||b||``."""
    return float((a - b).norm() / b.norm())


def small_cnn(seed=0):
    """Conv, BN (non-trivial running mean), ReLU, max pool, conv, ReLU, avg pool, linear on 8x8 inputs."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 2 * 2, 10))
    model[1].running_mean.uniform_(-0.2, 0.2)
    return model.eval()


def fast_count(snn, x, T, events=False):
    """The report's count (``EnergyProbe``) on one batch: ``{node: [T, 2]}`` (and the sparse neurons'
    events ``{layer: [T, 4]}`` with ``events``)."""
    from signgd.report import energy

    probe = energy.EnergyProbe(snn, T)
    probe.before_batch(snn, x)
    result = snn.simulate(x, list(range(1, T + 1)), probe=probe.layer)
    probe.after_batch(snn, x, result)
    ops = {node: probe.steps.ops[i] for i, node in enumerate(probe.nodes)}
    return (ops, probe.steps.events) if events else ops
