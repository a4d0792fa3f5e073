"""Helper operations that the graph passes insert (fx records them as call_function nodes).

Each is affine in its tensor input (a selection, a padding by a constant, a reshape) or computes a
constant of the graph (an attention mask's additive form), so a signGD network may place it
between neurons.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pool_windows(x: torch.Tensor, dim: int, kernel: int, stride: int, padding: int, dilation: int,
                 ceil_mode: bool, pad_value: float) -> torch.Tensor:
    """The pooling windows along ``dim`` as a new last dimension of size ``kernel``.

    Pads with ``pad_value`` (a very negative constant, so it never wins a max) exactly as
    ``max_pool`` pads, including the extra right padding of ``ceil_mode``.
    """
    dim = dim % x.dim()
    size = x.shape[dim]
    span = dilation * (kernel - 1) + 1
    out = _pool_out_size(size, kernel, stride, padding, dilation, ceil_mode)
    right = max(0, (out - 1) * stride + span - size - padding)
    pads = [0, 0] * (x.dim() - 1 - dim) + [padding, right]
    if padding or right:
        x = F.pad(x, pads, value=pad_value)
    windows = x.unfold(dim, span, stride)[..., ::dilation]
    return windows.narrow(dim, 0, out)


def _pool_out_size(size, kernel, stride, padding, dilation, ceil_mode) -> int:
    span = dilation * (kernel - 1) + 1
    num = size + 2 * padding - span
    out = (math.ceil(num / stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # PyTorch's rule: the last window must start inside the input or left padding
    return out


def window_slice(u: torch.Tensor, start: int, stop: int, step: int) -> torch.Tensor:
    """``u[..., start:stop:step]``: one side of the pairs at a level of a max tree."""
    return u[..., start:stop:step]


def squeeze_last(u: torch.Tensor) -> torch.Tensor:
    return u.squeeze(-1)


def assign(x: torch.Tensor, index, value) -> torch.Tensor:
    """``x`` with ``x[index] = value``, as a new tensor: the item assignment ``attn[:, :, 1:, 1:] = ...`` (timm MViTv2)
    as a value of the graph (``graph/concrete.py`` records it so). Affine in ``x`` and ``value``: it moves data."""
    out = x.clone()
    out[index] = value
    return out



def attention_bias(mask: torch.Tensor, dtype: torch.dtype, masked_is_true: bool = False) -> torch.Tensor:
    """The additive form of a constant attention mask. Boolean masks: ``scaled_dot_product_attention``
    marks the positions to attend with True, ``nn.MultiheadAttention`` the positions to skip
    (``masked_is_true``); skipped positions get -inf. A float mask is added as it is."""
    if mask.dtype == torch.bool:
        skip = mask if masked_is_true else ~mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(skip, float("-inf"))
    return mask.to(dtype)
