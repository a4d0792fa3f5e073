"""Refuse graphs with operations that are neither neurons nor affine maps.

Between neurons a signGD network may only hold affine maps of the activations: that is what makes
a neuron's input estimate equal the ANN pre-activation of the upstream estimates. An operation
outside the known-affine lists below would be silently treated as linear, so every such node that
depends on the input is reported (name, op, target), all at once. Nodes computed from parameters
and constants alone are fine whatever they are.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .. import targets
from ..errors import UnsupportedOperationError
from ..neurons import SpikingNeuron
from . import ops
from .deps import dependent_operands, depends_on_input
from .nodes import overridden_base, plain_module

AFFINE_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Unflatten,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.Identity,
)
AFFINE_FUNCTIONS = {
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, operator.iadd, operator.isub,
    torch.add, torch.sub, torch.neg, torch.flatten, torch.reshape, torch.cat, torch.concat, torch.stack,
    torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze, torch.mean, torch.sum,
    torch.narrow, torch.chunk, torch.split, torch.unbind, torch.unflatten, torch.movedim, torch.flip, torch.roll,
    torch.tile, torch.select,
    F.linear, F.conv1d, F.conv2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    torch.avg_pool1d, torch.conv1d, torch.conv2d, torch.adaptive_avg_pool1d,
    ops.pool_windows, ops.window_slice, ops.squeeze_last, ops.attention_bias,
}
# Affine when at most one operand depends on the input (scaling by a constant); for a division
# only the numerator may depend on it, and there must be no rounding mode.
SCALING_FUNCTIONS = {operator.mul, operator.truediv, operator.imul, operator.itruediv, torch.mul, torch.div,
                     operator.matmul, torch.matmul, torch.bmm}
# input + (product of two factors): affine while at most one factor depends on the input.
ADD_PRODUCT_FUNCTIONS = {torch.addcmul: (1, 2), torch.addmm: (1, 2), torch.baddbmm: (1, 2), torch.addbmm: (1, 2)}
_DIVISIONS = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
AFFINE_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "add", "add_", "sub", "sub_",
    "neg", "mean", "sum", "squeeze", "unsqueeze", "expand", "expand_as", "chunk", "split", "size",
    "dim", "narrow", "repeat", "unfold", "float", "double", "__getitem__", "unbind", "unflatten", "movedim",
    "flip", "roll", "tile", "select",
}
_CASTS = {"to", "type_as", "type"}  # affine only when the result stays floating point
SCALING_METHODS = {"mul", "mul_", "div", "div_", "matmul"}


def _scaling_ok(node: fx.Node, dep: set[fx.Node]) -> bool:
    if len(dependent_operands(node, dep)) > 1:
        return False
    if node.target in _DIVISIONS:
        divisor = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        return divisor not in dep and node.kwargs.get("rounding_mode") is None
    return True


def _float_cast(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and meta.dtype.is_floating_point


def check_supported(gm: fx.GraphModule) -> None:
    """Raise UnsupportedOperationError listing every unsupported node that touches the input."""
    modules = dict(gm.named_modules())
    dep = depends_on_input(gm)
    bad: list[tuple[str, str, str]] = []
    for node in gm.graph.nodes:
        if node not in dep or node.op in ("placeholder", "output"):
            continue
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is None:
                bad.append((node.name, "call_module", f"{node.target} (BatchNorm without running statistics: "
                                                      f"it normalizes over the batch)"))
                continue
            if isinstance(mod, SpikingNeuron) or plain_module(mod, AFFINE_MODULES):
                continue
            base = overridden_base(mod, AFFINE_MODULES)
            why = (f": overrides the forward of {base.__name__}, so signgd cannot see what it computes; let "
                   f"torch.fx trace into it (leave it out of leaf_modules)" if base is not None else "")
            bad.append((node.name, "call_module", f"{node.target} ({type(mod).__name__}{why})"))
        elif node.op == "call_function":
            if node.target in AFFINE_FUNCTIONS:
                continue
            if node.target is F.pad and node.kwargs.get("mode", "constant") == "constant":
                continue
            if node.target in SCALING_FUNCTIONS and _scaling_ok(node, dep):
                continue
            if node.target in ADD_PRODUCT_FUNCTIONS and sum(node.args[i] in dep for i in ADD_PRODUCT_FUNCTIONS[node.target]
                                                   if i < len(node.args)) <= 1:
                continue
            bad.append((node.name, "call_function", _name(node.target)))
        elif node.op == "call_method":
            if node.target in AFFINE_METHODS:
                continue
            if node.target in SCALING_METHODS and _scaling_ok(node, dep):
                continue
            if node.target in _CASTS and _float_cast(node):
                continue
            bad.append((node.name, "call_method", f".{node.target}()"))
    if bad:
        listing = "; ".join(f"{n} [{op}: {t}]" for n, op, t in bad)
        raise UnsupportedOperationError(
            f"cannot convert {len(bad)} operation(s) with no spiking equivalent: {listing}. "
            f"Neurons exist for: {', '.join(targets.supported_names())}; between neurons only affine "
            f"ops are allowed (conv, linear, batch norm, average pooling, add, reshape, scaling by a "
            f"constant). Replace these ops in the model, or open an issue for a new neuron target.",
            bad)


def _name(fn) -> str:
    mod = getattr(fn, "__module__", None) or ""
    return f"{mod}.{getattr(fn, '__name__', repr(fn))}".lstrip(".")
