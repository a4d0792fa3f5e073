"""Decompose 2-norms over given dims into square, sum and root neurons (xcit, edgenext, ConvNeXt-V2's GRN).

    ||x||_2 over dims      = sqrt(sum(square(x), dims))              square and sqrt neurons
    F.normalize(x, 2, dim) = x / max(||x||_2, eps)
                           = divide_sqrt(x, sum(square(x), dim), eps^2)  square and divide_sqrt neurons

``divide_sqrt(c, v, e) = c * rsqrt(max(v, e))``, so with ``e = eps^2`` it is exactly
``x / max(sqrt(v), eps)``, LayerNorm's own normalizing neuron. Only p = 2 has a decomposition here:
another p (or a norm over every dim, the batch included) is refused by name.
"""
from __future__ import annotations

import logging

import torch
import torch.fx as fx

from ..errors import UnsupportedOperationError
from ..targets import divide_sqrt
from . import spellings
from .deps import depends_on_input
from .nodes import node_arg, where

log = logging.getLogger("signgd.graph")


def _arguments(node: fx.Node) -> tuple[str, dict] | None:
    """``("normalize" | "norm", arguments by name)``, or None for any other node."""
    if node.op == "call_function" and node.target in spellings.NORMALIZE_FUNCTIONS:
        kind, table = "normalize", spellings.NORMALIZE_FUNCTIONS[node.target]
    elif node.op == "call_function" and node.target in spellings.VECTOR_NORM_FUNCTIONS:
        kind, table = "norm", spellings.VECTOR_NORM_FUNCTIONS[node.target]
    elif node.op == "call_method" and node.target in spellings.VECTOR_NORM_METHODS:
        kind, table = "norm", spellings.VECTOR_NORM_METHODS[node.target]
    else:
        return None
    names, defaults = table
    args = {k: node_arg(node, i, k, defaults.get(k)) for i, k in enumerate(names)}
    args["x"] = args.pop(names[0])
    args["p"] = args.pop("ord", args.get("p"))
    return kind, args


def _refuse(node: fx.Node, why: str):
    what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "norm")
    raise UnsupportedOperationError(f"{what} in {where(node)}: {why}", [(node.name, node.op, str(node.target))])


def _dims(node: fx.Node, args: dict) -> tuple[int, ...]:
    dim, p = args["dim"], args["p"]
    if isinstance(dim, fx.Node) or isinstance(p, fx.Node):
        _refuse(node, "p and dim must be constants of the model")
    if dim is None:
        _refuse(node, "a norm over every dim mixes the samples of a batch; give dim=... (the feature dims)")
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    two = p in (2, 2.0, "fro") or (p is None and node.target is torch.linalg.norm)
    if not two or (node.target is torch.linalg.norm and p == 2 and len(dims) == 2):
        where = " over a matrix" if two else ""
        _refuse(node, f"only the 2-norm (p=2) has a spiking decomposition (got p={p!r}{where})")
    return dims


def decompose_vector_norms(gm: fx.GraphModule) -> int:
    """Replace every ``F.normalize`` and ``.norm()`` (p = 2) of an activation; returns how many."""
    dep = depends_on_input(gm)
    count = 0
    for node in list(gm.graph.nodes):
        found = _arguments(node)
        if found is None or found[1]["x"] not in dep:
            continue
        kind, args = found
        dims = _dims(node, args)
        x, g = args["x"], gm.graph
        with g.inserting_before(node):
            q = g.call_function(torch.square, (x,))
            if kind == "normalize":
                eps = args["eps"]
                if isinstance(eps, fx.Node):
                    _refuse(node, "eps must be a constant of the model")
                s = g.call_method("sum", (q, dims), {"keepdim": True})
                out = g.call_function(divide_sqrt, (x, s, float(eps) ** 2))
            else:
                s = g.call_method("sum", (q, dims), {"keepdim": bool(args["keepdim"])})
                out = g.call_function(torch.sqrt, (s,))
        dep.add(out)
        node.replace_all_uses_with(out)
        g.erase_node(node)
        count += 1
    if count:
        gm.recompile()
        log.debug("decomposed %d 2-norms into square, sum and sqrt/divide_sqrt neurons", count)
    return count

