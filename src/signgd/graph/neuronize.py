"""Replace every nonlinearity of an activation that the target table knows by a SpikingNeuron module.

A nonlinearity applied to constants only (``torch.exp(self.log_scale)``) is a parameter transform,
not a neuron: it stays as it is (``graph.deps`` tells the two apart, from ShapeProp's metadata).
"""
from __future__ import annotations

import logging

import torch.fx as fx

from .. import targets
from ..neurons import SpikingNeuron
from .deps import depends_on_input

log = logging.getLogger("signgd.graph")


def _is_inplace(node: fx.Node, modules) -> bool:
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_")
    name = getattr(node.target, "__name__", "")
    return name.endswith("_") or bool(node.kwargs.get("inplace", False)) or (
        len(node.args) > 1 and node.args[1] is True)


def _redirect_later_uses(gm: fx.GraphModule, source: fx.Node, after: fx.Node, to: fx.Node) -> None:
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    source.replace_all_uses_with(to, delete_user_cb=lambda user: user is not to and order[user] > order[after])


def replace_nonlinearities(gm: fx.GraphModule) -> list[str]:
    """Swap each matched node for a call of a new ``neurons.<node name>`` module."""
    modules = dict(gm.named_modules())
    dep = depends_on_input(gm)
    created = []
    for node in list(gm.graph.nodes):
        if node not in dep:
            continue
        found = targets.match(node, modules)
        if found is None:
            continue
        name, params = found
        arity = targets.get_target(name).arity
        inputs = tuple(node.args[:arity]) or (node.kwargs.get("input"),)
        qualname = f"neurons.{node.name}"
        gm.add_submodule(qualname, SpikingNeuron(name, params))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(qualname, inputs)
        new.meta.update(node.meta)
        dep.add(new)
        node.replace_all_uses_with(new)
        if _is_inplace(node, modules):
            # The in-place op changed its input tensor: every later use of that tensor saw f(x).
            _redirect_later_uses(gm, inputs[0], after=node, to=new)
        gm.graph.erase_node(node)
        created.append(qualname)
    if created:
        gm.delete_all_unused_submodules()
        gm.recompile()
        log.debug("replaced %d nonlinearities by neurons", len(created))
    return created
