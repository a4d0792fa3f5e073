"""Decompose softmax and scaled dot-product attention into affine parts and neurons.

    softmax(x, dim) = e / sum(e, dim)          with e = exp(x): an ``exp`` neuron, an affine sum,
                                               and a ``divide`` neuron
    attention(q, k, v) = softmax(q k^T * scale + mask) v
                                               two ``matmul`` neurons (one per output element)

The passes emit plain torch calls (``torch.exp``, ``/``, ``@``); the neuron and product passes make
them neurons. A softmax is not shifted by its row maximum where it need not be: that takes a tree of
``k - 1`` max neurons per row of ``k`` (as many neurons again as the ``exp``s, and ``log2 k`` more layers
to settle), and normalizing the ``exp`` neurons by their calibration range keeps them in reach. Where
the row maxima on the first calibration samples (those the shapes are propagated with) reach half of what
the dtype's ``exp`` can hold (|max| >= 44 in float32: timm visformer_tiny at random init has attention
logits up to 272), the softmax is computed as torch computes it, ``e = exp(x - amax(x, dim))``, and the
max pass makes the ``amax`` its tree.
"""
from __future__ import annotations

import logging
import math
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..errors import UnsupportedOperationError
from . import spellings
from .deps import depends_on_input
from .nodes import node_arg
from .ops import attention_bias
from .provenance import inserting_for

log = logging.getLogger("signgd.graph")


def _softmax_dim(node: fx.Node, modules) -> int | None | str:
    """The softmax dimension of ``node``; ``"no"`` when it is not a softmax."""
    if node.op == "call_module" and type(modules[node.target]) in spellings.SOFTMAX_MODULES:
        return modules[node.target].dim
    if (node.op == "call_function" and node.target in spellings.SOFTMAX_FUNCTIONS) or (
            node.op == "call_method" and node.target in spellings.SOFTMAX_METHODS):
        return node_arg(node, 1, "dim")
    return "no"


def decompose_softmax(gm: fx.GraphModule, sample: torch.Tensor | None = None) -> int:
    """Replace every softmax of an activation by exp, sum and divide; returns how many. Given the first
    calibration samples ``sample``, a softmax whose row maxima on it come near ``exp``'s range subtracts them first (the
    module docstring); ``gm.meta["shifted_softmax"]`` counts those."""
    modules = dict(gm.named_modules())
    dep = depends_on_input(gm)
    found = {}
    for node in gm.graph.nodes:
        dim = _softmax_dim(node, modules)
        if dim == "no" or node_arg(node, 0, "input") not in dep:
            continue
        if not isinstance(dim, int):
            raise UnsupportedOperationError(
                f"node {node.name!r}: softmax without a constant dim (got {dim!r}); pass dim=... explicitly",
                [(node.name, node.op, "softmax")])
        found[node] = dim
    shifted = _near_overflow(gm, sample, found) if sample is not None and found else set()
    gm.meta["shifted_softmax"] = len(shifted)
    for node, dim in found.items():
        x = node_arg(node, 0, "input")
        g = gm.graph
        with inserting_for(node, "softmax"):
            if node in shifted:
                x = g.call_function(operator.sub, (x, g.call_method("amax", (x, dim), {"keepdim": True})))
            e = g.call_function(torch.exp, (x,))
            s = g.call_method("sum", (e, dim), {"keepdim": True})
            p = g.call_function(operator.truediv, (e, s))
        node.replace_all_uses_with(p)  # a softmax reading this one was found above, before any rewrite
        g.erase_node(node)
    if found:
        gm.recompile()
        log.debug("decomposed %d softmax into exp, sum and divide (%d shifted by their row maxima)",
                  len(found), len(shifted))
    return len(found)


def _near_overflow(gm: fx.GraphModule, sample: torch.Tensor, softmaxes: dict[fx.Node, int]) -> set[fx.Node]:
    """The softmaxes of ``softmaxes`` (node: dim) whose input's row maxima on ``sample`` reach half of the largest
    finite ``log`` of its dtype (above it ``exp`` overflows; below minus it a whole row underflows to 0 / 0)."""
    near = set()

    class Probe(fx.Interpreter):
        def run_node(self, n):
            if n in softmaxes:
                x = self.env[node_arg(n, 0, "input")]
                limit = 0.5 * math.log(torch.finfo(x.dtype).max)
                if float(x.detach().amax(softmaxes[n]).abs().max()) >= limit:
                    near.add(n)
            return super().run_node(n)

    with torch.no_grad():
        Probe(gm).run(sample)
    return near


def decompose_attention(gm: fx.GraphModule) -> int:
    """Replace every ``F.scaled_dot_product_attention`` by matmul, scale, mask, softmax, matmul."""
    dep = depends_on_input(gm)
    count = 0
    for node in list(gm.graph.nodes):
        if not (node.op == "call_function" and node.target in spellings.ATTENTION_FUNCTIONS):
            continue
        names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"]
        defaults = [None, None, None, None, 0.0, False, None, False]
        a = {k: node_arg(node, i, k, d) for i, (k, d) in enumerate(zip(names, defaults))}
        for key in ("dropout_p", "is_causal", "scale", "enable_gqa"):
            if isinstance(a[key], fx.Node):
                raise UnsupportedOperationError(
                    f"node {node.name!r}: scaled_dot_product_attention's {key} is computed at run time; "
                    f"make it a constant", [(node.name, node.op, "scaled_dot_product_attention")])
        if a["enable_gqa"]:
            raise UnsupportedOperationError(
                f"node {node.name!r}: scaled_dot_product_attention with enable_gqa=True is not supported; "
                f"repeat the key/value heads in the model instead", [(node.name, node.op, "sdpa")])
        q_meta = a["query"].meta.get("tensor_meta")
        k_meta = a["key"].meta.get("tensor_meta")
        scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q_meta.shape[-1])
        g = gm.graph
        with inserting_for(node, "attention"):
            k_t = g.call_method("transpose", (a["key"], -2, -1))
            scores = g.call_function(operator.matmul, (a["query"], k_t))
            scores = g.call_function(operator.mul, (scores, float(scale)))
            if a["is_causal"]:
                n, m = q_meta.shape[-2], k_meta.shape[-2]
                mask = torch.ones(n, m, dtype=torch.bool).tril(diagonal=0)
                a["attn_mask"] = _constant(gm, f"{node.name}_causal_mask", mask)
            if a["attn_mask"] is not None:
                if a["attn_mask"] in dep:
                    raise UnsupportedOperationError(
                        f"node {node.name!r}: the attention mask is computed from the input; signgd supports "
                        f"constant masks only", [(node.name, node.op, "scaled_dot_product_attention")])
                bias = g.call_function(attention_bias, (a["attn_mask"], q_meta.dtype))
                scores = g.call_function(operator.add, (scores, bias))
            p = g.call_function(F.softmax, (scores, -1))
            out = g.call_function(operator.matmul, (p, a["value"]))
        node.replace_all_uses_with(out)
        g.erase_node(node)
        count += 1
    if count:
        gm.recompile()
        log.debug("decomposed %d scaled_dot_product_attention into matmul and softmax", count)
    return count


def _constant(gm: fx.GraphModule, name: str, value: torch.Tensor) -> fx.Node:
    gm.register_buffer(name, value)
    return gm.graph.get_attr(name)
