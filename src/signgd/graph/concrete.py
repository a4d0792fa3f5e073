"""Trace a model whose Python code branches on shapes: sizes are known numbers, except the batch.

torch.fx cannot trace ``if H == self.window_size:`` or ``max(k_h / q_h, 1.0)`` (timm's TinyViT,
MobileViT, MViTv2, EfficientViT, ConViT, VGG's ConvMlp): ``H`` is a Proxy. A converted network has a
fixed sample shape (``snn.input_shape``), so every size that does not depend on the batch is a
constant of the model. This tracer runs the model on two real batches (1 and 2 samples of the
calibration data) alongside the trace, so that every Proxy knows its two values; ``x.shape`` and
``x.size()`` then give a plain int for each dimension that is the same in both runs, and a Proxy
(computed at run time) for one that changes with the batch. Branches on spatial sizes are decided
once, as Python decides them for this input shape; a branch on the batch (``if B > 1``) or on
values (``if x.sum() > 0``) still fails, with fx's error. ``x.device`` and ``x.dtype`` are the
data's. The graph holds the same torch calls as plain fx tracing gives.

``graph/trace.py`` uses it only when plain fx tracing fails and a sample is known.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch.fx.node import map_aggregate
from torch.fx.proxy import Attribute

from ..errors import TraceError
from . import ops
from .nodes import where

_MISSING = object()


class _ConcreteProxy(fx.Proxy):
    """A Proxy that also holds the node's values on the two example batches (``_values``)."""

    _values: tuple | None = None

    def _pair(self):
        return self._values if self._values is not None else (_MISSING, _MISSING)

    def _tensors(self):
        a, b = self._pair()
        return (a, b) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else None

    def size(self, dim: int | None = None):
        t = self._tensors()
        if t is None:
            return self.tracer.create_proxy("call_method", "size", (self,) if dim is None else (self, dim), {})
        a, b = t
        if dim is not None:
            return a.shape[dim] if a.shape[dim] == b.shape[dim] else self.tracer.create_proxy(
                "call_method", "size", (self, dim), {})
        return tuple(self.size(d) for d in range(a.dim()))  # a tuple: it may hold Proxies

    @property
    def shape(self):
        return self.size()

    def dim(self) -> Any:
        t = self._tensors()
        return t[0].dim() if t is not None else self.tracer.create_proxy("call_method", "dim", (self,), {})

    @property
    def ndim(self):
        return self.dim()

    @property
    def dtype(self):
        t = self._tensors()
        return t[0].dtype if t is not None else Attribute(self, "dtype")

    @property
    def device(self):
        t = self._tensors()
        return t[0].device if t is not None else Attribute(self, "device")

    def numel(self):
        t = self._tensors()
        if t is not None and t[0].numel() == t[1].numel():
            return t[0].numel()
        return self.tracer.create_proxy("call_method", "numel", (self,), {})

    def __setitem__(self, index, value) -> None:
        """``x[index] = value`` recorded as ``x = ops.assign(x, index, value)``: later reads of this Proxy see the new
        value (a view taken before the assignment does not: ``check_assignments`` then finds that the graph computes
        something else than the model, and says so)."""
        new = self.tracer.create_proxy("call_function", ops.assign, (self, index, value), {})
        self.node, self._values = new.node, new._values

    def __len__(self) -> int:
        t = self._tensors()
        if t is not None and t[0].dim() and t[0].shape[0] == t[1].shape[0]:
            return t[0].shape[0]
        return super().__len__()


