"""Decompose torchvision Swin's two fx-wrapped functions into plain ops the other passes know.

torchvision registers ``shifted_window_attention`` and ``_patch_merging_pad`` with ``torch.fx.wrap``
(their code branches on the input's shape), so a trace records each as one opaque call. With the
shapes known (``tensor_meta``), every branch is decided: this pass writes each call out again as a
small module whose shapes are Python constants (``_WindowAttention``, ``_PatchMergingPad``), traces
that module and puts its graph in place of the call. What the window attention computes is then:

    pad, roll (shifted windows), window partition       affine (reshapes of the activations)
    q k^T * scale (or cosine: normalize(q) normalize(k)^T * exp(clamped logit scale))
                                                        a matmul neuron (normalize: its own pass)
    + relative position bias (+ shift mask)             constants (the mask is built here, once)
    softmax, @ v, projection, window reverse, roll back the softmax pass, a matmul neuron, affine

as ``nn.MultiheadAttention``'s stand-in does. The batch size is never written into a reshape (-1).
"""
from __future__ import annotations

import logging
import math

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import spellings
from .constants import fold_constant
from .nodes import node_arg

log = logging.getLogger("signgd.graph")

_ATTENTION_ARGS = ("input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size", "num_heads",
                   "shift_size", "attention_dropout", "dropout", "qkv_bias", "proj_bias", "logit_scale", "training")


def shift_mask(pad_h: int, pad_w: int, window: tuple[int, int], shift: tuple[int, int], dtype) -> torch.Tensor:
    """The additive mask of shifted windows ``[windows, N, N]`` (-100 between positions that the roll
    brought together from different regions), computed as torchvision computes it."""
    mask = torch.zeros((pad_h, pad_w), dtype=dtype)
    h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
    w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            mask[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    mask = mask.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
    mask = mask.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class _WindowAttention(nn.Module):
    """``shifted_window_attention`` in eval mode for one input shape ``[B, H, W, C]`` (B left free)."""

    def __init__(self, shape, window, heads, shift, qkv_bias: bool, proj_bias: bool, cosine: bool):
        super().__init__()
        _, self.h, self.w, self.c = (int(d) for d in shape)
        self.window, self.heads = tuple(int(d) for d in window), int(heads)
        self.pad_b = (self.window[0] - self.h % self.window[0]) % self.window[0]
        self.pad_r = (self.window[1] - self.w % self.window[1]) % self.window[1]
        pad_h, pad_w = self.h + self.pad_b, self.w + self.pad_r
        # no shift along a dim where one window covers the whole (padded) feature map
        self.shift = (0 if self.window[0] >= pad_h else int(shift[0]), 0 if self.window[1] >= pad_w else int(shift[1]))
        self.qkv_bias, self.proj_bias, self.cosine = qkv_bias, proj_bias, cosine

    def forward(self, x, qkv_weight, proj_weight, position_bias, qkv_bias, proj_bias, logit_scale, mask):
        (wh, ww), (sh, sw), c, heads = self.window, self.shift, self.c, self.heads
        x = F.pad(x, (0, 0, 0, self.pad_r, 0, self.pad_b))
        pad_h, pad_w = self.h + self.pad_b, self.w + self.pad_r
        if sh + sw > 0:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        n, windows = wh * ww, (pad_h // wh) * (pad_w // ww)
        # Windows get their own dim ([B, windows, N, C]), never folded into the batch: the simulator
        # folds time steps into dim 0, and every neuron reads its input as [steps, batch, ...].
        x = x.reshape(-1, pad_h // wh, wh, pad_w // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, windows, n, c)
        if self.cosine and self.qkv_bias:  # Swin V2: no bias on the keys
            third = qkv_bias.shape[0] // 3
            qkv_bias = torch.cat([qkv_bias[:third], torch.zeros_like(qkv_bias[third:2 * third]), qkv_bias[2 * third:]])
        qkv = F.linear(x, qkv_weight, qkv_bias if self.qkv_bias else None)
        qkv = qkv.reshape(-1, windows, n, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, windows, heads, N, C / heads]
        if self.cosine:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
        else:
            attn = (q * (c // heads) ** -0.5).matmul(k.transpose(-2, -1))
        attn = attn + position_bias
        if sh + sw > 0:
            attn = attn + mask.unsqueeze(1)  # [windows, 1, N, N]
        attn = F.softmax(attn, dim=-1)
        x = attn.matmul(v).transpose(2, 3).reshape(-1, windows, n, c)
        x = F.linear(x, proj_weight, proj_bias if self.proj_bias else None)
        x = x.view(-1, pad_h // wh, pad_w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, pad_h, pad_w, c)
        if sh + sw > 0:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x[:, :self.h, :self.w, :]


class _PatchMergingPad(nn.Module):
    """``_patch_merging_pad`` for one input shape ``[..., H, W, C]``."""

    def __init__(self, shape):
        super().__init__()
        self.h, self.w = int(shape[-3]), int(shape[-2])

    def forward(self, x):
        x = F.pad(x, (0, 0, 0, self.w % 2, 0, self.h % 2))
        return torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :],
                          x[..., 1::2, 1::2, :]], -1)


def _kind(node: fx.Node) -> str | None:
    if node.op != "call_function":
        return None
    name = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', '')}"
    return spellings.SWIN_FUNCTIONS.get(name)


def _inline(gm: fx.GraphModule, node: fx.Node, module: nn.Module, inputs: list) -> None:
    """Put the traced graph of ``module`` (called on ``inputs``) in place of ``node``."""
    graph = fx.Tracer().trace(module)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    with gm.graph.inserting_before(node):
        out = gm.graph.graph_copy(graph, dict(zip(placeholders, inputs)))
    node.replace_all_uses_with(out)
    gm.graph.erase_node(node)


def decompose_swin(gm: fx.GraphModule) -> int:
    """Write out every torchvision ``shifted_window_attention`` / ``_patch_merging_pad``; returns how many."""
    count = 0
    for node in list(gm.graph.nodes):
        kind = _kind(node)
        if kind is None:
            continue
        x = node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("x"))
        shape = x.meta["tensor_meta"].shape
        if kind == "merge":
            _inline(gm, node, _PatchMergingPad(shape), [x])
            count += 1
            continue
        a = {k: node_arg(node, i, k) for i, k in enumerate(_ATTENTION_ARGS)}
        # computed from the tables by torchvision's own (wrapped) function, or V2's MLP: one constant
        a["relative_position_bias"] = fold_constant(gm, a["relative_position_bias"])
        module = _WindowAttention(shape, a["window_size"], a["num_heads"], a["shift_size"], a["qkv_bias"] is not None,
                                  a["proj_bias"] is not None, a["logit_scale"] is not None)
        mask = None
        if sum(module.shift) > 0:
            dtype = node.meta["tensor_meta"].dtype
            name = f"{node.name}_shift_mask"
            gm.register_buffer(name, shift_mask(module.h + module.pad_b, module.w + module.pad_r, module.window,
                                                module.shift, dtype))
            with gm.graph.inserting_before(node):
                mask = gm.graph.get_attr(name)
        _inline(gm, node, module, [a["input"], a["qkv_weight"], a["proj_weight"], a["relative_position_bias"],
                                   a["qkv_bias"], a["proj_bias"], a["logit_scale"], mask])
        count += 1
    if count:
        gm.delete_all_unused_submodules()
        gm.recompile()
        log.debug("wrote out %d torchvision Swin window attentions and patch merges", count)
    return count
