"""Synaptic operations node by node: the converted graph's affine part run on 0/1 "changed" patterns.

In the event-driven execution (``signgd.event_driven``) every affine node receives, at each step, the
*change* of its inputs and passes on the change of its output. This interpreter follows where the
changes go: each input-dependent value is a 0/1 tensor marking the elements that changed (were sent)
at this step, and each affine node

- counts its work: for every changed input element, one operation per output element it reaches
  through a non-zero weight (a conv: its kernel footprint, edges included; a linear layer: its
  non-zero column; a sum, mean, pool or add: one per window it belongs to; a reshape: nothing);
- passes on the pattern of the output elements that received something.

The kind of each value decides what an operation costs. An **event** is a change of a size fixed at
conversion time (a binary spike times the sender's static scale, or such a spike reshaped or scaled by
a constant): a weighted op adds ``w * scale`` for it, an accumulate (AC), and a scaling by a constant
folds into those weights (free). A power-of-two adaptive step (``adaptive(pow2=True)``, ``+-2**k`` times
the static scale) is an event too: ``w * scale * 2**k`` is an exponent add, counted as the AC; so is a
graded spike (``dynamics="graded"``: ``+-2**k`` times the static scale). Any other
change is **real** (the float input encoding, adaptive gains, anything a sum produced): a weighted op
multiplies it, a MAC, and a scaling costs a MAC per element. Adding a number is an AC whatever its
kind: sums, means, pools and adds cost ACs, and a mean's or an average pool's ``1/n`` costs a MAC per
output element that changed.

The same interpreter prices the ANN (``ann=True``): every value is real and dense, biases and
constant operands cost an AC per output element, and an n-input sum costs ``n - 1`` ACs per output.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..errors import ReportError
from ..graph import ops
from ..graph import spellings as sp
from ..graph.deps import depends_on_input
from ..neurons import SpikingNeuron
from .changed import changed_mask

__all__ = ["EVENT", "REAL", "SynapseCounter"]

EVENT, REAL = "event", "real"

_WEIGHTED_FUNCTIONS = set(sp.CONV_FUNCTIONS) | sp.LINEAR_FUNCTIONS
_MATMULS = sp.MATMUL_FUNCTIONS | sp.BATCHED_MATMUL_FUNCTIONS
_SCALE_FUNCTIONS = sp.MULTIPLY_FUNCTIONS | sp.DIVIDE_FUNCTIONS | sp.NEGATE_FUNCTIONS | {operator.pos}
_SCALE_METHODS = sp.MULTIPLY_METHODS | sp.DIVIDE_METHODS | sp.NEGATE_METHODS
_ADD_FUNCTIONS = sp.ADD_FUNCTIONS | sp.SUBTRACT_FUNCTIONS
_ADD_METHODS = sp.ADD_METHODS | sp.SUBTRACT_METHODS
_REDUCE_FUNCTIONS = sp.MEAN_FUNCTIONS | sp.SUM_FUNCTIONS
_REDUCE_METHODS = sp.MEAN_METHODS | sp.SUM_METHODS
_SHAPE_FUNCTIONS = sp.SHAPE_FUNCTIONS | {ops.window_slice, ops.squeeze_last, ops.assign}
_SHAPE_METHODS = sp.SHAPE_METHODS | sp.FLOAT_CAST_METHODS | sp.CAST_METHODS


def _nonzero(c, like: torch.Tensor):
    if isinstance(c, torch.Tensor):
        return (c != 0).to(like.dtype)
    return float(c != 0)


def _dense(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


class SynapseCounter(fx.Interpreter):
    """Counts one step: ``run(input_pattern)`` with ``neuron_patterns`` (neuron name -> 0/1 tensor of
    the neurons that sent a change at this step) and ``neuron_kinds`` (name -> EVENT or REAL) set
    before. After a run, ``ops[node name] = [ACs, MACs]`` (float64 sums over the batch)."""

    def __init__(self, gm: fx.GraphModule, *, input_kind: str = REAL, ann: bool = False):
        super().__init__(gm, garbage_collect_values=True)
        self.dependent = {n.name for n in depends_on_input(gm)}
        self.input_kind, self.ann = input_kind, ann
        self.neuron_patterns: dict[str, torch.Tensor] = {}
        self.neuron_kinds: dict[str, str] = {}
        self.neuron_inputs: dict[str, list[tuple[int, ...]]] = {}  # per-sample input shapes (ANN pricing)
        # neuron -> (changed input elements, bool mask of the outputs with a changed input) of the last run
        self.neuron_events: dict[str, tuple[float, torch.Tensor]] = {}
        self.kinds: dict[str, str] = {}
        self.ops: dict[str, list[float]] = {}
        self._node: fx.Node | None = None

    def run(self, *args, **kwargs):
        self.kinds, self.ops, self.neuron_events = {}, {}, {}
        return super().run(*args, **kwargs)

    def run_node(self, n: fx.Node):
        self._node = n
        if n.op in ("placeholder", "output", "get_attr"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.name not in self.dependent:  # constants and shapes: computed as they are
            return getattr(fx.Interpreter, n.op)(self, n.target, args, kwargs)
        deps = [a.name for a in n.all_input_nodes if a.name in self.dependent]
        kinds = [self.kinds[d] for d in deps]
        self.kinds[n.name] = EVENT if kinds and all(k == EVENT for k in kinds) else REAL
        return getattr(self, n.op)(n.target, args, kwargs)

    # ---- bookkeeping -----------------------------------------------------------------------------
    def _count(self, ac=0.0, mac=0.0) -> None:
        row = self.ops.setdefault(self._node.name, [0.0, 0.0])
        row[0] += float(ac)
        row[1] += float(mac)

    def _weighted(self, out: torch.Tensor, kind: str) -> torch.Tensor:
        """A weighted op's synapses: ACs on events, MACs on real changes; its output is real."""
        synapses = out.sum(dtype=torch.float64)
        self._count(ac=synapses) if kind == EVENT and not self.ann else self._count(mac=synapses)
        self.kinds[self._node.name] = REAL
        return _dense(out)

    def _is_dep(self, arg) -> bool:
        return isinstance(arg, fx.Node) and arg.name in self.dependent

    # ---- node kinds ------------------------------------------------------------------------------
    def placeholder(self, target, args, kwargs):
        x = super().placeholder(target, args, kwargs)
        if isinstance(x, torch.Tensor):
            self.kinds[self._node.name] = REAL if self.ann else self.input_kind
        return x

    def call_module(self, target, args, kwargs):
        mod = self.submodules[target]
        node, x = self._node, args[0] if args else None
        if isinstance(mod, SpikingNeuron):
            self.neuron_inputs[target] = [tuple(a.shape[1:]) for a in args]
            self.kinds[node.name] = REAL if self.ann else self.neuron_kinds[target]
            if self.ann:
                return torch.ones_like(mod(*args))
            self.neuron_events[target] = (sum(float(a.sum(dtype=torch.float64)) for a in args),
                                          changed_mask(mod, args))
            return self.neuron_patterns[target]
        kind = self.kinds[node.name]
        if isinstance(mod, sp.CONV_MODULES):
            out = self._weighted(mod._conv_forward(x, _nonzero(mod.weight, x), None), kind)
            self._bias(mod.bias, out)
            return out
        if isinstance(mod, sp.LINEAR_MODULES):
            out = self._weighted(F.linear(x, _nonzero(mod.weight, x)), kind)
            self._bias(mod.bias, out)
            return out
        if isinstance(mod, sp.ANY_BATCH_NORM):
            return self._scaled(x, kind)
        if isinstance(mod, sp.AVG_POOL_MODULES):
            return self._pool(x, _avg_pool_sums(x, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode,
                                                mod.count_include_pad))
        if isinstance(mod, sp.ADAPTIVE_AVG_POOL_MODULES):
            return self._pool(x, _adaptive_sums(x, mod.output_size))
        if isinstance(mod, sp.PAD_MODULES) and hasattr(mod, "value"):  # constant padding: never changes
            return F.pad(x, mod.padding, value=0.0)
        if isinstance(mod, sp.SHAPE_MODULES):
            return mod(x)
        if isinstance(mod, sp.RESAMPLE_MODULES):
            mode = "sum" if isinstance(mod, torch.nn.Fold) else "move" if isinstance(mod, torch.nn.Unfold) else (
                "bilinear" if isinstance(mod, torch.nn.UpsamplingBilinear2d) else getattr(mod, "mode", "nearest"))
            return self._resample(lambda m: mod(m), mode, x)
        raise self._unknown(type(mod).__name__)

    def call_function(self, target, args, kwargs):
        node = self._node
        kind = self.kinds[node.name]
        if target in _WEIGHTED_FUNCTIONS:
            args, kwargs = list(args), dict(kwargs)
            bias = kwargs.pop("bias", args[2] if len(args) > 2 else None)
            if "weight" in kwargs:
                kwargs["weight"] = _nonzero(kwargs["weight"], args[0])
            else:
                args[1] = _nonzero(args[1], args[0])
            if len(args) > 2:
                args[2] = None
            out = self._weighted(target(*args, **kwargs), kind)
            self._bias(bias, out)
            return out
        if target in _MATMULS:
            return self._matmul(target, args)
        if target in _SCALE_FUNCTIONS:
            return self._scaling(target, args)
        if target in _ADD_FUNCTIONS:
            return self._add(args)
        if target in _REDUCE_FUNCTIONS:
            return self._reduce(target, args, kwargs, mean=target in sp.MEAN_FUNCTIONS)
        if target in sp.AVG_POOL_FUNCTIONS:
            return self._pool(args[0], _avg_pool_function_sums(target, args, kwargs))
        if target in sp.ADAPTIVE_AVG_POOL_FUNCTIONS:
            size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
            return self._pool(args[0], _adaptive_sums(args[0], size))
        if target in sp.PAD_FUNCTIONS:
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            if mode == "constant":  # the constant never changes
                return F.pad(args[0], args[1], value=0.0)
            return F.pad(args[0], args[1], mode=mode)  # reflect, replicate, circular: copies
        if target in sp.RESAMPLE_FUNCTIONS:
            return self._resample(lambda m: target(m, *args[1:], **kwargs), _resample_mode(target, args, kwargs),
                                  args[0])
        if target is torch.addcmul:
            return self._addcmul(args, kwargs)
        if target in sp.EINSUM_FUNCTIONS:
            operands = [a if self._is_dep(n) else _nonzero(a, args[1]) for a, n in zip(args[1:], self._node.args[1:])]
            return self._weighted(target(args[0], *operands), kind)
        if target is ops.pool_windows:
            return ops.pool_windows(*args[:7], 0.0)
        if target in _SHAPE_FUNCTIONS:
            args, kwargs = self._constants_unchanged()
            return target(*args, **kwargs)
        raise self._unknown(sp.function_name(target))

    def call_method(self, target, args, kwargs):
        kind = self.kinds[self._node.name]
        if target in sp.MATMUL_METHODS:
            return self._matmul(torch.matmul, args)
        if target in _SCALE_METHODS:
            fn = sp.SCALING_METHOD_FUNCTIONS.get(target, operator.neg)
            return self._scaling(fn, args)
        if target in _ADD_METHODS:
            return self._add(args)
        if target in _REDUCE_METHODS:
            return self._reduce(getattr(torch, target), args, kwargs, mean=target in sp.MEAN_METHODS)
        if target in _SHAPE_METHODS:
            args, kwargs = self._constants_unchanged()
            return getattr(args[0], target)(*args[1:], **kwargs)
        del kind
        raise self._unknown(f"Tensor.{target}")

    # ---- the rules -------------------------------------------------------------------------------
    def _unknown(self, what: str) -> ReportError:
        return ReportError(f"the energy count does not know the op {what} (node {self._node.name}); "
                           f"add its rule to signgd/costs/synapses.py")

    def _constants_unchanged(self):
        """The node's arguments with every constant tensor as zeros: joining an activation with a
        constant (``torch.cat([cls_token, x])``) moves changes only where the activation was."""
        def value(n):
            v = self.env[n]
            if n.name in self.dependent or not isinstance(v, torch.Tensor):
                return v
            return torch.ones_like(v) if self.ann else torch.zeros_like(v)
        return fx.node.map_arg((self._node.args, self._node.kwargs), value)

    def _addcmul(self, args, kwargs):
        """``input + value * t1 * t2`` with one activation factor and a constant input (timm's GRN, layer
        scale): a scaling by constants; with an activation input and constant factors, a pass-through."""
        node = self._node
        inp, t1, t2 = args[:3]
        dep = [self._is_dep(n) for n in node.args[:3]]
        if dep[0] and not (dep[1] or dep[2]):
            if self.ann:
                self._count(ac=inp.numel())
            return torch.broadcast_to(inp, torch.broadcast_shapes(inp.shape, t1.shape, t2.shape)).clone()
        if dep[0]:
            raise self._unknown("torch.addcmul of an activation plus a product with an activation")
        x, c = (t1, t2) if dep[1] else (t2, t1)
        out = x * _nonzero(c, x) * (torch.ones_like(inp, dtype=x.dtype) if isinstance(inp, torch.Tensor) else 1.0)
        if self.ann:
            self._count(ac=out.numel())
        return self._scaled(out, self.kinds[node.name])

    def _resample(self, fn, mode: str, x: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour resampling and patch extraction copy values (free); folding overlapping
        patches adds them (an AC per changed input element)."""
        if mode in ("move", "nearest", "nearest-exact"):
            return fn(x)
        if mode == "sum":
            out = fn(x)
            self._count(ac=x.sum(dtype=torch.float64))
            self.kinds[self._node.name] = REAL
            return _dense(out)
        raise self._unknown(f"interpolation in mode {mode!r} (a weighted sum of neighbours)")

    def _bias(self, bias, out: torch.Tensor) -> None:
        if self.ann and bias is not None:
            self._count(ac=out.numel())

    def _matmul(self, fn, args):
        a, b = args[0], args[1]
        na, nb = self._node.args[0], self._node.args[1]
        if self._is_dep(na) and self._is_dep(nb):
            raise self._unknown("a product of two activations outside a neuron")
        kind = self.kinds[self._node.name]
        out = fn(a, _nonzero(b, a)) if self._is_dep(na) else fn(_nonzero(a, b), b)
        return self._weighted(out, kind)

    def _scaling(self, fn, args):
        """``x * c``, ``x / c``, ``-x``: the pattern spread over the broadcast shape."""
        node = self._node
        x = args[0]
        if len(args) > 1 and not self._is_dep(node.args[0]):  # c * x
            x, c = args[1], args[0]
        elif len(args) > 1:
            c = args[1]
        else:
            c = 1.0
        if fn in sp.DIVIDE_FUNCTIONS:
            out = x * (torch.ones_like(c, dtype=x.dtype) if isinstance(c, torch.Tensor) else 1.0)
        else:
            out = x * _nonzero(c, x)
        return self._scaled(out, self.kinds[node.name])

    def _scaled(self, out: torch.Tensor, kind: str) -> torch.Tensor:
        """A scaling by constants: folded into the sender's static size for events (free), a MAC
        per changed element otherwise."""
        if kind == REAL or self.ann:
            self._count(mac=out.sum(dtype=torch.float64))
        return out

    def _add(self, args):
        node = self._node
        parts = [a for a, n in zip(args, node.args) if self._is_dep(n) and isinstance(a, torch.Tensor)]
        shape = torch.broadcast_shapes(*(a.shape for a in args if isinstance(a, torch.Tensor)))
        spread = [p.expand(shape) for p in parts]
        out = spread[0].clone() if len(spread) == 1 else _dense(sum(spread))
        if self.ann:  # n operands: n - 1 additions per output element
            self._count(ac=(len(args) - 1) * math.prod(shape))
        elif len(parts) > 1:
            self._count(ac=sum(p.sum(dtype=torch.float64) for p in spread))
            self.kinds[node.name] = REAL
        # else: x + constant passes the change on unchanged
        return out

    def _reduce(self, fn, args, kwargs, mean: bool):
        x = args[0]
        out = _dense(fn(x, *args[1:], **kwargs))
        if self.ann:
            self._count(ac=x.numel() - out.numel(), mac=out.numel() if mean else 0)
        else:
            self._count(ac=x.sum(dtype=torch.float64), mac=out.sum(dtype=torch.float64) if mean else 0)
        self.kinds[self._node.name] = REAL
        return out

    def _pool(self, x: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
        """An average pool: ``sums`` holds, per output, the changed inputs in its window."""
        out = _dense(sums)
        if self.ann:
            self._count(ac=sums.sum(dtype=torch.float64) - out.numel(), mac=out.numel())
        else:
            self._count(ac=sums.sum(dtype=torch.float64), mac=out.sum(dtype=torch.float64))
        self.kinds[self._node.name] = REAL
        return out


def _resample_mode(fn, args, kwargs) -> str:
    if fn is F.fold:
        return "sum"
    if fn is F.unfold:
        return "move"
    if fn is F.upsample_bilinear:
        return "bilinear"
    if fn is F.upsample_nearest:
        return "nearest"
    names = ["input", "size", "scale_factor", "mode"]
    return {**dict(zip(names, args)), **kwargs}.get("mode", "nearest")


def _avg_pool_sums(x, kernel, stride, padding, ceil_mode, count_include_pad) -> torch.Tensor:
    """Per output window, the number of marked inputs in it (padding marks nothing)."""
    dims = x.dim() - 2
    if dims == 1:
        return _avg_pool_sums(x.unsqueeze(-2), (1, _one(kernel)), (1, _one(stride if stride else kernel)),
                              (0, _one(padding)), ceil_mode, count_include_pad).squeeze(-2)
    return F.avg_pool2d(x, kernel, stride if stride else kernel, padding, ceil_mode, True, divisor_override=1)


def _one(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def _avg_pool_function_sums(fn, args, kwargs) -> torch.Tensor:
    names = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"]
    defaults = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True}
    bound = {**defaults, **dict(zip(names, args)), **kwargs}
    return _avg_pool_sums(bound["input"], bound["kernel_size"], bound["stride"], bound["padding"],
                          bound["ceil_mode"], bound["count_include_pad"])


def _adaptive_sums(x: torch.Tensor, output_size) -> torch.Tensor:
    """Adaptive average pooling's window sums: the average times each window's size (PyTorch's
    windows: ``floor(i L / O)`` to ``ceil((i + 1) L / O)``)."""
    dims = x.dim() - 2 if x.dim() > 2 else 1
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * dims
    spatial = x.shape[-dims:]
    sizes = [s if s is not None else n for s, n in zip(sizes, spatial)]
    avg = F.adaptive_avg_pool1d(x, sizes[0]) if dims == 1 else F.adaptive_avg_pool2d(x, sizes)
    count = torch.ones((), dtype=x.dtype, device=x.device)
    for d, (n_in, n_out) in enumerate(zip(spatial, sizes)):
        idx = torch.arange(n_out, device=x.device)
        width = (torch.div((idx + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
                 - torch.div(idx * n_in, n_out, rounding_mode="floor")).to(x.dtype)
        shape = [1] * dims
        shape[d] = n_out
        count = count * width.reshape(shape)
    return torch.round(avg * count)
