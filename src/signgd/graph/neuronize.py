"""Replace every nonlinearity of an activation that the target table knows by a SpikingNeuron module.

Which torch spellings reach which target, with which parameters, is ``graph/spellings.py``; this
pass reads a node's parameters by that table (``match``). A nonlinearity applied to constants only
(``torch.exp(self.log_scale)``) is a parameter transform, not a neuron: it stays as it is
(``graph.deps`` tells the two apart, from ShapeProp's metadata).
"""
from __future__ import annotations

import logging

import torch.fx as fx
from torch import nn

from .. import targets
from ..errors import UnsupportedOperationError
from ..neurons import SpikingNeuron
from . import spellings
from .deps import depends_on_input
from .nodes import node_arg

log = logging.getLogger("signgd.graph")


def match(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, dict] | None:
    """``(target name, params)`` when ``node`` is a nonlinearity the converter has a neuron for."""
    if node.op == "call_module":
        found = spellings.NEURON_MODULES.get(type(modules[node.target]))
        return (found[0], found[1](modules[node.target])) if found else None
    if node.op == "call_function":
        if node.target in spellings.SQUARE_POWER_FUNCTIONS and _is_constant(node.args[1], 2):
            return "square", {}
        spelling = spellings.NEURON_FUNCTIONS.get(node.target)
    elif node.op == "call_method":
        if node.target in spellings.SQUARE_POWER_METHODS and _is_constant(node_arg(node, 1, "exponent"), 2):
            return "square", {}
        spelling = spellings.NEURON_METHODS.get(node.target)
    else:
        return None
    if spelling is None:
        return None
    name, params = spelling
    if node.target in spellings.FIXED_PARAMETER_FUNCTIONS:
        return name, {k: v for k, v in params}
    return name, _read_params(node, params, targets.get_target(name).arity)


def _is_constant(value, expected) -> bool:
    return not isinstance(value, fx.Node) and isinstance(value, (int, float)) and value == expected


def _read_params(node: fx.Node, params: tuple[tuple[str, object], ...], arity: int) -> dict:
    """The target's parameters from the node's positional args (after the inputs) and kwargs."""
    values = {}
    for i, (key, default) in enumerate(params):
        value = node_arg(node, i + arity, key, default)
        if isinstance(value, fx.Node):
            raise UnsupportedOperationError(
                f"node {node.name!r}: the {key!r} of {node.target} is computed at run time; signgd needs it "
                f"to be a constant (write it as a number in the model)", [(node.name, node.op, str(node.target))])
        values[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return values


def _is_inplace(node: fx.Node, modules) -> bool:
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    return spellings.is_inplace(node.target) or (node.op == "call_function" and (
        bool(node.kwargs.get("inplace", False)) or (len(node.args) > 1 and node.args[1] is True)))


def replace_by_neuron(gm: fx.GraphModule, node: fx.Node, qualname: str, neuron: SpikingNeuron, inputs: tuple,
                      inplace: bool) -> fx.Node:
    """Put a call of ``neuron`` (registered as ``qualname``) on ``inputs`` in place of ``node``. When
    ``node`` was in place, every later use of its first input saw its result, so reads it from the
    neuron instead."""
    gm.add_submodule(qualname, neuron)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(qualname, inputs)
    new.meta.update(node.meta)
    node.replace_all_uses_with(new)
    if inplace:
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        def later(user):
            return user is not new and order[user] > order[node]
        inputs[0].replace_all_uses_with(new, delete_user_cb=later)
    gm.graph.erase_node(node)
    return new


def replace_nonlinearities(gm: fx.GraphModule) -> list[str]:
    """Swap each matched node for a call of a new ``neurons.<node name>`` module."""
    modules = dict(gm.named_modules())
    dep = depends_on_input(gm)
    created = []
    for node in list(gm.graph.nodes):
        if node not in dep:
            continue
        found = match(node, modules)
        if found is None:
            continue
        name, params = found
        arity = targets.get_target(name).arity
        inputs = tuple(node.args[:arity]) or (node.kwargs.get("input"),)
        qualname = f"neurons.{node.name}"
        neuron = SpikingNeuron(name, params)
        new = replace_by_neuron(gm, node, qualname, neuron, inputs, _is_inplace(node, modules))
        dep.add(new)
        created.append(qualname)
    if created:
        gm.delete_all_unused_submodules()
        gm.recompile()
        log.debug("replaced %d nonlinearities by neurons", len(created))
    return created
