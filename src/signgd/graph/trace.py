"""Trace a user's model into a torch.fx graph, without touching the user's model.

The model is deep-copied first (a GraphModule shares submodules with the module it traced, and the
later passes replace and fold them), and the copy is put in eval mode: conversion always means
inference semantics (BatchNorm running statistics, Dropout off). The copy's forward and backward
hooks are removed (with a warning naming the modules): a deep copy shares the hook functions, so
tracing, calibrating and simulating the copy would call the user's hooks (with fx proxies, with
time steps folded into the batch), and what a hook computes is invisible to the graph anyway.
"""
from __future__ import annotations

import copy
import inspect
import linecache
import logging
import os
import warnings
from typing import Iterable

import torch
import torch.fx as fx
from torch import nn

from ..errors import ConversionError, TraceError
from .concrete import ConcreteTracer, check_assignments
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

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:
            if not hasattr(exc, "_signgd_module"):  # the innermost module, where tracing failed
                try:
                    path = self.path_of_module(m)
                except Exception:  # noqa: BLE001 - a module fx does not know: name its class only
                    path = ""
                try:
                    exc._signgd_module = (path, type(m).__name__)
                except AttributeError:  # an exception type without a __dict__
                    pass
            raise


# The hook tables of nn.Module that run around forward (and backward) calls.
_HOOK_TABLES = {"_forward_pre_hooks": "forward pre-hook", "_forward_hooks": "forward hook",
                "_backward_pre_hooks": "backward pre-hook", "_backward_hooks": "backward hook"}
_HOOK_COMPANIONS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _weight_hooks() -> tuple[type, ...]:
    """torch's own pre-hooks that compute a weight from other parameters before each call (the old
    ``weight_norm`` and ``spectral_norm``): conversion applies them once, then removes them."""
    kinds = []
    try:
        from torch.nn.utils.weight_norm import WeightNorm
        kinds.append(WeightNorm)
    except ImportError:  # pragma: no cover - removed from torch
        pass
    try:
        from torch.nn.utils.spectral_norm import SpectralNorm
        kinds.append(SpectralNorm)
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


def _remove_hooks(model: nn.Module) -> list[str]:
    """Clear the forward/backward hooks of every module of ``model`` (a copy, in eval mode); describe
    them. torch's weight-computing pre-hooks are applied once first, so the weight is current."""
    found = []
    weight_hooks = _weight_hooks()
    for name, mod in model.named_modules():
        for key, hook in list(getattr(mod, "_forward_pre_hooks", {}).items()):
            if isinstance(hook, weight_hooks):
                with torch.no_grad():
                    hook(mod, ())
                del mod._forward_pre_hooks[key]
        kinds = [kind for table, kind in _HOOK_TABLES.items() if getattr(mod, table, None)]
        if kinds:
            found.append(f"{name or 'the model'} ({type(mod).__name__}: {', '.join(kinds)})")
        for table in (*_HOOK_TABLES, *_HOOK_COMPANIONS):
            value = getattr(mod, table, None)
            if isinstance(value, (dict, set)):
                setattr(mod, table, type(value)())  # a new table: the user's stays as it is
    return found


def _copy(model: nn.Module) -> nn.Module:
    # A tensor attribute computed with autograd (the weight the old weight_norm caches) cannot be
    # deep-copied; its copy is a detached clone (weight-computing hooks recompute it anyway).
    memo = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
            if isinstance(v, torch.Tensor) and v.grad_fn is not None}
    try:
        return copy.deepcopy(model, memo)
    except Exception as exc:  # a lock, an open file, a generator held by the model...
        raise ConversionError(f"cannot deep-copy {type(model).__name__} ({type(exc).__name__}: {exc}); signgd "
                              f"converts a copy so that your model is never touched. Fix: keep objects that "
                              f"cannot be copied (locks, files, generators, loggers' handlers) out of the module's "
                              f"attributes, or define __deepcopy__ for them") from exc


