"""Remove the operations that are the identity in eval mode (Dropout, Identity, clone)."""
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


def remove_identities(gm: fx.GraphModule) -> int:
    """Replace every eval-mode identity by its input; returns how many were removed."""
    modules = dict(gm.named_modules())
    removed = 0
    for node in list(gm.graph.nodes):
        is_identity = (
            (node.op == "call_module" and isinstance(modules[node.target], _IDENTITY_MODULES))
            or (node.op == "call_function" and node.target in _IDENTITY_FUNCTIONS)
            or (node.op == "call_method" and node.target in _IDENTITY_METHODS)
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
