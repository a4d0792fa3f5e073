"""Layer windows (``convert(window=k)``): each neuron layer of a graded network works during ``k`` steps of its own,
one layer after the other, like a wave through the network.

Why: with every layer running at every step, a neuron's target keeps moving while the layers before it settle, and
the neuron follows each refinement with a spike and evaluates its target again at every step (the Fashion-MNIST
Mixer: 4.2 spikes and 5 evaluations per neuron in 5 steps, docs/graded_bound.md). With windows a layer starts only
when every neuron layer it depends on has finished, so it evaluates its target once, on inputs that no longer move,
and its graded spikes (each at least halving its gap) reach that fixed target in a few spikes.

A neuron layer's depth is the largest number of neuron layers on a path from the input to it, itself included. The
layer of depth ``d`` may spike at steps ``first = 1 + (d - 1) (k - 1)`` through ``last = first + k - 1``: its window
begins on the last step of the layers one level before it, whose spikes of that step it has already received (the
simulator propagates a step through the whole graph in order). Outside its window it is silent and evaluates
nothing: before it, its input integrates what arrives; after it, nothing upstream moves any more. The readout is final
at step ``settled_step = 1 + depth (k - 1)``; later steps cost nothing and change nothing.

The silence is a threshold of ``+inf`` outside the window (``kernels.reference.gate``), so the sparse scan and its C
kernel run unchanged, and the cost model's one rule (``costs.changed.windowed``) says what such a layer does: one
evaluation of every target and one check at the first step of its window, events within it, nothing outside.
"""
from __future__ import annotations

import torch.fx as fx

from .neurons import SpikingNeuron

__all__ = ["check_window", "neuron_depths", "neuron_windows", "settled_step"]


def check_window(window, dynamics: str, encoding: str) -> int | None:
    """``window`` as an int (None: no windows), or a one-line ValueError naming the fix."""
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a whole number of steps >= 1 per neuron layer (e.g. 4), got {window!r}")
    if dynamics != "graded":
        raise ValueError(f"window needs graded neurons, whose spikes reach a fixed target in a few steps; use "
                         f"dynamics='graded' (got dynamics={dynamics!r}) or leave window out")
    if encoding != "analog":
        raise ValueError(f"window needs an input that is whole at step 1 (encoding='analog'): the first layer's window "
                         f"ends before a {encoding!r} input has finished arriving; use encoding='analog'")
    return int(window)


def neuron_depths(gm: fx.GraphModule) -> dict[str, int]:
    """Each neuron layer's depth (``{module name: depth}``, 1 for the first layers): the most neuron layers on a path
    from the input to it, itself included."""
    modules = dict(gm.named_modules())
    depth: dict[fx.Node, int] = {}
    out: dict[str, int] = {}
    for n in gm.graph.nodes:
        d = max((depth[a] for a in n.all_input_nodes), default=0)
        if n.op == "call_module" and isinstance(modules[n.target], SpikingNeuron):
            d += 1
            out[n.target] = d
        depth[n] = d
    return out


def neuron_windows(gm: fx.GraphModule, window: int) -> dict[str, tuple[int, int]]:
    """``{neuron layer: (first, last)}``: the steps (1-based, inclusive) at which each layer may spike."""
    firsts = {name: 1 + (d - 1) * (window - 1) for name, d in neuron_depths(gm).items()}
    return {name: (first, first + window - 1) for name, first in firsts.items()}


def settled_step(gm: fx.GraphModule, window: int) -> int:
    """The step at which the last layer's window ends (``1 + depth (window - 1)``): the readout does not change
    after it."""
    return max((last for _, last in neuron_windows(gm, window).values()), default=1)
