"""Walk a converted IF network's fx graph and build the NIR graph (``signgd.nir``).

Every fx node becomes a ``_Value``: the NIR nodes whose outputs are summed to give it (``sources``,
several after a residual add) and a per-channel factor (``factor``, None for 1): the signgd value is
``factor * (sum of the sources)``. A neuron's spikes carry its threshold as factor, average pooling
multiplies it by ``1/k^2``; a conv or linear layer absorbs the factor of its input into its weights,
and an IF neuron, an add or the output needs it materialized first (``_materialize``).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ExportError
from ..network import SpikingNetwork
from ..neurons import SpikingNeuron
from ..version import __version__
from .checks import check_exportable

_ADDS = {operator.add, torch.add}
_AVG_POOLS = {F.avg_pool2d: "avg", F.adaptive_avg_pool2d: "adaptive"}


def _nir():
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ExportError("exporting to NIR needs the nir package; pip install 'signgd[nir]' (or pip install nir)") \
            from exc
    return nir


@dataclass
class _Value:
    sources: list[str]
    shape: tuple[int, ...]  # one sample's
    factor: torch.Tensor | None = None  # [C] per channel of a [C, H, W] value, [F] per element of an [F] one


def export(snn: SpikingNetwork):
    """The network as a ``nir.NIRGraph`` (see ``signgd.nir``). Raises ``ExportError`` for a network NIR
    cannot express: another dynamics than ``"if"``, an input encoding other than ``"analog"``, an op
    without a NIR primitive (each offending node named)."""
    nir = _nir()
    check_exportable(snn)
    gm = snn.graph_module
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros((1, *snn.input_shape), dtype=_dtype(gm)))
    builder = _Builder(nir, gm)
    for node in gm.graph.nodes:
        builder.visit(node)
    metadata = {"producer": f"signgd {__version__}", "dynamics": "if",
                "reset": "by subtraction: after a spike, v <- v - v_threshold (v_reset is not used)",
                "readout": "the mean of the output over the time steps is the network's decoded output",
                "time_step": "one NIR time unit per simulation step (dt = 1)"}
    return nir.NIRGraph(nodes=builder.nodes, edges=builder.edges, metadata=metadata)


def write(snn: SpikingNetwork, path) -> Path:
    """Export ``snn`` and write it with ``nir.write``; returns the path."""
    graph = export(snn)
    path = Path(path)
    _nir().write(str(path), graph)
    return path


def _dtype(gm: fx.GraphModule) -> torch.dtype:
    p = next(iter(gm.parameters()), None)
    return p.dtype if p is not None else torch.get_default_dtype()


def _array(t: torch.Tensor):
    return t.detach().to(torch.float32).cpu().numpy()


class _Builder:
    def __init__(self, nir, gm: fx.GraphModule):
        self.nir, self.gm = nir, gm
        self.nodes: dict = {}
        self.edges: list[tuple[str, str]] = []
        self.values: dict[fx.Node, _Value] = {}

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape[1:])

    def _add(self, name: str, nir_node, inputs: list[str]) -> str:
        self.nodes[name] = nir_node
        self.edges += [(src, name) for src in inputs]
        return name

    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            shape = self._shape(node)
            self.values[node] = _Value([self._add("input", self.nir.Input(input_type={"input": list(shape)}), [])],
                                       shape)
            return
        if node.op == "output":
            value = self._materialize(self.values[node.args[0]], "output_value")
            self._add("output", self.nir.Output(output_type={"output": list(value.shape)}), value.sources)
            return
        args = [self.values[a] for a in node.args if isinstance(a, fx.Node)]
        mod = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        name = node.name
        if isinstance(mod, SpikingNeuron):
            self.values[node] = self._neuron(name, mod, args[0])
        elif isinstance(mod, nn.Conv2d):
            self.values[node] = self._conv(name, mod, args[0], self._shape(node))
        elif isinstance(mod, nn.Linear):
            self.values[node] = self._linear(name, mod.weight, mod.bias, args[0])
        elif isinstance(mod, nn.AvgPool2d):
            self.values[node] = self._pool(name, args[0], mod.kernel_size, mod.stride, self._shape(node))
        elif isinstance(mod, nn.AdaptiveAvgPool2d) or (node.op == "call_function" and node.target in _AVG_POOLS):
            self.values[node] = self._functional_pool(node, mod, args[0])
        elif isinstance(mod, nn.Flatten) or (node.op, node.target) in (("call_function", torch.flatten),
                                                                        ("call_method", "flatten")):
            self.values[node] = self._flatten(name, args[0], self._shape(node))
        elif node.op == "call_function" and node.target in _ADDS:
            values = [self._materialize(v, f"{name}_{i}") for i, v in enumerate(args)]
            self.values[node] = _Value([s for v in values for s in v.sources], self._shape(node))
        else:  # check_exportable lets nothing else through
            raise ExportError(f"node {name} ({node.format_node()}) has no NIR form")

    # ---- one method per kind of node ----------------------------------------------------------
    def _neuron(self, name: str, mod: SpikingNeuron, value: _Value) -> _Value:
        value = self._materialize(value, f"{name}_input")
        threshold = mod.scale.detach().expand(value.shape) if mod.normalized else torch.ones(value.shape)
        nir_node = self.nir.IF(r=_array(torch.ones(value.shape)), v_threshold=_array(threshold),
                               v_reset=_array(torch.zeros(value.shape)))
        self._add(name, nir_node, value.sources)
        return _Value([name], value.shape, _per_channel(threshold, value.shape, name))

    def _conv(self, name: str, mod: nn.Conv2d, value: _Value, out_shape) -> _Value:
        weight = mod.weight.detach()
        if value.factor is not None:
            groups, c_in = mod.groups, value.shape[0]
            per_group = c_in // groups
            # weight[o, j] reads input channel (o // (c_out / groups)) * (c_in / groups) + j
            group = torch.arange(weight.shape[0]) // (weight.shape[0] // groups)
            channel = group[:, None] * per_group + torch.arange(per_group)[None, :]
            weight = weight * value.factor.to(weight.dtype)[channel][:, :, None, None]
        bias = mod.bias.detach() if mod.bias is not None else torch.zeros(weight.shape[0])
        nir_node = self.nir.Conv2d(input_shape=tuple(value.shape[1:]), weight=_array(weight), stride=mod.stride,
                                   padding=mod.padding, dilation=mod.dilation, groups=mod.groups, bias=_array(bias))
        return _Value([self._add(name, nir_node, value.sources)], tuple(out_shape))

    def _linear(self, name: str, weight, bias, value: _Value) -> _Value:
        if len(value.shape) != 1:
            raise ExportError(f"node {name}: a linear layer on a {list(value.shape)} input (per token) has no NIR "
                              f"form (nir.Affine maps vectors); flatten its input first")
        weight = weight.detach()
        if value.factor is not None:
            weight = weight * value.factor.to(weight.dtype)[None, :]
        bias = bias.detach() if bias is not None else torch.zeros(weight.shape[0])
        nir_node = self.nir.Affine(weight=_array(weight), bias=_array(bias))
        return _Value([self._add(name, nir_node, value.sources)], (weight.shape[0],))

    def _pool(self, name: str, value: _Value, kernel, stride, out_shape) -> _Value:
        kernel = _pair(kernel)
        stride = _pair(stride if stride is not None else kernel)
        nir_node = self.nir.SumPool2d(kernel_size=_array_int(kernel), stride=_array_int(stride),
                                      padding=_array_int((0, 0)))
        channels = value.shape[0]
        factor = value.factor if value.factor is not None else torch.ones(channels)
        factor = factor / (kernel[0] * kernel[1])
        return _Value([self._add(name, nir_node, value.sources)], tuple(out_shape), factor)

    def _functional_pool(self, node: fx.Node, mod, value: _Value) -> _Value:
        out_shape = self._shape(node)
        if isinstance(mod, nn.AdaptiveAvgPool2d) or (mod is None and _AVG_POOLS.get(node.target) == "adaptive"):
            kernel = tuple(i // o for i, o in zip(value.shape[1:], out_shape[1:]))
            if any(i % o for i, o in zip(value.shape[1:], out_shape[1:])):
                raise ExportError(f"node {node.name}: adaptive average pooling from {value.shape[1:]} to "
                                  f"{out_shape[1:]} has uneven windows, which NIR's SumPool2d cannot express; "
                                  f"pick an output size that divides the input")
            return self._pool(node.name, value, kernel, kernel, out_shape)
        kernel = node.args[1] if len(node.args) > 1 else node.kwargs["kernel_size"]
        stride = node.args[2] if len(node.args) > 2 else node.kwargs.get("stride")
        return self._pool(node.name, value, kernel, stride or kernel, out_shape)

    def _flatten(self, name: str, value: _Value, out_shape) -> _Value:
        # NIR's shapes have no batch dimension: flattening a sample's [C, H, W] is dims 0 to -1.
        nir_node = self.nir.Flatten(input_type={"input": list(value.shape)}, start_dim=0, end_dim=-1)
        factor = None
        if value.factor is not None:
            factor = value.factor.reshape(-1, *([1] * (len(value.shape) - 1))).expand(value.shape).reshape(-1)
        return _Value([self._add(name, nir_node, value.sources)], tuple(out_shape), factor)

    def _materialize(self, value: _Value, name: str) -> _Value:
        """The value with factor 1: a spike train (or pooled spikes) goes through a node holding its
        factor, a diagonal 1x1 Conv2d for a feature map, a diagonal Affine for a vector (each output
        is one product plus zeros, so the value is the one signgd computes)."""
        if value.factor is None or bool((value.factor == 1).all()):
            return _Value(value.sources, value.shape)
        factor = value.factor.to(torch.float32)
        if len(value.shape) == 3:
            # A dense diagonal 1x1 conv rather than a depthwise one: NIR's shape inference reads the input
            # channels off the weight and ignores groups.
            nir_node = self.nir.Conv2d(input_shape=tuple(value.shape[1:]),
                                       weight=_array(torch.diag(factor)[:, :, None, None]), stride=1, padding=0,
                                       dilation=1, groups=1, bias=_array(torch.zeros_like(factor)))
        else:
            nir_node = self.nir.Affine(weight=_array(torch.diag(factor)), bias=_array(torch.zeros_like(factor)))
        return _Value([self._add(name, nir_node, value.sources)], value.shape)


def _per_channel(threshold: torch.Tensor, shape, name: str) -> torch.Tensor:
    """One factor per channel of a [C, H, W] value (per element of a vector)."""
    if len(shape) != 3:
        return threshold.reshape(-1).clone()
    flat = threshold.reshape(shape[0], -1)
    if not bool((flat == flat[:, :1]).all()):
        raise ExportError(f"neuron {name} has a threshold per element that varies over positions, and NIR's conv "
                          f"weights carry one value per channel; convert with dynamics='if' (one per channel)")
    return flat[:, 0].clone()


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _array_int(v):
    return torch.tensor(v, dtype=torch.int64).numpy()
