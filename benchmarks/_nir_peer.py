"""Run an exported NIR graph in another library: Norse's integrate-and-fire cell, wired by nirtorch.

``nirtorch.nir_to_torch`` is the NIR project's PyTorch interpreter (torch.fx, nodes in topological
order, a node's inputs summed with ``torch.add``); its default mappings give ``Conv2d``, ``Affine``,
``SumPool2d`` (``torch.nn.LPPool2d`` with p = 1) and ``Flatten``. Each ``nir.IF`` becomes Norse's
``IAFCell`` with the node's thresholds, as Norse's own importer maps it (``norse.torch.from_nir``).

Why not ``norse.torch.from_nir`` itself: the released Norse (1.1.0) builds the module with the
deprecated ``nirtorch.load``, whose executor orders nodes by a pre-order depth-first walk; at a
residual join the summing neuron then runs before its second input is computed and reads that
input's value from the previous step. Norse's main branch maps nodes the same way but through
``nirtorch.nir_to_torch``, which is what this module does. ``Flatten``'s dims are shifted by one for
the batch, as Norse's and SpikingJelly's importers do (NIR's shapes have no batch dimension).
``Affine`` is mapped as Norse maps it (a ``torch.nn.Linear`` with the node's weight and bias):
nirtorch 2.6's default mapping drops the bias (it assigns ``module.weight.bias``), leaving the
Linear's random initial bias.

Used by ``tests/test_nir.py`` and ``benchmarks/nir_accuracy.py``.
"""
from __future__ import annotations

import warnings

import torch


def norse_module(graph) -> torch.nn.Module:
    """The graph (a ``nir.NIRGraph`` or a path to a ``.nir`` file) as a stateful torch module:
    ``out, state = module(x, state)`` runs one time step on a batch."""
    import nir
    import nirtorch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # norse's import-time deprecation warnings (torch.jit.script)
        from norse.torch import IAFCell, IAFParameters

    def if_cell(node):
        return IAFCell(IAFParameters(v_th=torch.as_tensor(node.v_threshold, dtype=torch.float32)))

    def affine(node):
        linear = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0])
        linear.weight.data = torch.as_tensor(node.weight, dtype=torch.float32)
        linear.bias.data = torch.as_tensor(node.bias, dtype=torch.float32)
        return linear

    def flatten(node):
        start, end = int(node.start_dim), int(node.end_dim)
        return torch.nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)

    if not isinstance(graph, nir.NIRNode):
        graph = nir.read(str(graph))
    return nirtorch.nir_to_torch(graph, {nir.IF: if_cell, nir.Affine: affine, nir.Flatten: flatten})


@torch.no_grad()
def run(module: torch.nn.Module, x: torch.Tensor, T: int, spikes: bool = False):
    """``(decoded, counts)``: the mean over steps 1..T of the graph's output for input ``x`` given at
    every step (``decoded[t]`` for every t), and with ``spikes`` the spikes each IF node fired per step,
    summed over the batch (``{node name: [T]}``)."""
    counts: dict[str, torch.Tensor] = {}
    hooks, step = [], [0]
    if spikes:
        from norse.torch import IAFCell

        for name, mod in module.named_modules():
            if isinstance(mod, IAFCell):
                counts[name] = torch.zeros(T, dtype=torch.float64)

                def hook(mod, inputs, output, name=name):
                    counts[name][step[0]] += float(output[0].sum())
                hooks.append(mod.register_forward_hook(hook))
    state, total, decoded = None, None, {}
    try:
        for t in range(T):
            step[0] = t
            out, state = module(x, state)
            total = out.clone() if total is None else total + out
            decoded[t + 1] = total / (t + 1)
    finally:
        for h in hooks:
            h.remove()
    return decoded, counts
