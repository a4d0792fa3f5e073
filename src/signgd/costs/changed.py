"""What an event-driven sparse neuron layer must do at a step, read off what changed: the outputs it
must evaluate again (those with an input that changed) and the neurons that must check their gap against
the threshold (``checked_mask``). The sparse neuron's cost (``op_costs``) is counted on them, by the fast
count and the literal one alike: these functions are the one rule both use."""
from __future__ import annotations

import torch

__all__ = ["changed_mask", "changed_outputs", "threshold_changes", "checked_mask", "windowed"]


def changed_mask(mod, patterns) -> torch.Tensor:
    """Bool mask of a neuron layer's outputs that have an input that changed (0/1 ``patterns``, one per
    input, batch first). Element-wise targets broadcast; a matmul or einsum output depends on a row and a
    column of its operands."""
    if mod.target in ("matmul", "einsum"):
        a, b = patterns
        if mod.target == "matmul":
            hit = torch.matmul(a, torch.ones_like(b)) + torch.matmul(torch.ones_like(a), b)
        else:
            eq = mod.params["equation"]
            hit = torch.einsum(eq, a, torch.ones_like(b)) + torch.einsum(eq, torch.ones_like(a), b)
    else:
        hit = sum(torch.broadcast_tensors(*patterns))
    return hit > 0


def changed_outputs(mod, patterns) -> float:
    """How many of a neuron layer's outputs have an input that changed (``changed_mask``)."""
    return float(changed_mask(mod, patterns).sum(dtype=torch.float64))


def threshold_changes(etas: torch.Tensor) -> torch.Tensor:
    """``[T]`` bool: the steps at which the sparse neurons' threshold ``tolerance * eta_t`` differs from the
    step before (and step 1). A power-of-two schedule with a floor changes it at a few steps only."""
    etas = etas.reshape(-1)
    changed = torch.ones(etas.shape, dtype=torch.bool)
    changed[1:] = etas[1:].cpu() != etas[:-1].cpu()
    return changed


def checked_mask(evaluated: torch.Tensor, spiked_before: torch.Tensor | None, threshold_changed: bool) -> torch.Tensor:
    """The neurons that must compare their gap with the threshold at a step: all of them when the threshold
    changed, else those whose gap changed since they last compared, i.e. whose target was evaluated again
    (``evaluated``) or that spiked at the step before (``spiked_before``, None at the first step). Any other
    neuron's gap and threshold are those it found inside the band: it stays silent without looking."""
    if threshold_changed or spiked_before is None:
        return torch.ones_like(evaluated, dtype=torch.bool)
    return evaluated | (spiked_before != 0)


def windowed(evaluated: torch.Tensor, checked: torch.Tensor, t: int, window: tuple[int, int] | None):
    """``(evaluated, checked)`` of a layer at step ``t`` (1-based) under its window ``(first, last)``
    (``convert(window=)``, ``signgd.windows``): outside it the layer neither evaluates nor checks (it cannot fire,
    and its window is one per layer, known in advance); at its first step every neuron evaluates its target and
    checks its gap once, whatever changed before; within it, what changed says, as without windows."""
    if window is None or window[0] < t <= window[1]:
        return evaluated, checked
    if t == window[0]:
        return torch.ones_like(evaluated, dtype=torch.bool), torch.ones_like(checked, dtype=torch.bool)
    return torch.zeros_like(evaluated, dtype=torch.bool), torch.zeros_like(checked, dtype=torch.bool)
