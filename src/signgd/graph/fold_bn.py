"""Fold BatchNorm into the convolution or linear layer that feeds it.

After folding, the conv/linear computes exactly what conv + BN computed in eval mode (up to float
rounding), with one affine op less per step of the simulation. A BatchNorm that follows anything
else stays as it is: in eval mode it is an affine op like any other.
"""
from __future__ import annotations

import logging
from collections import Counter

import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from . import spellings
from .nodes import plain_module

log = logging.getLogger("signgd.graph")


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold every BN whose input is a conv/linear used by nothing else; returns how many folded.

    Skipped (the BN stays as an affine op): a conv/linear module called from several places (the
    fold would change every call), a BN without running statistics, and Linear + BatchNorm1d on
    inputs of more than two dimensions (BN normalizes dim 1, the fold would scale the last one;
    shapes come from ``node.meta['tensor_meta']`` when ShapeProp ran, and without them this fold
    is not attempted).
    """
    modules = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not plain_module(modules[node.target], spellings.BATCH_NORM_MODULES):
            continue
        bn = modules[node.target]
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                and calls[src.target] == 1):
            continue
        layer = modules[src.target]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        if plain_module(layer, spellings.CONV_MODULES):
            fused = fuse_conv_bn_eval(layer, bn)
        elif plain_module(layer, spellings.LINEAR_MODULES) and isinstance(bn, nn.BatchNorm1d) and _is_2d(src):
            fused = fuse_linear_bn_eval(layer, bn)
        else:
            continue
        gm.add_submodule(src.target, fused)  # replaces the conv/linear
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
        log.debug("folded %s into %s", node.target, src.target)
    if folded:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return folded


def _is_2d(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and len(meta.shape) == 2
