"""Remove the operations that are the identity in eval mode (Dropout, Identity, clone, stochastic depth)."""
from __future__ import annotations

import logging
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .nodes import node_arg, plain_module

log = logging.getLogger("signgd.graph")

_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout, F.alpha_dropout}
_IDENTITY_METHODS = {"clone", "detach"}


def _is_eval_stochastic_depth(node: fx.Node) -> bool:
    """torchvision's ``stochastic_depth(x, p, mode, training)`` with ``training=False``."""
    if node.op != "call_function" or getattr(node.target, "__name__", "") != "stochastic_depth":
        return False
    training = node_arg(node, 3, "training", True)
    return training is False


def remove_identities(gm: fx.GraphModule) -> int:
    """Replace every eval-mode identity by its input; returns how many were removed."""
    modules = dict(gm.named_modules())
    removed = 0
    for node in list(gm.graph.nodes):
        is_identity = (
            (node.op == "call_module" and plain_module(modules[node.target], _IDENTITY_MODULES))
            or (node.op == "call_function" and node.target in _IDENTITY_FUNCTIONS)
            or (node.op == "call_method" and node.target in _IDENTITY_METHODS)
            or _is_eval_stochastic_depth(node)
        )
        if is_identity and node.args and isinstance(node.args[0], fx.Node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    if removed:
        # No dead-code elimination here: it would drop in-place ops whose result is unused.
        gm.delete_all_unused_submodules()
        gm.recompile()
        log.debug("removed %d eval-mode identities (Dropout/Identity)", removed)
    return removed


# Pure operations on shapes and other plain values: safe to drop once nothing uses their result.
_PURE_FUNCTIONS = {getattr, operator.getitem, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
                   operator.ge, operator.and_, operator.or_, operator.not_, operator.floordiv, operator.mul,
                   operator.add, operator.sub, operator.mod}
_PURE_METHODS = {"size", "dim"}


def remove_assertions(gm: fx.GraphModule) -> int:
    """Drop ``torch._assert`` shape checks (timm's patch embedding, torchvision's ViT) and the shape
    arithmetic that only fed them. A SpikingNetwork checks its input shape itself, and a converted
    graph then holds only tensor work (and can be saved)."""
    removed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch._assert:
            gm.graph.erase_node(node)
            removed += 1
    changed = True
    while changed:
        changed = False
        for node in reversed(list(gm.graph.nodes)):
            pure = (node.op == "call_function" and node.target in _PURE_FUNCTIONS) or (
                node.op == "call_method" and node.target in _PURE_METHODS)
            if pure and not node.users and "tensor_meta" not in node.meta:
                gm.graph.erase_node(node)
                changed = True
    if removed:
        gm.recompile()
        log.debug("removed %d shape assertions", removed)
    return removed
