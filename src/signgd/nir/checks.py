"""What NIR can express of a converted network, checked before anything is built (``signgd.nir``).

One ``ExportError`` names every offending node at once, with what NIR lacks for it, so a user sees
the whole answer (swap max pooling for average pooling, GELU for ReLU...) from one attempt.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ExportError
from ..neurons import SpikingNeuron

# Why a neuron target other than ReLU has no NIR form.
_LACKS = {
    "max": "max pooling over spikes: NIR has no max",
    "square": "a normalization (LayerNorm/RMSNorm): NIR has no normalization",
    "divide_sqrt": "a normalization (LayerNorm/RMSNorm): NIR has no normalization",
    "mul": "a product of two activations: NIR has no multiplication of signals",
    "matmul": "a product of two activations: NIR has no multiplication of signals",
    "divide": "a ratio of two activations: NIR has no division of signals",
    "exp": "a softmax or exponential: NIR has no exponential",
}
_SHOWN = 8  # offending nodes named in the message; the rest are counted


def check_exportable(snn) -> None:
    """Raise ``ExportError`` unless every node of ``snn`` has an exact NIR form."""
    gm = snn.graph_module
    neurons = [n.name for n in gm.graph.nodes if n.op == "call_module"
               and isinstance(gm.get_submodule(n.target), SpikingNeuron)]
    dynamics = snn.settings["dynamics"]
    if dynamics == "signgd":
        raise ExportError(f"cannot export to NIR: NIR has no sign-gradient-descent neuron for the signGD "
                          f"neurons {_names(neurons)}; convert with dynamics='if' (NIR's integrate-and-fire) to export")
    if dynamics != "if":
        raise ExportError(f"cannot export to NIR: the {dynamics} neurons {_names(neurons)} (running-average input, "
                          f"x_0 = A(0)) are not NIR's IF neuron; convert with dynamics='if' to export")
    if snn.settings["encoding"] != "analog":
        raise ExportError(f"cannot export to NIR: the {snn.settings['encoding']!r} input encoding happens outside "
                          f"the graph, and a NIR graph receives the input itself at every step; convert with "
                          f"encoding='analog' (the default for dynamics='if')")
    offenders = [f"{n.name} ({why})" for n in gm.graph.nodes if (why := _lacks(gm, n))]
    if offenders:
        shown = ", ".join(offenders[:_SHOWN]) + (f" and {len(offenders) - _SHOWN} more" if len(offenders) > _SHOWN
                                                 else "")
        raise ExportError(f"cannot export to NIR: {len(offenders)} node(s) have no NIR form: {shown}; NIR expresses "
                          f"conv, linear, average pooling, flatten, residual adds and ReLU as IF neurons")


def _names(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _lacks(gm: fx.GraphModule, n: fx.Node) -> str | None:
    """Why node ``n`` has no NIR form, or None when it has one."""
    if n.op in ("placeholder", "output"):
        return None
    if n.op == "call_module":
        return _module_lacks(gm.get_submodule(n.target), n)
    if n.op == "call_function":
        if n.target in (operator.add, torch.add):
            ok = len(n.args) == 2 and all(isinstance(a, fx.Node) for a in n.args) and not n.kwargs
            return None if ok else "an add with a constant or a factor: NIR adds signals only"
        if n.target is F.avg_pool2d:
            return _avg_pool_lacks(*_call_args(n, ("input", "kernel_size", "stride", "padding", "ceil_mode",
                                                   "count_include_pad", "divisor_override"))[3:])
        if n.target is F.adaptive_avg_pool2d:
            return None
        if n.target is torch.flatten:
            return _flatten_lacks(*_call_args(n, ("input", "start_dim", "end_dim"))[1:])
    if n.op == "call_method" and n.target == "flatten":
        return _flatten_lacks(*_call_args(n, ("self", "start_dim", "end_dim"))[1:])
    what = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    return f"{n.op} {what}: no NIR primitive"


def _module_lacks(mod: nn.Module, n: fx.Node) -> str | None:
    if isinstance(mod, SpikingNeuron):
        if mod.target == "relu":
            return None
        return _LACKS.get(mod.target, f"a {mod.target} neuron: NIR has no {mod.target} (only IF/LIF neurons)")
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros":
            return f"{mod.padding_mode} padding: NIR pads convolutions with zeros"
        return None
    if isinstance(mod, nn.Linear):
        return None
    if isinstance(mod, nn.AvgPool2d):
        return _avg_pool_lacks(mod.padding, mod.ceil_mode, mod.count_include_pad, mod.divisor_override)
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return None
    if isinstance(mod, nn.Flatten):
        return _flatten_lacks(mod.start_dim, mod.end_dim)
    return f"{type(mod).__name__}: no NIR primitive"


def _call_args(n: fx.Node, names: tuple[str, ...]) -> list:
    """The call's arguments by position, keywords filled in, None where absent (torch's default)."""
    values = list(n.args) + [None] * (len(names) - len(n.args))
    for i, name in enumerate(names):
        if name in n.kwargs:
            values[i] = n.kwargs[name]
    return values


def _avg_pool_lacks(padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None) -> str | None:
    if padding not in (None, 0, (0, 0), [0, 0]) or ceil_mode or divisor_override is not None:
        return "average pooling with padding, ceil_mode or a divisor: NIR's SumPool2d has none of these"
    return None


def _flatten_lacks(start_dim=None, end_dim=None) -> str | None:
    if (start_dim if start_dim is not None else 0) != 1 or (end_dim if end_dim is not None else -1) != -1:
        return "a flatten other than all of a sample's dims: the exporter writes only that one"
    return None
