"""The ``"triton"`` backend: the Triton kernel (``triton_jit.py``) for CUDA float32/float64 tensors.

triton is imported on first use only (by ``compiled()``, cached), never when signgd is imported.
The kernel does the torch reference's operations in the same order and precision, so its results
are bit-identical to ``reference.scan_torch``'s.
"""
from __future__ import annotations

import functools

import torch

from .reference import empty_out, finish, kernel_out, same_buffer, scale_for_kernel

__all__ = ["DTYPES", "unavailable_reason", "compiled", "scan_triton"]

DTYPES = (torch.float32, torch.float64)
BLOCK = 1024
WARPS = 4


@functools.lru_cache(maxsize=None)
def compiled():
    """``(kernel, None)``, or ``(None, why not)`` when triton does not import (or is too old for
    this code). Imported once per process."""
    try:
        from .triton_jit import signgd_scan_kernel
    except Exception as e:  # ImportError, or a triton too old for this code
        return None, f"triton is unavailable ({type(e).__name__}: {e})"
    return signgd_scan_kernel, None


def unavailable_reason() -> str | None:
    """None when the triton backend can run on this machine, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    return compiled()[1]


def scan_triton(target, y, etas, out_scale, spikes, out=None, inplace=False):
    """``signgd_scan`` on the Triton kernel (inputs already checked, the kernel available):
    ``(out, y_final)``."""
    kernel, _ = compiled()
    Tc, S = target.shape[0], tuple(target.shape[1:])
    if Tc == 0:
        return empty_out(target, y, out_scale, out), y
    dtype, device = target.dtype, target.device
    mode, scale, scale_len = scale_for_kernel(out_scale, y, S)
    tgt = target.detach().contiguous()
    y0 = y if y.is_contiguous() else y.contiguous()
    eta = etas.detach().to(device=device, dtype=dtype).contiguous()
    # The kernel gets its own output buffer when out is target itself (no promise here that a
    # program's load of an element is ordered before its store to the same address).
    aliased = out is not None and same_buffer(out, target)
    res = kernel_out(target, mode, None if aliased else out)
    # in place when asked and y is contiguous: each program loads its y before storing it
    y_final = y0 if inplace and y0 is y else torch.empty(S, dtype=dtype, device=device)
    N = y_final.numel()
    counts = None
    if N > 0:
        nprog = (N + BLOCK - 1) // BLOCK  # triton.cdiv
        partial = torch.empty((Tc, nprog) if spikes is not None else (1,), dtype=torch.int32, device=device)
        scale_mode = 0 if mode != "kernel" else (1 if scale_len == 1 else 2)
        kernel[(nprog,)](tgt, y0, eta, scale if scale_mode else y0, res, y_final, partial,
                         Tc, N, max(scale_len, 1), SCALE_MODE=scale_mode, COUNT=spikes is not None,
                         BLOCK=BLOCK, num_warps=WARPS)
        if spikes is not None:
            counts = partial.sum(1, dtype=torch.int64)
    elif spikes is not None:
        counts = torch.zeros(Tc, dtype=torch.int64, device=device)
    if aliased:
        res, y_final = finish(res, y_final, out_scale, mode, counts, spikes, None)
        return out.copy_(res), y_final
    return finish(res, y_final, out_scale, mode, counts, spikes, out)