def trace(model: nn.Module, leaf_modules: Iterable[type] = (), sample: torch.Tensor | None = None) -> fx.GraphModule:
    """A GraphModule of an eval-mode deep copy of ``model``. When plain fx tracing fails and a
    ``sample`` batch is given, the model is traced again with its sizes known (``graph/concrete.py``:
    Python branches on spatial sizes are decided for this input shape; the batch stays free)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert() needs a torch.nn.Module, got {type(model).__name__}")
    if any(m.training for m in model.modules()):
        warnings.warn("the model is in training mode; signgd converts it as if in eval mode "
                      "(your model is left as it is)", stacklevel=3)
    user_model = model
    model, swapped = _prepared(user_model, warn=True)
    tracer = _Tracer(tuple(leaf_modules))
    concrete = False
    try:
        graph = tracer.trace(model, concrete_args=_optional_arguments(model))
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError...)
        # a fresh copy: the failed trace may have stored Proxies in the modules' attributes
        found = None
        for proxy_buffers in ((True, False) if sample is not None else ()):  # buffers as Proxies, else as tensors
            found = _trace_concrete(_prepared(user_model)[0], tuple(leaf_modules), sample, proxy_buffers)
            if isinstance(found, tuple):
                break
        if not isinstance(found, tuple):
            raise _trace_error(model, exc, found) from exc
        tracer, graph = found
        concrete = True
    for node in list(graph.nodes):
        if node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert_is_none":
            graph.erase_node(node)  # fx's check that an option fixed at None is None
    for node in [n for n in graph.nodes if n.op == "placeholder"][1:]:
        if not node.users:
            graph.erase_node(node)  # an option fixed at its default (see _optional_arguments)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta["swapped_modules"] = swapped
    gm.meta["concrete_shapes"] = concrete
    if concrete:
        check_assignments(gm, lambda: _prepared(user_model)[0], sample)
    log.debug("traced %s: %d nodes", type(model).__name__, len(gm.graph.nodes))
    return gm


def _prepared(model: nn.Module, warn: bool = False) -> tuple[nn.Module, int]:
    """An eval-mode deep copy of ``model``, hooks removed, attention modules swapped for plain ops."""
    model = _copy(model).eval()
    hooks = _remove_hooks(model)
    if hooks and warn:
        warnings.warn(f"signgd does not convert hooks: {'; '.join(hooks)}. They stay on your model; the "
                      f"converted network never calls them (remove a hook that changes a module's output "
                      f"before converting, and write that change into forward())", stacklevel=4)
    return make_traceable(model)  # attention/transformer modules -> plain ops fx can see


def _trace_concrete(model: nn.Module, leaf_types: tuple[type, ...], sample: torch.Tensor, proxy_buffers: bool = True):
    """``(tracer, graph)`` from tracing with known sizes (``ConcreteTracer``), or the exception when
    that fails too."""
    one = sample[:1]
    two = sample[:2] if sample.shape[0] >= 2 else torch.cat([one, one.flip(-1)])
    tracer = ConcreteTracer((one, two), leaf_types, proxy_buffers)
    try:
        graph = tracer.trace(model, concrete_args=_optional_arguments(model))
    except Exception as exc:  # noqa: BLE001 - the plain tracer's error is the one reported
        log.debug("tracing %s with known sizes failed too: %s", type(model).__name__, exc)
        return exc
    log.info("traced %s with its sizes known (plain torch.fx tracing fails on a branch on shapes)",
             type(model).__name__)
    return tracer, graph


def _trace_error(model: nn.Module, exc: BaseException, again: BaseException | None = None) -> TraceError:
    path, cls = getattr(exc, "_signgd_module", ("", type(model).__name__))
    module = f"module {path!r} ({cls})" if path else f"{cls}.forward"
    leaf = (f"; torch.fx can also keep that module whole with convert(..., leaf_modules=[{cls}]), which "
            f"signgd accepts when {cls} is a layer it has a rule for (conv, linear, pooling, ...)" if path else "")
    return TraceError(
        f"torch.fx could not trace {type(model).__name__}: in {module}{_innermost_frame(exc)}: "
        f"{type(exc).__name__}: {exc}. Fix: write that code without Python control flow on tensor "
        f"values or the batch size (if/for on x.sum(), x.item(), x.shape[0] > 1: use torch.where, or decide in "
        f"__init__){leaf}" + _known_sizes_error(again))


def _known_sizes_error(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = " ".join(str(exc).split())[:200]
    return (f". With its sizes known, tracing gets past that branch and then fails{_innermost_frame(exc)}: "
            f"{type(exc).__name__}: {text}")


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


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_SIGNGD_GRAPH_DIR = os.path.dirname(__file__) + os.sep


def _innermost_frame(exc: BaseException) -> str:
    """`` at file:line `source` `` of the innermost frame of the model's own code (not torch's, not
    this package's tracer), else of the innermost frame outside torch.fx."""
    tb = exc.__traceback__
    own = outside_fx = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(_TORCH_DIR) and not filename.startswith(_SIGNGD_GRAPH_DIR + "trace.py"):
            own = tb
        if "torch/fx" not in filename:
            outside_fx = tb
        tb = tb.tb_next
    last = own or outside_fx
    if last is None:
        return ""
    filename, line = last.tb_frame.f_code.co_filename, last.tb_lineno
    source = linecache.getline(filename, line).strip()
    return f" at {filename}:{line}" + (f" `{source}`" if source else "")
