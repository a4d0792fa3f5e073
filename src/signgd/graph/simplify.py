"""Remove the operations that are the identity in eval mode (Dropout, Identity, clone, stochastic depth)."""
from __future__ import annotations

import logging

import torch.fx as fx

from . import spellings
from .nodes import node_arg, plain_module

log = logging.getLogger("signgd.graph")


def _is_eval_stochastic_depth(node: fx.Node) -> bool:
    """torchvision's ``stochastic_depth(x, p, mode, training)`` with ``training=False``."""
    if node.op != "call_function" or getattr(node.target, "__name__", "") != spellings.STOCHASTIC_DEPTH:
        return False
    training = node_arg(node, 3, "training", True)
    return training is False


def remove_identities(gm: fx.GraphModule) -> int:
    """Replace every eval-mode identity by its input; returns how many were removed."""
    modules = dict(gm.named_modules())
    removed = 0
    for node in list(gm.graph.nodes):
        is_identity = (
            (node.op == "call_module" and plain_module(modules[node.target], spellings.IDENTITY_MODULES))
            or (node.op == "call_function" and node.target in spellings.IDENTITY_FUNCTIONS)
            or (node.op == "call_method" and node.target in spellings.IDENTITY_METHODS)
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


def remove_assertions(gm: fx.GraphModule) -> int:
    """Drop ``torch._assert`` shape checks (timm's patch embedding, torchvision's ViT) and the shape
    arithmetic that only fed them. A SpikingNetwork checks its input shape itself, and a converted
    graph then holds only tensor work (and can be saved)."""
    removed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in spellings.ASSERT_FUNCTIONS:
            gm.graph.erase_node(node)
            removed += 1
    changed = True
    while changed:
        changed = False
        for node in reversed(list(gm.graph.nodes)):
            # Pure operations on shapes and other plain values: dropped once nothing uses them.
            pure = (node.op == "call_function" and node.target in spellings.SHAPE_ARITHMETIC_FUNCTIONS) or (
                node.op == "call_method" and node.target in spellings.SHAPE_ARITHMETIC_METHODS)
            if pure and not node.users and "tensor_meta" not in node.meta:
                gm.graph.erase_node(node)
                changed = True
    if removed:
        gm.recompile()
        log.debug("removed %d shape assertions", removed)
    return removed
