"""Run an exported NIR graph in other libraries: snnTorch's or Norse's neuron, wired by nirtorch.

``nirtorch.nir_to_torch`` is the NIR project's PyTorch interpreter (torch.fx, nodes in topological
order, a node's inputs summed with ``torch.add``); its default mappings give ``Conv2d``, ``SumPool2d``
(``torch.nn.LPPool2d`` with p = 1) and ``Flatten``. Each ``nir.IF`` becomes

- ``snntorch_module``: snnTorch's ``Leaky`` neuron with ``beta = 1`` and reset by subtraction (its
  default, delayed reset: the spike's threshold is subtracted at the next step), the classic IF
  neuron signgd simulates (``dynamics="if"``, ``signgd.neurons.if_step``). snnTorch's own ``import_from_nir`` maps
  ``nir.IF`` to a ``Leaky`` with ``beta = 0.9`` (a leak NIR's IF does not have) and one threshold per
  layer, so it cannot run this graph as written;
- ``norse_module``: Norse's ``IAFCell``, as ``norse.torch.from_nir`` maps it: reset *to* ``v_reset``,
  the letter of NIR's IF equations.

Why not the libraries' ``from_nir`` as released: Norse 1.1.0 builds the module with the
deprecated ``nirtorch.load``, whose executor orders nodes by a pre-order depth-first walk; at a
residual join the summing neuron then runs before its second input is computed and reads that
input's value from the previous step. Norse's main branch maps nodes the same way but through
``nirtorch.nir_to_torch``, which is what this module does. ``Flatten``'s dims are shifted by one for
the batch, as SpikingJelly's and sinabs' importers do (NIR's shapes have no batch dimension).
``Affine`` is mapped as Norse maps it (a ``torch.nn.Linear`` with the node's weight and bias):
nirtorch 2.6's default mapping drops the bias (it assigns ``module.weight.bias``), leaving the
Linear's random initial bias.

Used by ``tests/test_nir.py`` and ``benchmarks/nir_accuracy.py``.
"""
from __future__ import annotations

import warnings

import torch


def _read(graph):
    import nir

    return graph if isinstance(graph, nir.NIRNode) else nir.read(str(graph))


def _affine(node):
    linear = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0])
    linear.weight.data = torch.as_tensor(node.weight, dtype=torch.float32)
    linear.bias.data = torch.as_tensor(node.bias, dtype=torch.float32)
    return linear


def _flatten(node):
    start, end = int(node.start_dim), int(node.end_dim)
    return torch.nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


def snntorch_module(graph) -> torch.nn.Module:
    """The graph (a ``nir.NIRGraph`` or a ``.nir`` path) as a torch module, each ``nir.IF`` an snnTorch
    ``Leaky`` neuron with ``beta = 1`` (no leak: an IF neuron), the node's thresholds, reset by
    subtraction (snnTorch's default), hidden state kept in the module: ``out = module(x)`` is one step."""
    import nir
    import nirtorch
    import snntorch

    def if_neuron(node):
        return snntorch.Leaky(beta=1.0, threshold=torch.as_tensor(node.v_threshold, dtype=torch.float32),
                              reset_mechanism="subtract", init_hidden=True)

    return nirtorch.nir_to_torch(_read(graph), {nir.IF: if_neuron, nir.Affine: _affine, nir.Flatten: _flatten})


def norse_module(graph) -> torch.nn.Module:
    """The graph with each ``nir.IF`` Norse's ``IAFCell``, as ``norse.torch.from_nir`` maps it: reset *to*
    ``v_reset`` (NIR's text), state passed by the interpreter: ``out, state = module(x, state)``."""
    import nir
    import nirtorch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # norse's import-time deprecation warnings (torch.jit.script)
        from norse.torch import IAFCell, IAFParameters

    def if_cell(node):
        return IAFCell(IAFParameters(v_th=torch.as_tensor(node.v_threshold, dtype=torch.float32)))

    return nirtorch.nir_to_torch(_read(graph), {nir.IF: if_cell, nir.Affine: _affine, nir.Flatten: _flatten})


def _neurons(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    import snntorch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from norse.torch import IAFCell
    return {name: m for name, m in module.named_modules() if isinstance(m, (snntorch.Leaky, IAFCell))}


@torch.no_grad()
def run(module: torch.nn.Module, x: torch.Tensor, T: int, spikes: bool = False):
    """``(decoded, counts)``: the mean over steps 1..t of the graph's output for input ``x`` given at
    every step (``decoded[t]`` for t = 1..T), and with ``spikes`` the spikes each IF node fired per step,
    summed over the batch (``{node name: [T]}``). Neuron states start at zero."""
    neurons = _neurons(module)
    for m in neurons.values():
        if hasattr(m, "reset_mem"):  # snnTorch keeps its state in the module
            m.reset_mem()
    counts = {name: torch.zeros(T, dtype=torch.float64) for name in neurons} if spikes else {}
    hooks, step = [], [0]
    for name, m in neurons.items() if spikes else ():
        def hook(mod, inputs, output, name=name):
            z = output[0] if isinstance(output, tuple) else output
            counts[name][step[0]] += float(z.sum())
        hooks.append(m.register_forward_hook(hook))
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
