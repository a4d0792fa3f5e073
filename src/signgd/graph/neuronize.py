"""Replace every nonlinearity the target table knows by a SpikingNeuron module."""
from __future__ import annotations

import logging

import torch.fx as fx

from .. import targets
from ..neurons import SpikingNeuron

log = logging.getLogger("signgd.graph")


def replace_nonlinearities(gm: fx.GraphModule) -> list[str]:
    """Swap each matched node for a call of a new ``neurons.<node name>`` module."""
    modules = dict(gm.named_modules())
    created = []
    for node in list(gm.graph.nodes):
        found = targets.match(node, modules)
        if found is None:
            continue
        name, params = found
        arity = targets.get_target(name).arity
        inputs = tuple(node.args[:arity])
        qualname = f"neurons.{node.name}"
        gm.add_submodule(qualname, SpikingNeuron(name, params))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(qualname, inputs)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        created.append(qualname)
    if created:
        gm.delete_all_unused_submodules()
        gm.recompile()
        log.debug("replaced %d nonlinearities by neurons", len(created))
    return created
