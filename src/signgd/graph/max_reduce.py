"""Decompose maxima over a dimension (``x.amax(dim)``, ``x.max(dim).values``) and element-wise maxima of
two activations (``torch.maximum(a, b)``) into 2-input max neurons (hiera, volo, timm's max pooling heads).

A max over a dim of size k is the same balanced tree of pairwise max neurons as one max-pooling
window (``graph/maxpool.py``'s ``max_tree``): the dim is moved last, reduced level by level, and put
back (kept as size 1 with ``keepdim``). Several dims are reduced one after the other. A max over
the batch dim, over every dim, or a use of ``max(dim)``'s indices (an argmax) has no spiking form
and is refused by name.
"""
from __future__ import annotations

import logging
import operator

import torch.fx as fx

from ..errors import UnsupportedOperationError
from ..neurons import SpikingNeuron
from . import spellings
from .deps import depends_on_input
from .maxpool import max_tree
from .neuronize import replace_by_neuron
from .nodes import node_arg, where

log = logging.getLogger("signgd.graph")


def _refuse(node: fx.Node, why: str):
    what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "max")
    raise UnsupportedOperationError(f"{what} in {where(node)}: {why}", [(node.name, node.op, str(node.target))])


def _spelling(node: fx.Node):
    """``(x, other, dim, keepdim, pair)`` of a max spelling, or None. ``other``: the second tensor of an
    element-wise max; ``pair``: the call returns (values, indices)."""
    if node.op == "call_function" and node.target in spellings.MAX_REDUCE_FUNCTIONS:
        pair = spellings.MAX_REDUCE_FUNCTIONS[node.target]
    elif node.op == "call_method" and node.target in spellings.MAX_REDUCE_METHODS:
        pair = spellings.MAX_REDUCE_METHODS[node.target]
    elif node.op == "call_function" and node.target in spellings.ELEMENTWISE_MAX_FUNCTIONS:
        return node_arg(node, 0, "input"), node_arg(node, 1, "other"), None, False, False
    else:
        return None
    x, dim = node_arg(node, 0, "input"), node_arg(node, 1, "dim")
    if pair and (isinstance(dim, fx.Node) or "other" in node.kwargs):  # torch.max(a, b): element-wise
        return x, node_arg(node, 1, "other"), None, False, False
    return x, None, dim, bool(node_arg(node, 2, "keepdim", False)), pair and dim is not None


def _reduce(gm: fx.GraphModule, node: fx.Node, x: fx.Node, dim, keepdim: bool, created: list[str]) -> fx.Node:
    meta = x.meta.get("tensor_meta") or node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        _refuse(node, "the input's shape is unknown; please report it with the model")
    shape = tuple(meta.shape)
    if dim is None or dim == () or dim == []:
        _refuse(node, "a max over every dim mixes the samples of a batch; give dim=... (not the batch dim 0)")
    if isinstance(dim, fx.Node):
        _refuse(node, "dim must be a constant of the model")
    dims = sorted({d % len(shape) for d in ((dim,) if isinstance(dim, int) else dim)})
    if 0 in dims:
        _refuse(node, "a max over the batch dim (0) mixes the samples of a batch")
    g, u = gm.graph, x
    for d in dims:
        last = g.call_method("movedim", (u, d, -1))
        r = max_tree(gm, last, shape[d], f"{node.name}_d{d}_", created)
        u = g.call_method("unsqueeze", (r, d))
    return u if keepdim else g.call_method("squeeze", (u, tuple(dims)))


def _values_only(node: fx.Node) -> list[fx.Node]:
    """The users of a ``max(dim)`` pair that read its values; refuses a use of the indices."""
    users = []
    for user in node.users:
        values = (user.op == "call_function" and ((user.target is operator.getitem and user.args[1] == 0)
                                                  or (user.target is getattr and user.args[1] == "values")))
        if not values:
            _refuse(node, "max(dim)'s indices (an argmax) have no spiking equivalent; use its values or amax")
        users.append(user)
    return users


def decompose_max_reductions(gm: fx.GraphModule) -> list[str]:
    """Replace every max over a dim and element-wise max of two activations; returns the new neurons."""
    dep = depends_on_input(gm)
    created: list[str] = []
    for node in list(gm.graph.nodes):
        found = _spelling(node)
        if found is None:
            continue
        x, other, dim, keepdim, pair = found
        if other is not None:  # element-wise: a neuron when both operands are activations
            if (x in dep) != (other in dep):
                _refuse(node, "a maximum of an activation and a constant has no neuron; write max(x, c) as "
                              "c + relu(x - c)")
            if x in dep and other in dep:
                name = f"neurons.{node.name}"
                dep.add(replace_by_neuron(gm, node, name, SpikingNeuron("max"), (x, other), False))
                created.append(name)
            continue
        if x not in dep:
            continue
        readers = _values_only(node) if pair else [node]
        with gm.graph.inserting_before(node):
            out = _reduce(gm, node, x, dim, keepdim, created)
        dep.add(out)
        for reader in readers:
            reader.replace_all_uses_with(out)
            if reader is not node:
                gm.graph.erase_node(reader)
        gm.graph.erase_node(node)
    if created:
        gm.delete_all_unused_submodules()
        gm.recompile()
        log.debug("decomposed maxima over dims into %d layers of 2-input max neurons", len(created))
    return created
