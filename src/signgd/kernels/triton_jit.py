"""The Triton kernel of the ``"triton"`` backend (CUDA): one program per block of elements, the loop
over ``t`` inside. ``triton.py`` launches it.

Importing this module imports triton, so only ``triton.py``'s loader imports it, on first use of
the backend. The kernel is defined at module level, as Triton expects: its JIT looks the names the
kernel uses (``tl``) up in the module's globals.
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["signgd_scan_kernel"]


@triton.jit
def signgd_scan_kernel(target_ptr, y_ptr, etas_ptr, scale_ptr, out_ptr, yfinal_ptr, partial_ptr,
                       Tc, N, M, SCALE_MODE: tl.constexpr, COUNT: tl.constexpr,
                       BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    y = tl.load(y_ptr + offs, mask=mask, other=0)
    if SCALE_MODE == 1:
        sc = tl.load(scale_ptr)
    if SCALE_MODE == 2:
        sc = tl.load(scale_ptr + offs % M, mask=mask, other=0)
    tp = target_ptr + offs
    op = out_ptr + offs
    pp = partial_ptr + pid
    nprog = tl.num_programs(0)
    for t in range(Tc):
        tg = tl.load(tp, mask=mask, other=0)
        eta = tl.load(etas_ptr + t)
        s = y >= tg
        y = tl.where(s, y - eta, y + eta)
        if SCALE_MODE == 0:
            tl.store(op, y, mask=mask)
        else:
            tl.store(op, y * sc, mask=mask)
        if COUNT:
            tl.store(pp, tl.sum((s & mask).to(tl.int32), axis=0))
            pp += nprog
        tp += N
        op += N
    tl.store(yfinal_ptr + offs, y, mask=mask)
