"""Traceable stand-ins for torch.nn's attention and transformer modules.

torch.fx keeps every ``torch.nn`` module as one opaque call, and ``nn.MultiheadAttention`` /
``nn.TransformerEncoderLayer`` hide products and a softmax inside (their forward also branches on
fast paths that fx cannot trace). Before tracing, conversion swaps each of them, in its deep copy of
the model, for a module that computes the same thing with plain tensor ops and the original
submodules and parameters (so fx sees the linears, norms and activations one by one). The
stand-ins follow torch's own eval-mode code (``F.multi_head_attention_forward``, ``_sa_block``,
``_ff_block``) and are checked against the originals by conversion's safety net and by tests.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedOperationError
from .ops import attention_bias

log = logging.getLogger("signgd.graph")


class TraceableMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` in eval mode, written with linears, reshapes, ``@`` and softmax."""

    def __init__(self, mha: nn.MultiheadAttention, name: str = ""):
        super().__init__()
        if mha.bias_k is not None or mha.bias_v is not None or mha.add_zero_attn:
            raise UnsupportedOperationError(
                f"module {name or 'MultiheadAttention'}: add_bias_kv / add_zero_attn are not supported; "
                f"build the attention without them", [(name, "call_module", "MultiheadAttention")])
        self.mha = mha

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        m = self.mha
        if key_padding_mask is not None:
            raise UnsupportedOperationError(
                "MultiheadAttention with a key_padding_mask: signgd converts models with one input and "
                "constant masks only", [("", "call_module", "MultiheadAttention")])
        if not m.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if m._qkv_same_embed_dim:
            w_q, w_k, w_v = m.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
        b_q, b_k, b_v = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None, None, None)
        heads, head_dim = m.num_heads, m.head_dim
        q = F.linear(query, w_q, b_q).unflatten(-1, (heads, head_dim)).transpose(1, 2)
        k = F.linear(key, w_k, b_k).unflatten(-1, (heads, head_dim)).transpose(1, 2)
        v = F.linear(value, w_v, b_v).unflatten(-1, (heads, head_dim)).transpose(1, 2)
        scores = (q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1)
        if attn_mask is None and is_causal:
            raise UnsupportedOperationError("MultiheadAttention with is_causal=True needs attn_mask (as in torch)",
                                            [("", "call_module", "MultiheadAttention")])
        if attn_mask is not None:
            scores = scores + attention_bias(attn_mask, scores.dtype, True)
        weights = scores.softmax(-1)
        out = (weights @ v).transpose(1, 2).flatten(2)
        out = F.linear(out, m.out_proj.weight, m.out_proj.bias)  # (a Linear subclass: keep the graph plain)
        if not m.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, (weights.mean(1) if average_attn_weights else weights)


torch.fx.wrap("attention_bias")  # a constant mask's additive form: one graph node, not traced into


class TraceableTransformerEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` in eval mode (its ``_sa_block`` and ``_ff_block``)."""

    def __init__(self, layer: nn.TransformerEncoderLayer):
        super().__init__()
        self.layer = layer

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if src_key_padding_mask is not None:
            raise UnsupportedOperationError(
                "TransformerEncoderLayer with a src_key_padding_mask: signgd converts models with one input",
                [("", "call_module", "TransformerEncoderLayer")])
        layer, x = self.layer, src
        if layer.norm_first:
            x = x + self._sa(layer.norm1(x), src_mask, is_causal)
            x = x + self._ff(layer.norm2(x))
        else:
            x = layer.norm1(x + self._sa(x, src_mask, is_causal))
            x = layer.norm2(x + self._ff(x))
        return x

    def _sa(self, x, mask, is_causal):
        layer = self.layer
        return layer.dropout1(layer.self_attn(x, x, x, attn_mask=mask, need_weights=False, is_causal=is_causal)[0])

    def _ff(self, x):
        layer = self.layer
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(x)))))


class TraceableTransformerEncoder(nn.Module):
    """``nn.TransformerEncoder`` in eval mode: its layers in turn, then its optional norm."""

    def __init__(self, encoder: nn.TransformerEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        if src_key_padding_mask is not None:
            raise UnsupportedOperationError(
                "TransformerEncoder with a src_key_padding_mask: signgd converts models with one input",
                [("", "call_module", "TransformerEncoder")])
        x = src
        for layer in self.encoder.layers:
            x = layer(x, src_mask=mask, is_causal=bool(is_causal))
        if self.encoder.norm is not None:
            x = self.encoder.norm(x)
        return x


_SWAPS = [
    (nn.MultiheadAttention, TraceableMultiheadAttention),
    (nn.TransformerEncoderLayer, TraceableTransformerEncoderLayer),
    (nn.TransformerEncoder, TraceableTransformerEncoder),
]


def make_traceable(model: nn.Module) -> tuple[nn.Module, int]:
    """Swap the modules above for their stand-ins, innermost first, in place; returns the (possibly
    new) root and how many were swapped. Call it on a copy: it changes the module tree."""
    count = 0
    for cls, stand_in in _SWAPS:
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if type(child) is cls:
                    full = f"{name}.{child_name}".lstrip(".")
                    new = stand_in(child, full) if stand_in is TraceableMultiheadAttention else stand_in(child)
                    setattr(module, child_name, new)
                    count += 1
        if type(model) is cls:
            model = stand_in(model) if stand_in is not TraceableMultiheadAttention else stand_in(model, "model")
            count += 1
    if count:
        log.debug("swapped %d attention/transformer modules for traceable stand-ins", count)
    return model, count
