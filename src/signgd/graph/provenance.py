"""Where each neuron came from in the user's model, so that reports can name layers as the model does.

torch.fx's tracer records in ``node.meta["nn_module_stack"]`` the modules whose ``forward`` a node was
traced in (innermost last). The passes that replace one node by several (norms, softmax, attention,
max pooling) insert their nodes with ``inserting_for``, which gives each new node the replaced node's
module stack and a ``signgd_part`` saying what it was part of ("LayerNorm", "attention softmax",
"rows"). ``record_origins`` turns that into plain strings on every neuron node,
``node.meta["signgd_origin"]`` (saved with the network, ``signgd.snnfile``); ``signgd.report.names``
makes the labels from it.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch.fx as fx
from torch import nn

from ..neurons import SpikingNeuron

__all__ = ["inserting_for", "what", "record_origins", "module_path"]

_STACK, _PART, ORIGIN = "nn_module_stack", "signgd_part", "signgd_origin"


def what(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """The replaced op as a reader knows it: the module's class name, or the function's name."""
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))


@contextmanager
def inserting_for(node: fx.Node, part: str):
    """``graph.inserting_before(node)``, and every node inserted there inherits ``node``'s module stack
    and the part ``part`` (after ``node``'s own part: a softmax of an attention is "attention softmax")."""
    anchor = node.prev
    with node.graph.inserting_before(node):
        yield
    inherited = f"{node.meta[_PART]} {part}" if node.meta.get(_PART) else part
    n = anchor.next
    while n is not node:
        if node.meta.get(_STACK) and not n.meta.get(_STACK):
            n.meta[_STACK] = node.meta[_STACK]
        n.meta.setdefault(_PART, inherited)
        n = n.next


def module_path(node: fx.Node) -> str:
    """The innermost module whose ``forward`` traced ``node`` (``"features.6"``), or ``""`` at the top."""
    stack = node.meta.get(_STACK)
    if not stack:
        return ""
    key, value = list(stack.items())[-1]
    return value[0] if isinstance(value, tuple) and isinstance(value[0], str) else str(key)


def _upstream_path(node: fx.Node, limit: int = 64) -> str:
    """The module path of the nearest node upstream (following first inputs) that has one."""
    for _ in range(limit):
        inputs = [a for a in node.all_input_nodes if a.op != "get_attr"]
        if not inputs:
            return ""
        node = inputs[0]
        if module_path(node):
            return module_path(node)
    return ""


def record_origins(gm: fx.GraphModule) -> None:
    """Set ``node.meta["signgd_origin"]`` on every neuron node: ``{"module": path, "after": path of
    the nearest module upstream when the neuron was traced outside any module, "part": ...}``."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), SpikingNeuron):
            continue
        path = module_path(node)
        node.meta[ORIGIN] = {"module": path, "after": "" if path else _upstream_path(node),
                             "part": str(node.meta.get(_PART, ""))}
