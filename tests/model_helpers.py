"""Small helpers the op tests share: a model written as a forward function, and a relative error."""
from __future__ import annotations

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
