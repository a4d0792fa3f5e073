"""Which nodes of a graph carry activations (tensors computed from the network input).

Passes use it to tell an activation from a constant: ``torch.exp(self.scale)`` is a parameter
transform, not a neuron; ``a * b`` is a product neuron only when both factors are activations.
"""
from __future__ import annotations

import torch.fx as fx


def depends_on_input(gm: fx.GraphModule) -> set[fx.Node]:
    """Tensor-valued nodes computed from the input. Shapes and other non-tensor values taken from
    activations (``x.shape[0]``, ``x.size(-1)``) are constants of the graph, not activations
    (known from ShapeProp's ``tensor_meta``; without it every descendant counts)."""
    has_shapes = any("tensor_meta" in n.meta for n in gm.graph.nodes)
    dep: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in dep for a in node.all_input_nodes):
            if node.op == "placeholder" or "tensor_meta" in node.meta or not has_shapes:
                dep.add(node)
    return dep


def dependent_operands(node: fx.Node, dep: set[fx.Node]) -> list[fx.Node]:
    """The operands of ``node`` that are activations, with repetition (``h * h`` lists ``h`` twice)."""
    operands: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), operands.append)
    return [a for a in operands if a in dep]
