"""Trace a user's model into a torch.fx graph, without touching the user's model.

The model is deep-copied first (a GraphModule shares submodules with the module it traced, and the
later passes replace and fold them), and the copy is put in eval mode: conversion always means
inference semantics (BatchNorm running statistics, Dropout off).
"""
from __future__ import annotations

import copy
import inspect
import logging
import warnings
from typing import Iterable

import torch.fx as fx
from torch import nn

from ..errors import TraceError
from .traceable import make_traceable

log = logging.getLogger("signgd.graph")


class _Tracer(fx.Tracer):
    def __init__(self, leaf_types: tuple[type, ...]):
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module, leaf_modules: Iterable[type] = ()) -> fx.GraphModule:
    """A GraphModule of an eval-mode deep copy of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert() needs a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        warnings.warn("the model is in training mode; signgd converts it as if in eval mode "
                      "(your model is left as it is)", stacklevel=3)
    model = copy.deepcopy(model).eval()
    model, swapped = make_traceable(model)  # attention/transformer modules -> plain ops fx can see
    tracer = _Tracer(tuple(leaf_modules))
    try:
        graph = tracer.trace(model, concrete_args=_optional_arguments(model))
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError...)
        where = _innermost_frame(exc)
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}{where}. "
            f"Fix: make forward() free of Python control flow that depends on tensor values (if/for on "
            f"x.sum(), x.item(), ...), e.g. move the branch out of the model") from exc
    for node in list(graph.nodes):
        if node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert_is_none":
            graph.erase_node(node)  # fx's check that an option fixed at None is None
    for node in [n for n in graph.nodes if n.op == "placeholder"][1:]:
        if not node.users:
            graph.erase_node(node)  # an option fixed at its default (see _optional_arguments)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta["swapped_modules"] = swapped
    log.debug("traced %s: %d nodes", type(model).__name__, len(gm.graph.nodes))
    return gm


def _optional_arguments(model: nn.Module) -> dict | None:
    """Every forward() argument after the input that has a default, fixed at that default: a
    converted network takes one input (``VisionTransformer.forward(x, attn_mask=None, ...)`` would
    otherwise trace its options as graph inputs)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    fixed = {p.name: p.default for p in params[1:]
             if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return fixed or None


def _innermost_frame(exc: BaseException) -> str:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        if "torch/fx" not in tb.tb_frame.f_code.co_filename:
            last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f" (at {last.tb_frame.f_code.co_filename}:{last.tb_lineno})"
