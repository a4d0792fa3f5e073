"""Decompose LayerNorm and RMSNorm into affine parts and neurons (DESIGN.md, section 1).

``LayerNorm(x) = w * (x - m) / sqrt(var + eps) + b`` over the trailing ``normalized_shape``:

    m = mean(x)            affine          c = x - m                affine
    q = square(c)          unary neuron    v = mean(q) + eps        affine
    n = divide_sqrt(c, v)  2-input neuron  out = w * n + b          affine

``divide_sqrt`` fires on ``c / sqrt(v)`` (the comparison ``sqrt(v) * y >= c`` of the paper is the
same test for ``v > 0``). RMSNorm is the same without the centering. The decomposition emits plain
torch calls (``torch.square``, ``signgd.targets.divide_sqrt``); the neuron pass turns them into
neurons like any other nonlinearity. Covered spellings: ``nn.LayerNorm``, ``F.layer_norm`` /
``torch.layer_norm`` over any trailing shape (timm's channels-first ``LayerNorm2d`` traces to a
permute, ``F.layer_norm`` and a permute back), ``nn.RMSNorm`` and ``F.rms_norm``.
"""
from __future__ import annotations

import logging
import operator

import torch
import torch.fx as fx
from torch import nn

from ..targets import divide_sqrt
from . import spellings
from .deps import depends_on_input
from .nodes import node_arg, plain_module

log = logging.getLogger("signgd.graph")


def _spec(node: fx.Node, modules: dict[str, nn.Module]):
    """``(input, normalized_shape, weight, bias, eps, centered)`` of a norm node, or None."""
    if node.op == "call_module":
        mod = modules[node.target]
        if plain_module(mod, spellings.LAYER_NORM_MODULES):
            centered = True
        elif plain_module(mod, spellings.RMS_NORM_MODULES):
            centered = False
        else:
            return None
        w = _param(node, "weight") if getattr(mod, "weight", None) is not None else None
        b = _param(node, "bias") if getattr(mod, "bias", None) is not None else None
        return node_arg(node, 0, "input"), tuple(mod.normalized_shape), w, b, mod.eps, centered
    if node.op != "call_function":
        return None
    if node.target in spellings.LAYER_NORM_FUNCTIONS:
        return (node_arg(node, 0, "input"), node_arg(node, 1, "normalized_shape"), node_arg(node, 2, "weight"),
                node_arg(node, 3, "bias"), node_arg(node, 4, "eps", 1e-5), True)
    if node.target in spellings.RMS_NORM_FUNCTIONS:
        return (node_arg(node, 0, "input"), node_arg(node, 1, "normalized_shape"), node_arg(node, 2, "weight"),
                None, node_arg(node, 3, "eps"), False)
    return None


def _param(node: fx.Node, attr: str) -> fx.Node:
    with node.graph.inserting_before(node):
        return node.graph.get_attr(f"{node.target}.{attr}")


def decompose_norms(gm: fx.GraphModule) -> int:
    """Replace every LayerNorm/RMSNorm of an activation by its decomposition; returns how many."""
    modules = dict(gm.named_modules())
    dep = depends_on_input(gm)
    count = 0
    for node in list(gm.graph.nodes):
        spec = _spec(node, modules)
        if spec is None:
            continue
        x, shape, weight, bias, eps, centered = spec
        if x not in dep:
            continue  # a norm of constants stays as it is
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if eps is None:  # RMSNorm's default: the dtype's machine epsilon
            eps = torch.finfo(node.meta["tensor_meta"].dtype).eps if "tensor_meta" in node.meta else \
                torch.finfo(torch.get_default_dtype()).eps
        dims = tuple(range(-len(shape), 0))
        g = gm.graph
        with g.inserting_before(node):
            c = x
            if centered:
                m = g.call_method("mean", (x, dims), {"keepdim": True})
                c = g.call_function(operator.sub, (x, m))
            q = g.call_function(torch.square, (c,))
            var = g.call_method("mean", (q, dims), {"keepdim": True})
            v = g.call_function(operator.add, (var, float(eps)))
            out = g.call_function(divide_sqrt, (c, v, float(eps)))
            if weight is not None:
                out = g.call_function(operator.mul, (out, weight))
            if bias is not None:
                out = g.call_function(operator.add, (out, bias))
        # The new nodes carry activations: a norm that reads this one (LayerNorm after LayerNorm)
        # must see its input as one.
        dep.add(out)
        node.replace_all_uses_with(out)
        g.erase_node(node)
        count += 1
    if count:
        gm.recompile()
        log.debug("decomposed %d LayerNorm/RMSNorm into square and divide_sqrt neurons", count)
    return count
