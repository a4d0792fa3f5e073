"""Remove the operations that are the identity in eval mode (Dropout, Identity, clone, stochastic depth)."""
from __future__ import annotations

import logging

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("signgd.graph")

_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_IDENTITY_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.dropout, F.alpha_dropout}
_IDENTITY_METHODS = {"clone", "detach"}


def _is_eval_stochastic_depth(node: fx.Node) -> bool:
    """torchvision's ``stochastic_depth(x, p, mode, training)`` with ``training=False``."""
    if node.op != "call_function" or getattr(node.target, "__name__", "") != "stochastic_depth":
        return False
    training = node.args[3] if len(node.args) > 3 else node.kwargs.get("training", True)
    return training is False


def remove_identities(gm: fx.GraphModule) -> int:
    """Replace every eval-mode identity by its input; returns how many were removed."""
    modules = dict(gm.named_modules())
    removed = 0
    for node in list(gm.graph.nodes):
        is_identity = (
            (node.op == "call_module" and isinstance(modules[node.target], _IDENTITY_MODULES))
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
