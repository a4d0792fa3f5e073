"""Turn eval-mode functional batch norms (``F.batch_norm``, ``torch.batch_norm``) into BatchNorm modules.

timm's ``BatchNormAct2d`` and its relatives call ``F.batch_norm`` themselves instead of holding an
``nn.BatchNorm2d``. In eval mode (``training=False`` and running statistics given) that call is the
affine map ``(x - mean) / sqrt(var + eps) * w + b`` per channel, exactly what an eval-mode
``nn.BatchNormNd`` computes. Rewriting the call as such a module lets the one BN rule apply:
``graph/fold_bn.py`` folds it into the conv that feeds it, and one that follows anything else stays
as an affine module that the check, the energy count and save/load already know.

A call that normalizes over the batch (``training=True``, or no running statistics) or whose
statistics are computed at run time is left as it is; ``graph/check.py`` then names it and says why.
"""
from __future__ import annotations

import logging

import torch
import torch.fx as fx
from torch import nn

from . import spellings
from .nodes import node_arg

log = logging.getLogger("signgd.graph")

_BN_CLASSES = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}  # input rank -> class


def batchnorm_arguments(node: fx.Node) -> dict | None:
    """The arguments of a functional batch norm call by name, or None for any other node."""
    if node.op != "call_function" or node.target not in spellings.BATCH_NORM_FUNCTIONS:
        return None
    names, defaults = spellings.BATCH_NORM_FUNCTIONS[node.target]
    return {k: node_arg(node, i, k, defaults.get(k)) for i, k in enumerate(names)}


def why_not_affine(args: dict) -> str | None:
    """Why a functional batch norm is not an eval-mode affine map, or None when it is."""
    if args["training"] is not False or args["running_mean"] is None or args["running_var"] is None:
        return ("it normalizes over the batch (training=True or no running statistics); convert a model "
                "whose batch norms keep running statistics (track_running_stats=True)")
    for key in ("running_mean", "running_var", "weight", "bias", "eps"):
        value = args[key]
        if isinstance(value, fx.Node) and value.op != "get_attr":
            return f"its {key} is computed in forward(); keep it as a parameter or buffer of the module"
    return None


def _fetch(gm: fx.GraphModule, value):
    if isinstance(value, fx.Node):
        obj = gm
        for part in value.target.split("."):
            obj = getattr(obj, part)
        return obj
    return value


def batchnorm_calls_to_modules(gm: fx.GraphModule) -> int:
    """Replace every eval-mode functional batch norm by an ``nn.BatchNormNd`` module; returns how many."""
    count = 0
    for node in list(gm.graph.nodes):
        args = batchnorm_arguments(node)
        if args is None or why_not_affine(args) is not None:
            continue
        meta = node.meta.get("tensor_meta")
        cls = _BN_CLASSES.get(len(meta.shape)) if meta is not None else None
        if cls is None:
            continue  # no shape known, or a rank BatchNorm modules do not take: the check names it
        mean, var = _fetch(gm, args["running_mean"]), _fetch(gm, args["running_var"])
        weight, bias = _fetch(gm, args["weight"]), _fetch(gm, args["bias"])
        bn = cls(mean.numel(), eps=float(args["eps"]), affine=weight is not None or bias is not None,
                 device=mean.device, dtype=mean.dtype).eval()
        with torch.no_grad():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            if bn.affine:
                bn.weight.copy_(weight if weight is not None else torch.ones_like(mean))
                bn.bias.copy_(bias if bias is not None else torch.zeros_like(mean))
        name = f"batchnorms.{node.name}"
        gm.add_submodule(name, bn)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (args["input"],))
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        count += 1
    if count:
        for node in list(gm.graph.nodes):
            if node.op == "get_attr" and not node.users:
                gm.graph.erase_node(node)
        gm.recompile()
        log.debug("made %d functional batch norms BatchNorm modules", count)
    return count
