"""Export to NIR, the Neuromorphic Intermediate Representation (``pip install signgd[nir]``).

``export(snn)`` turns a network converted with ``dynamics="if"`` into a ``nir.NIRGraph`` that another
library (Norse, sinabs, snnTorch, Lava, Rockpool, SpikingJelly) can run or map onto hardware;
``write(snn, path)`` saves it with ``nir.write``. The graph, one NIR time step per signgd step:

- ``Input`` (the image itself at every step: the ``analog`` encoding) and ``Output`` (the readout
  layer's value at every step: its mean over the steps is signgd's decoded output);
- ``Conv2d`` / ``Affine`` for conv and linear layers (BN folded in by conversion), carrying the value
  of their input spikes: each spike of a channel with threshold ``s`` stands for ``s``, so ``s`` is
  multiplied into the weights it enters;
- ``IF`` (``r = 1``, ``v_threshold`` = the channel's threshold, ``v_reset = 0`` unused) for each ReLU: the
  neuron resets by subtraction, as snnTorch's and sinabs' importers read an IF (NIR's text resets to
  ``v_reset``, as Norse and SpikingJelly read it; the graph's metadata says which is meant, ``docs/nir.md``);
- ``SumPool2d`` for average pooling (the ``1/k^2`` goes into the next layer's weights), ``Flatten``;
- a residual add is two edges into one node (NIR sums a node's inputs); a spike train entering an add
  or the output goes through a depthwise 1x1 ``Conv2d`` (or diagonal ``Affine``) holding its value.

Everything else is refused with ``signgd.errors.ExportError`` naming the nodes: NIR has no signGD
neuron, no max, no GELU, no normalization. The module is called ``signgd.nir``; inside it, ``import
nir`` is the NIR package (absolute imports).
"""
from __future__ import annotations

from .writer import export, write

__all__ = ["export", "write"]
