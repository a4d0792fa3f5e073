"""Replace a value computed from parameters and constants alone by a buffer holding it.

A converted graph may compute constants with any function (a relative position bias gathered from
its table, Swin V2's small MLP over coordinates): nothing of it reaches a neuron as an activation.
But a saved network may call only the allowlisted functions and modules (``snnfile.py``), and the
simulator would recompute such a value at every chunk. Folding it into a buffer once, at conversion,
keeps the numbers (the same value) and drops the code that computed it.
"""
from __future__ import annotations

import torch
import torch.fx as fx


def _evaluate(gm: fx.GraphModule, node, memo: dict):
    if not isinstance(node, fx.Node):
        return node
    if node in memo:
        return memo[node]
    if node.op == "placeholder":
        raise ValueError(f"{node.name} depends on the input; only constants can be folded")
    args = fx.node.map_aggregate(node.args, lambda a: _evaluate(gm, a, memo))
    kwargs = fx.node.map_aggregate(node.kwargs, lambda a: _evaluate(gm, a, memo))
    if node.op == "get_attr":
        value = gm
        for part in node.target.split("."):
            value = getattr(value, part)
    elif node.op == "call_function":
        value = node.target(*args, **kwargs)
    elif node.op == "call_method":
        value = getattr(args[0], node.target)(*args[1:], **kwargs)
    else:  # call_module
        value = gm.get_submodule(node.target)(*args, **kwargs)
    memo[node] = value
    return value


def fold_constant(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """A ``get_attr`` of a new buffer holding ``node``'s value, in place of ``node``; the nodes that
    only fed it are dropped (call ``gm.delete_all_unused_submodules()`` and ``recompile`` after)."""
    with torch.no_grad():
        value = _evaluate(gm, node, {})
    name = f"{node.name}_constant"
    gm.register_buffer(name, value.detach().clone())
    with gm.graph.inserting_before(node):
        new = gm.graph.get_attr(name)
    new.meta.update(node.meta)
    node.replace_all_uses_with(new)
    dead = [node]
    while dead:
        n = dead.pop()
        if n.users or n.op in ("placeholder", "output"):
            continue
        inputs = n.all_input_nodes
        gm.graph.erase_node(n)
        dead.extend(inputs)
    return new
