"""Reading a call node's arguments the way Python bound them (by position or by keyword), and
recognizing the torch.nn modules a pass has a rule for."""
from __future__ import annotations

import torch.fx as fx


def node_arg(node: fx.Node, index: int, name: str, default=None):
    """The argument ``name`` of a call, given at position ``index`` or as a keyword, else ``default``."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def plain_module(mod, classes) -> bool:
    """Whether ``mod`` is one of ``classes`` and computes what that class computes: the class itself
    or a subclass that keeps its ``forward``. A subclass that overrides ``forward`` (a Conv2d
    followed by a ReLU, kept whole through ``leaf_modules``) computes something a pass cannot see,
    so no pass may treat it as its base class."""
    if not isinstance(classes, tuple):
        classes = (classes,)
    return any(isinstance(mod, c) and type(mod).forward is c.forward for c in classes)


def overridden_base(mod, classes):
    """The class of ``classes`` that ``mod`` subclasses while overriding its ``forward``, or None."""
    return next((c for c in classes if isinstance(mod, c) and type(mod).forward is not c.forward), None)


def where(node: fx.Node) -> str:
    """Where a node comes from, for people: the innermost module of the model that made the call
    (``blocks.0.bn1 (BatchNormAct2d)``, from fx's ``nn_module_stack``), else the node's name (an op
    of the model's own forward)."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, cls = list(stack.values())[-1]
        return f"{path} ({getattr(cls, '__name__', cls)})"
    return node.name
