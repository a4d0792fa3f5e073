"""Refuse graphs with operations that are neither neurons nor affine maps.

Between neurons a signGD network may only hold affine maps of the activations: that is what makes
a neuron's input estimate equal the ANN pre-activation of the upstream estimates. An operation
outside the known-affine lists would be silently treated as linear, so every such node that
depends on the input is reported (name, op, target), all at once. Nodes computed from parameters
and constants alone are fine whatever they are. The lists are ``graph/spellings.py``'s.
"""
from __future__ import annotations

import torch.fx as fx

from ..errors import UnsupportedOperationError
from ..neurons import SpikingNeuron
from . import spellings as sp
from .batchnorm_calls import batchnorm_arguments, why_not_affine
from .deps import dependent_operands, depends_on_input
from .nodes import overridden_base, plain_module, where

_NOT_DECOMPOSED = (": signgd decomposes this op, but not as it is called here (an argument computed at run "
                   "time, or an option it has no rule for); please report it with the model")


def _scaling_ok(node: fx.Node, dep: set[fx.Node]) -> bool:
    if len(dependent_operands(node, dep)) > 1:
        return False
    if node.target in sp.DIVISIONS:
        divisor = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        return divisor not in dep and node.kwargs.get("rounding_mode") is None
    return True


def _float_cast(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and meta.dtype.is_floating_point


def grouped(kinds: list[tuple[str, str]], shown: int = 3) -> str:
    """``[(op, where), ...]`` grouped by op in order of first appearance, a few places each:
    ``7 x torch.sign: blocks.0 (Block), blocks.1 (Block), blocks.2 (Block), ... (4 more)``."""
    groups: dict[str, list[str]] = {}
    for what, place in kinds:
        groups.setdefault(what, []).append(place)
    parts = []
    for what, places in groups.items():
        more = f", ... ({len(places) - shown} more)" if len(places) > shown else ""
        parts.append(f"{len(places)} x {what}: {', '.join(places[:shown])}{more}")
    return "; ".join(parts)


def _decomposable(node: fx.Node, modules) -> bool:
    """Whether a pass decomposes ops spelled like this one (so one left here was not decomposable as called)."""
    if node.op == "call_module":
        return plain_module(modules[node.target], sp.DECOMPOSED_MODULES)
    if node.op == "call_function":
        return node.target in sp.DECOMPOSED_FUNCTIONS
    return node.target in sp.DECOMPOSED_METHODS


def check_supported(gm: fx.GraphModule) -> None:
    """Raise UnsupportedOperationError listing every unsupported node that touches the input."""
    modules = dict(gm.named_modules())
    dep = depends_on_input(gm)
    bad: list[tuple[str, str, str]] = []  # (node, op kind, target): the error's ``nodes``
    kinds: list[tuple[str, str]] = []  # (what the op is, where): the message groups them
    for node in gm.graph.nodes:
        if node not in dep or node.op in ("placeholder", "output"):
            continue
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, sp.ANY_BATCH_NORM) and mod.running_mean is None:
                why = "BatchNorm without running statistics: it normalizes over the batch"
                bad.append((node.name, "call_module", f"{node.target} ({why})"))
                kinds.append((f"{type(mod).__name__} ({why})", node.target))
                continue
            if isinstance(mod, SpikingNeuron) or plain_module(mod, sp.AFFINE_MODULES):
                continue
            base = overridden_base(mod, sp.AFFINE_MODULES)
            why = (f": overrides the forward of {base.__name__}, so signgd cannot see what it computes; let "
                   f"torch.fx trace into it (leave it out of leaf_modules)" if base is not None else "")
            if not why and _decomposable(node, modules):
                why = _NOT_DECOMPOSED
            if not why and isinstance(mod, sp.RECURRENT_MODULES):
                why = f": {sp.RECURRENT_WHY}"
            bad.append((node.name, "call_module", f"{node.target} ({type(mod).__name__}{why})"))
            kinds.append((f"{type(mod).__name__}{why}", node.target))
        elif node.op == "call_function":
            if node.target in sp.AFFINE_FUNCTIONS:
                continue
            if node.target in sp.SCALING_FUNCTIONS and _scaling_ok(node, dep):
                continue
            if node.target in sp.EINSUM_FUNCTIONS and len(dependent_operands(node, dep)) <= 1:
                continue
            factors = sp.ADD_PRODUCT_FUNCTIONS.get(node.target, ())
            if factors and sum(node.args[i] in dep for i in factors if i < len(node.args)) <= 1:
                continue
            what = sp.function_name(node.target)
            bn = batchnorm_arguments(node)
            reason = why_not_affine(bn) if bn is not None else None
            if reason:
                what += f" ({reason})"
            elif _decomposable(node, modules):
                what += _NOT_DECOMPOSED
            elif node.target in sp.EINSUM_FUNCTIONS:
                what += (" (a product of more than two activations, or an ellipsis that does not lead every "
                         "term: write it as einsums of two operands)")
            bad.append((node.name, "call_function", what))
            kinds.append((what, where(node)))
        elif node.op == "call_method":
            if node.target in sp.AFFINE_METHODS:
                continue
            if node.target in sp.SCALING_METHODS and _scaling_ok(node, dep):
                continue
            if node.target in sp.CAST_METHODS and _float_cast(node):
                continue
            what = f".{node.target}()" + (_NOT_DECOMPOSED if _decomposable(node, modules) else "")
            bad.append((node.name, "call_method", what))
            kinds.append((what, where(node)))
    if bad:
        raise UnsupportedOperationError(
            f"cannot convert {len(bad)} operation(s) with no spiking equivalent: {grouped(kinds)}. "
            f"Neurons exist for: {', '.join(sp.supported_names())}; between neurons only affine "
            f"ops are allowed (conv, linear, eval-mode batch norm, average pooling, add, reshape, scaling by a "
            f"constant). Replace these ops in the model, or open an issue for a new neuron target.",
            bad)

