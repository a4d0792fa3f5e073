"""Products and ratios of two activations become 2-input neurons (``mul``, ``matmul``, ``divide``).

``h * 2`` is affine (a scaling); ``h * g`` with both factors computed from the input is not, and a
spike of ``h`` alone cannot say what ``h * g`` became. A signGD neuron can track it: its target is
the product of its two input estimates. ``q @ k.transpose(-2, -1)`` becomes one ``matmul`` neuron
layer with one neuron per *output* element (N x M per head), never one per scalar product
(N x K x M), so memory grows with the attention map, not with the head dimension times it.
"""
from __future__ import annotations

import logging

import torch.fx as fx

from ..neurons import SpikingNeuron
from . import spellings
from .deps import dependent_operands, depends_on_input
from .neuronize import replace_by_neuron
from .nodes import node_arg

log = logging.getLogger("signgd.graph")


def leading_ellipsis(equation: str) -> str | None:
    """``equation`` with ``...`` at the front of every term (``"bij,bjk->bik"`` -> ``"...bij,...bjk->...bik"``),
    so extra leading dimensions (the simulator's time steps) broadcast through it; None when an
    ellipsis already sits elsewhere than at the front of a term."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",") + ([rhs] if arrow else [])
    if any("..." in t for t in terms):
        return eq if all(t.startswith("...") for t in terms) else None
    out = ",".join("..." + t for t in lhs.split(","))
    return out + ("->..." + rhs if arrow else "")


def _einsum_operands(node: fx.Node) -> tuple[str, list]:
    equation, *operands = node.args
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):  # einsum(eq, [a, b])
        operands = list(operands[0])
    return equation, operands


def _replace_einsum(gm: fx.GraphModule, node: fx.Node, dep: set[fx.Node]) -> str | None:
    """``einsum(eq, a, b)`` of two activations -> an ``einsum`` neuron; None (left to the check,
    which names it) with more operands or an ellipsis that is not leading."""
    equation, operands = _einsum_operands(node)
    eq = leading_ellipsis(equation) if isinstance(equation, str) else None
    if len(operands) != 2 or eq is None or node.kwargs:
        return None
    name = f"neurons.{node.name}"
    dep.add(replace_by_neuron(gm, node, name, SpikingNeuron("einsum", {"equation": eq}), tuple(operands), False))
    return name


def replace_products(gm: fx.GraphModule) -> list[str]:
    """Swap each product/ratio of two activations for a 2-input neuron; returns the new names."""
    dep = depends_on_input(gm)
    created = []
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in spellings.EINSUM_FUNCTIONS:
            if len(dependent_operands(node, dep)) >= 2 and (name := _replace_einsum(gm, node, dep)):
                created.append(name)
            continue
        if node.op not in ("call_function", "call_method") or node.target not in spellings.PRODUCT_TARGETS:
            continue
        if len(dependent_operands(node, dep)) < 2:
            continue  # a scaling by a constant: affine, left to the check
        kind = spellings.PRODUCT_TARGETS[node.target]
        if kind == "divide" and node.kwargs.get("rounding_mode") is not None:
            continue  # floor/trunc division has no neuron; the check reports it
        a = node.args[0]
        b = node_arg(node, 1, "other", node.kwargs.get("mat2"))
        name = f"neurons.{node.name}"
        # In place (``a *= b``, ``a.mul_(b)``): later uses of the first factor saw the product.
        new = replace_by_neuron(gm, node, name, SpikingNeuron(kind), (a, b), spellings.is_inplace(node.target))
        dep.add(new)
        created.append(name)
    if created:
        gm.recompile()
        log.debug("replaced %d products of activations by 2-input neurons", len(created))
    return created
