"""Decompose LayerNorm, RMSNorm and GroupNorm into affine parts and neurons (DESIGN.md, section 1).

``LayerNorm(x) = w * (x - m) / sqrt(var + eps) + b`` over the trailing ``normalized_shape``:

    m = mean(x)            affine          c = x - m                affine
    q = square(c)          unary neuron    v = mean(q) + eps        affine
    n = divide_sqrt(c, v)  2-input neuron  out = w * n + b          affine

``divide_sqrt`` fires on ``c / sqrt(v)`` (the comparison ``sqrt(v) * y >= c`` of the paper is the
same test for ``v > 0``). RMSNorm is the same without the centering. GroupNorm is LayerNorm over
each group of channels (``x.unflatten(1, (G, C // G))``, normalized over every dim after the group,
flattened back, then ``* w + b`` per channel), with no reshape that names the batch size. The
decomposition emits plain torch calls (``torch.square``, ``signgd.targets.divide_sqrt``); the neuron
pass turns them into neurons like any other nonlinearity. Covered spellings: ``nn.LayerNorm``,
``F.layer_norm`` / ``torch.layer_norm`` over any trailing shape (timm's channels-first
``LayerNorm2d`` traces to a permute, ``F.layer_norm`` and a permute back), ``nn.RMSNorm`` and
``F.rms_norm``, ``nn.GroupNorm`` and ``F.group_norm`` / ``torch.group_norm`` (timm's ``GroupNorm``
and ``GroupNorm1`` trace to ``F.group_norm``).
"""
from __future__ import annotations

import logging
import operator

import torch
import torch.fx as fx
from torch import nn

from ..errors import UnsupportedOperationError
from ..targets import divide_sqrt
from . import spellings
from .deps import depends_on_input
from .nodes import node_arg, plain_module
from .provenance import inserting_for, what

log = logging.getLogger("signgd.graph")


def _spec(node: fx.Node, modules: dict[str, nn.Module]) -> dict | None:
    """The norm a node computes (input, normalized_shape or groups, weight, bias, eps, centered), or None."""
    if node.op == "call_module":
        mod = modules[node.target]
        if plain_module(mod, spellings.LAYER_NORM_MODULES + spellings.RMS_NORM_MODULES):
            spec = dict(shape=tuple(mod.normalized_shape), groups=None,
                        centered=plain_module(mod, spellings.LAYER_NORM_MODULES))
        elif plain_module(mod, spellings.GROUP_NORM_MODULES):
            spec = dict(shape=None, groups=mod.num_groups, centered=True)
        else:
            return None
        w = _param(node, "weight") if getattr(mod, "weight", None) is not None else None
        b = _param(node, "bias") if getattr(mod, "bias", None) is not None else None
        return dict(spec, x=node_arg(node, 0, "input"), weight=w, bias=b, eps=mod.eps)
    if node.op != "call_function":
        return None
    x = node_arg(node, 0, "input")
    if node.target in spellings.LAYER_NORM_FUNCTIONS:
        return dict(x=x, shape=node_arg(node, 1, "normalized_shape"), groups=None, weight=node_arg(node, 2, "weight"),
                    bias=node_arg(node, 3, "bias"), eps=node_arg(node, 4, "eps", 1e-5), centered=True)
    if node.target in spellings.RMS_NORM_FUNCTIONS:
        return dict(x=x, shape=node_arg(node, 1, "normalized_shape"), groups=None, weight=node_arg(node, 2, "weight"),
                    bias=None, eps=node_arg(node, 3, "eps"), centered=False)
    if node.target in spellings.GROUP_NORM_FUNCTIONS:
        return dict(x=x, shape=None, groups=node_arg(node, 1, "num_groups"), weight=node_arg(node, 2, "weight"),
                    bias=node_arg(node, 3, "bias"), eps=node_arg(node, 4, "eps", 1e-5), centered=True)
    return None


def _param(node: fx.Node, attr: str) -> fx.Node:
    with node.graph.inserting_before(node):
        return node.graph.get_attr(f"{node.target}.{attr}")


def normalized(g: fx.Graph, x: fx.Node, dims: tuple[int, ...], eps: float, centered: bool) -> fx.Node:
    """Emit ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps)`` over ``dims`` (uncentered without the
    mean): the square and divide_sqrt neurons of every norm. Call inside ``g.inserting_before``."""
    c = x
    if centered:
        m = g.call_method("mean", (x, dims), {"keepdim": True})
        c = g.call_function(operator.sub, (x, m))
    q = g.call_function(torch.square, (c,))
    var = g.call_method("mean", (q, dims), {"keepdim": True})
    v = g.call_function(operator.add, (var, float(eps)))
    return g.call_function(divide_sqrt, (c, v, float(eps)))


def _grouped(g: fx.Graph, x: fx.Node, groups, eps: float, rank: int) -> fx.Node:
    """GroupNorm without its affine part: LayerNorm over each group of channels."""
    if isinstance(groups, fx.Node) or rank < 2:
        raise UnsupportedOperationError(
            f"group norm of {x.name!r}: needs a constant num_groups and an input [N, C, ...] (got {groups!r}, "
            f"{rank} dims)", [(x.name, "call_function", "group_norm")])
    xg = g.call_method("unflatten", (x, 1, (int(groups), -1)))
    out = normalized(g, xg, tuple(range(-(rank - 1), 0)), eps, True)
    return g.call_method("flatten", (out, 1, 2))


def _per_channel(g: fx.Graph, p: fx.Node, rank: int) -> fx.Node:
    """A GroupNorm's per-channel weight or bias shaped to broadcast over ``[N, C, ...]``."""
    return g.call_method("reshape", (p, (-1,) + (1,) * (rank - 2)))


def decompose_norms(gm: fx.GraphModule) -> int:
    """Replace every LayerNorm/RMSNorm/GroupNorm of an activation by its decomposition; returns how many."""
    modules = dict(gm.named_modules())
    dep = depends_on_input(gm)
    count = 0
    for node in list(gm.graph.nodes):
        spec = _spec(node, modules)
        if spec is None:
            continue
        x, eps = spec["x"], spec["eps"]
        if x not in dep:
            continue  # a norm of constants stays as it is
        if eps is None:  # RMSNorm's default: the dtype's machine epsilon
            eps = torch.finfo(node.meta["tensor_meta"].dtype).eps if "tensor_meta" in node.meta else \
                torch.finfo(torch.get_default_dtype()).eps
        g = gm.graph
        with inserting_for(node, what(node, modules)):
            if spec["groups"] is None:
                shape = spec["shape"]
                shape = (shape,) if isinstance(shape, int) else tuple(shape)
                out = normalized(g, x, tuple(range(-len(shape), 0)), eps, spec["centered"])
                weight, bias = spec["weight"], spec["bias"]
            else:
                rank = len(node.meta["tensor_meta"].shape)  # the output has the input's shape
                out = _grouped(g, x, spec["groups"], eps, rank)
                weight = _per_channel(g, spec["weight"], rank) if spec["weight"] is not None else None
                bias = _per_channel(g, spec["bias"], rank) if spec["bias"] is not None else None
            if weight is not None:
                out = g.call_function(operator.mul, (out, weight))
            if bias is not None:
                out = g.call_function(operator.add, (out, bias))
        # A norm that reads this one (LayerNorm after LayerNorm) must see its input as an activation.
        dep.add(out)
        node.replace_all_uses_with(out)
        g.erase_node(node)
        count += 1
    if count:
        gm.recompile()
        log.debug("decomposed %d LayerNorm/RMSNorm/GroupNorm into square and divide_sqrt neurons", count)
    return count
