"""Decompose max pooling into a binary tree of 2-input max neurons, rows then columns.

A spiking neuron cannot report a max of its inputs' *spikes*; a signGD neuron can track
``max(a, b)`` of its two input estimates. A k-wide window becomes ceil(log2 k) levels of pairwise
max neurons (an odd element out passes up a level unchanged), first over the rows of a window
(height, as the reference code does), then over its columns (width). For k <= 3 this is exactly the
reference code's chain of max neurons; for larger k the balanced tree is shallower. Padding uses a
very negative constant, so it never wins.
"""
from __future__ import annotations

import logging

import torch
import torch.fx as fx

from ..errors import UnsupportedOperationError
from ..neurons import SpikingNeuron
from . import ops, spellings
from .nodes import plain_module
from .provenance import inserting_for

log = logging.getLogger("signgd.graph")


def _pair(v, n):
    if isinstance(v, (tuple, list)):
        return tuple(int(a) for a in v)
    return (int(v),) * n


def _pool_params(node: fx.Node, modules) -> tuple[int, dict] | None:
    if node.op == "call_module" and plain_module(modules[node.target], tuple(spellings.MAX_POOL_MODULES)):
        m = modules[node.target]
        nd = next(n for cls, n in spellings.MAX_POOL_MODULES.items() if isinstance(m, cls))
        p = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                 ceil_mode=m.ceil_mode, return_indices=m.return_indices)
    elif node.op == "call_function" and node.target in spellings.MAX_POOL_FUNCTIONS:
        nd = spellings.MAX_POOL_FUNCTIONS[node.target]
        names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
        p = dict(zip(names, node.args[1:]))
        p.update({k: v for k, v in node.kwargs.items() if k in names})
    else:
        return None
    k = _pair(p["kernel_size"], nd)
    stride = p.get("stride")
    return nd, dict(kernel=k, stride=_pair(stride, nd) if stride not in (None, [], ()) else k,
                    padding=_pair(p.get("padding", 0), nd), dilation=_pair(p.get("dilation", 1), nd),
                    ceil_mode=bool(p.get("ceil_mode", False)),
                    return_indices=bool(p.get("return_indices", False)))


def decompose_maxpool(gm: fx.GraphModule, pad_value: float = -200.0) -> list[str]:
    """Replace every MaxPool1d/2d by a tree of max neurons; returns the new neuron names."""
    modules = dict(gm.named_modules())
    created: list[str] = []
    for node in list(gm.graph.nodes):
        found = _pool_params(node, modules)
        if found is None:
            continue
        nd, p = found
        if p["return_indices"]:
            raise UnsupportedOperationError(
                f"node {node.name!r}: max pooling with return_indices=True has no spiking equivalent; "
                f"use return_indices=False", [(node.name, node.op, str(node.target))])
        graph = gm.graph
        before = len(created)
        x = node.args[0]
        # Rows first (height, dim -2), then columns (width, dim -1); 1-D pooling: width only.
        for i in range(nd):  # index into the (h, w) or (w,) parameter tuples
            dim = i - nd  # -2 (height) or -1 (width)
            with inserting_for(node, "" if nd == 1 else "rows" if dim == -2 else "columns"):
                u = graph.call_function(ops.pool_windows, (x, dim, p["kernel"][i], p["stride"][i],
                                                           p["padding"][i], p["dilation"][i],
                                                           p["ceil_mode"], pad_value))
                x = max_tree(gm, u, p["kernel"][i], f"{node.name}_{'hw'[dim]}", created)
        node.replace_all_uses_with(x)
        graph.erase_node(node)
        log.debug("max pooling %s -> %d layers of max neurons", node.name, len(created) - before)
    if created:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return created


def max_tree(gm: fx.GraphModule, u: fx.Node, k: int, prefix: str, created: list[str]) -> fx.Node:
    """The max over the last dim (of size ``k``) of ``u``, dropped: levels of 2-input max neurons
    ``neurons.<prefix><level>`` (their names appended to ``created``). Call inside ``inserting_before``."""
    graph = gm.graph
    level = 0
    while k > 1:
        m = k // 2
        a = graph.call_function(ops.window_slice, (u, 0, 2 * m, 2))
        b = graph.call_function(ops.window_slice, (u, 1, 2 * m, 2))
        name = f"neurons.{prefix}{level}"
        gm.add_submodule(name, SpikingNeuron("max"))
        created.append(name)
        r = graph.call_module(name, (a, b))
        if k % 2:
            rest = graph.call_function(ops.window_slice, (u, 2 * m, k, 1))
            r = graph.call_function(torch.cat, ([r, rest], -1))
        u, k, level = r, m + k % 2, level + 1
    return graph.call_function(ops.squeeze_last, (u,))