class ConcreteTracer(fx.Tracer):
    """An fx Tracer whose Proxies carry the values of two example batches (see the module's doc).

    Buffers are read as ``get_attr`` Proxies (``proxy_buffers``), as parameters are. Why: a buffer read as a plain
    tensor cannot take a batch-dependent size, ``self.rel_indices.expand(B, -1, -1, -1)`` (timm ConViT: torch's
    argument parser refuses a Proxy for an int); a Proxy records the call. A model that branches on a buffer's value
    (``if self.flag:``) cannot be traced so; ``graph/trace.py`` then traces it again with plain buffers."""

    def __init__(self, examples: tuple[torch.Tensor, torch.Tensor], leaf_types: tuple[type, ...] = (),
                 proxy_buffers: bool = True):
        super().__init__()
        self.examples = examples
        self.leaf_types = leaf_types
        self.proxy_buffer_attributes = proxy_buffers

    def is_leaf_module(self, m, qualname: str) -> bool:
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)

    # While a node's values are computed, fx's patches of nn.Module.__call__ and __getattr__ must let
    # the real modules run (a leaf's forward, its parameters) without adding nodes to the graph.
    _computing = False

    def call_module(self, m, forward, args, kwargs):
        if self._computing:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._computing:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if isinstance(proxy, _ConcreteProxy):
            proxy._values = self._run(kind, target, args, kwargs)
        return proxy

    def _run(self, kind, target, args, kwargs) -> tuple | None:
        """The node's value on each example batch (None where it cannot be computed)."""
        self._computing = True
        try:
            return self._compute(kind, target, args, kwargs)
        finally:
            self._computing = False

    def _compute(self, kind, target, args, kwargs) -> tuple | None:
        if kind == "placeholder":
            if self._placeholders >= 1:
                return None
            self._placeholders += 1
            return tuple(x.clone() for x in self.examples)
        if kind == "get_attr":
            value = self.root
            for part in str(target).split("."):
                value = getattr(value, part)
            return value, value
        out = []
        for i in range(2):
            try:
                a, k = _values(args, i), _values(kwargs, i)
            except LookupError:
                return None
            try:
                if kind == "call_function":
                    out.append(target(*a, **k))
                elif kind == "call_method":
                    out.append(getattr(a[0], target)(*a[1:], **k))
                elif kind == "call_module":
                    out.append(self.root.get_submodule(target)(*a, **k))
                else:
                    return None
            except Exception:  # noqa: BLE001 - a value it cannot compute: that proxy is symbolic
                return None
        return tuple(out)

    def trace(self, root, concrete_args=None):
        self._placeholders = 0
        with torch.no_grad():
            return super().trace(root, concrete_args)


def _values(tree, i: int):
    def value(a):
        if isinstance(a, _ConcreteProxy) and a._values is not None:
            return a._values[i]
        if isinstance(a, Attribute):
            root = value(a.root)
            return getattr(root, a.attr)
        if isinstance(a, fx.Proxy):
            raise LookupError(a)
        return a

    return map_aggregate(tree, value)


def check_assignments(gm: fx.GraphModule, fresh_model, sample: torch.Tensor) -> None:
    """Raise ``TraceError`` when ``gm`` holds item assignments (``ops.assign``) and does not compute what the model
    (``fresh_model()``: an eval-mode copy, made only when there is an assignment) computes on ``sample``: the model read
    a view taken before an assignment, which eager code sees through and the graph's new value does not
    (``_ConcreteProxy.__setitem__``)."""
    assigned = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is ops.assign]
    if not assigned:
        return
    model = fresh_model()
    with torch.no_grad():
        want, got = model(sample.clone()), gm(sample.clone())
    if isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and want.shape == got.shape and \
            torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max().clamp_min(1e-30))):
        return
    own = f"{type(model).__name__}.forward"  # an assignment in the model's own forward has no module stack
    places = sorted({where(n) if n.meta.get("nn_module_stack") else own for n in assigned})
    raise TraceError(f"{type(model).__name__} assigns into a tensor (x[...] = ...) in {', '.join(places[:3])}"
                     f"{f' and {len(places) - 3} more' if len(places) > 3 else ''}, and reads it through a view taken "
                     f"before the assignment: signgd records an assignment as a new value, so that view would not see "
                     f"it and the network would compute something else. Fix: take the view after the assignment")
