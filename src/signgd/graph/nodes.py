"""Reading a call node's arguments the way Python bound them (by position or by keyword)."""
from __future__ import annotations

import torch.fx as fx


def node_arg(node: fx.Node, index: int, name: str, default=None):
    """The argument ``name`` of a call, given at position ``index`` or as a keyword, else ``default``."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)
