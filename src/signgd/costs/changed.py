"""Which outputs of a neuron layer an event-driven neuron must evaluate again: those with an input that
changed. The sparse neuron's cost (``op_costs``) is counted on them, by the fast count and the literal
one alike."""
from __future__ import annotations

import torch

__all__ = ["changed_outputs"]


def changed_outputs(mod, patterns) -> float:
    """How many of a neuron layer's outputs have an input that changed (0/1 ``patterns``, one per input).
    Element-wise targets broadcast; a matmul or einsum output depends on a row and a column of its
    operands."""
    if mod.target in ("matmul", "einsum"):
        a, b = patterns
        if mod.target == "matmul":
            hit = torch.matmul(a, torch.ones_like(b)) + torch.matmul(torch.ones_like(a), b)
        else:
            eq = mod.params["equation"]
            hit = torch.einsum(eq, a, torch.ones_like(b)) + torch.einsum(eq, torch.ones_like(a), b)
    else:
        hit = sum(torch.broadcast_tensors(*patterns))
    return float((hit > 0).sum(dtype=torch.float64))
