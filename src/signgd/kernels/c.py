"""The ``"c"`` backend: the compiled C kernel (``build.py``) loaded with ctypes, for CPU float32/float64.

OpenMP over blocks of elements, the loop over ``t`` inside, so ``target`` is read once and ``out``
written once; ``torch.get_num_threads()`` threads. The library is loaded once per process and
checked against the torch reference (``reference.py``) before first use, so a miscompiled or
stale library is refused rather than used. It does the reference's operations in the same order
and precision (``eta`` and a scalar ``out_scale`` are rounded to the tensor's dtype first, as
torch does for a scalar operand), so its results are bit-identical to it.
"""
from __future__ import annotations

import ctypes
import logging
import threading

import torch

from ..schedules import MAX_GAIN, MIN_GAIN
from .build import build_and_load
from .reference import (
    adaptive_scan_torch,
    empty_out,
    finish,
    kernel_out,
    overlap,
    prologue_torch,
    same_buffer,
    scale_for_kernel,
    scan_torch,
    sparse_scan_torch,
)

__all__ = ["CPU_DTYPES", "library", "reset", "scan_c", "c_prologue", "adaptive_scan_c", "sparse_scan_c", "log_once"]

log = logging.getLogger("signgd")

CPU_DTYPES = (torch.float32, torch.float64)

_logged: set = set()


def log_once(level: int, key, message: str, *args) -> None:
    """Log ``message`` the first time ``key`` is seen (until ``reset()``)."""
    if key not in _logged:
        _logged.add(key)
        log.log(level, message, *args)


# --------------------------------------------------------------------------------------------
# Loading the library
# --------------------------------------------------------------------------------------------

_lock = threading.Lock()
_state: tuple | None = None          # (ctypes library or None, info dict)


def reset() -> None:
    """Forget the loaded library and the one-time log messages (tests use it after changing
    ``build.COMPILER`` or $SIGNGD_CACHE). A library already loaded in the process stays mapped."""
    global _state
    with _lock:
        _state = None
        _logged.clear()


def library():
    """The loaded C library and an info dict (path, flags, compiler; or reason). Built once."""
    global _state
    state = _state
    if state is not None:
        return state
    with _lock:
        if _state is None:
            lib, info = build_and_load(_load)
            if lib is None:
                log_once(logging.WARNING, ("c-unavailable", info.get("reason")),
                         "signgd kernels: the C backend is unavailable (%s); using torch ops instead",
                         info.get("reason"))
            _state = (lib, info)
        return _state


def _load(path):
    """``(library, None)`` for a library that loads and passes its self-check, else ``(None, why)``."""
    try:
        lib = _bind(ctypes.CDLL(str(path)))
    except (OSError, AttributeError) as e:
        return None, f"cannot load {path}: {e}"
    err = _self_check(lib)
    if err is not None:
        return None, f"{path} {err}"
    return lib, None


def _bind(lib):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for name in ("signgd_scan_f32", "signgd_scan_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, i64, p, p, p, i64, i64, ctypes.c_int, p, i64, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
    for name, real in (("signgd_adaptive_f32", ctypes.c_float), ("signgd_adaptive_f64", ctypes.c_double)):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, p, i64, p, p, i64, i64, ctypes.c_int, real, real, p, real, ctypes.c_int]
        fn.restype = ctypes.c_int
    for name in ("signgd_sparse_f32", "signgd_sparse_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, p, i64, p, p, i64, i64, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
    return lib


def _self_check(lib) -> str | None:
    """A few hundred elements against the torch reference, ties included: guards against a
    miscompiled or stale library."""
    g = torch.Generator().manual_seed(0)
    for dtype in CPU_DTYPES:
        target = torch.randint(-3, 4, (5, 3, 70), generator=g).to(dtype) / 4
        y = torch.zeros(3, 70, dtype=dtype)
        etas = torch.tensor([0.5, 0.25, 0.25, 0.125, 0.3], dtype=torch.float64)
        scale = torch.rand(70, generator=g, dtype=dtype) + 0.5
        ref_sp = torch.zeros(5, dtype=torch.float64)
        ref = scan_torch(target, y, etas, scale, ref_sp)
        sp = torch.zeros(5, dtype=torch.float64)
        got = _run_c(lib, target, y, etas, scale, sp)
        if not (torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1]) and torch.equal(ref_sp, sp)):
            return f"failed its self-check against the torch reference ({dtype})"
        # the targets computed in the pass: square / scale, and x * factor-per-row / scale
        factor = torch.rand(5, 3, 1, generator=g, dtype=dtype) + 0.5
        for pre, fac in (("square", None), ("mul", factor)):
            ref = scan_torch(prologue_torch(target, pre, fac, scale), y, etas, scale, None)
            got = _run_c(lib, target, y, etas, scale, None,
                         prologue=c_prologue(target, y, scale, pre, fac, True))
            if not (torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])):
                return f"failed its self-check against the torch reference ({dtype}, pre={pre})"
        if not _adaptive_matches(lib, target, etas.to(dtype), scale):
            return f"failed its self-check against the torch reference ({dtype}, adaptive steps)"
        if not _sparse_matches(lib, target, etas.to(dtype), scale):
            return f"failed its self-check against the torch reference ({dtype}, sparse neuron)"
    return None


def _adaptive_matches(lib, target, etas, scale) -> bool:
    """Fixed and decaying gain floors (``adaptive(tail=)``), with and without power-of-two steps."""
    decaying = MIN_GAIN / torch.arange(1, target.shape[0] + 1, dtype=torch.float64)
    for pow2, floors in ((False, None), (True, None), (False, decaying), (True, decaying)):
        runs = []
        for c in (False, True):
            y, d = torch.zeros(target.shape[1:], dtype=target.dtype), torch.zeros(target.shape[1:], dtype=target.dtype)
            sp = torch.zeros(target.shape[0], dtype=torch.float64)
            args = (target, y, d, etas, 1.2, 0.5, scale, sp, None, pow2, floors)
            out = _run_adaptive_c(lib, *args) if c else adaptive_scan_torch(*args)
            runs.append((out, y, d, sp))
        if not all(torch.equal(a, b) for a, b in zip(*runs)):
            return False
    return True


def _sparse_matches(lib, target, etas, scale) -> bool:
    """Thresholds of half a step on multiples of 1/4: differences land exactly on them (silent)."""
    thresholds = etas * 0.5
    for divide, graded in ((False, False), (True, False), (False, True), (True, True)):
        runs = []
        for c in (False, True):
            y = torch.zeros(target.shape[1:], dtype=target.dtype)
            sp = torch.zeros(target.shape[0], dtype=torch.float64)
            if c:
                out = _run_sparse_c(lib, target, y, etas, thresholds, scale, sp, None, divide, graded)
            else:
                tgt = prologue_torch(target, None, None, scale) if divide else target
                out = sparse_scan_torch(tgt, y, etas, thresholds, scale, sp, graded=graded)
            runs.append((out, y, sp))
        if not all(torch.equal(a, b) for a, b in zip(*runs)):
            return False
    return True


# --------------------------------------------------------------------------------------------
# The plain scan
# --------------------------------------------------------------------------------------------

_PRE_CODES = {None: 0, "square": 1, "mul": 2}


def c_prologue(target, y, out_scale, pre, factor, normalize):
    """``(pre code, factor or None, row length, divide)`` when the C kernel can compute this
    target in its pass, else None (then torch computes it first)."""
    S = tuple(target.shape[1:])
    if normalize:
        mode, _, _ = scale_for_kernel(out_scale, y, S)
        if mode != "kernel" or torch.result_type(target, out_scale) != target.dtype:
            return None
    if pre != "mul":
        return _PRE_CODES[pre], None, 0, normalize
    if (factor.dtype != target.dtype or factor.device != target.device or factor.dim() != target.dim()
            or factor.requires_grad and torch.is_grad_enabled()):
        return None
    k = factor.dim()
    while k > 1 and factor.shape[k - 1] == 1:
        k -= 1
    if tuple(factor.shape[:k]) != tuple(target.shape[:k]):
        return None  # not one factor per row: it broadcasts along other dimensions
    rowlen = 1
    for d in target.shape[k:]:
        rowlen *= d
    return _PRE_CODES[pre], factor.detach().contiguous(), rowlen, normalize


def scan_c(target, y, etas, out_scale, spikes, out=None, inplace=False, prologue=None):
    """``signgd_scan`` on the C kernel (inputs already checked, the library available):
    ``(out, y_final)``. ``prologue``: from ``c_prologue``, or None."""
    lib, _ = library()
    return _run_c(lib, target, y, etas, out_scale, spikes, out, inplace, prologue)


def _run_c(lib, target, y, etas, out_scale, spikes, out=None, inplace=False, prologue=None):
    """``prologue``: ``(pre code, factor, row length, divide)`` from ``c_prologue``, or None."""
    Tc, S = target.shape[0], tuple(target.shape[1:])
    if Tc == 0:
        return empty_out(target, y, out_scale, out), y
    dtype = target.dtype
    mode, scale, scale_len = scale_for_kernel(out_scale, y, S)
    tgt = target.detach().contiguous()
    y0 = y if y.is_contiguous() else y.contiguous()
    # torch rounds a scalar operand to the tensor's dtype before the op; so does this
    eta = etas.detach().to(device="cpu", dtype=dtype).contiguous()
    res = kernel_out(target, mode, out)
    # in place when asked and y is contiguous: the kernel reads each block's y before writing it
    y_final = y0 if inplace and y0 is y else torch.empty(S, dtype=dtype)
    N = y_final.numel()
    counts = torch.zeros(Tc, dtype=torch.int64) if spikes is not None else None
    if N > 0:
        fn = lib.signgd_scan_f32 if dtype == torch.float32 else lib.signgd_scan_f64
        pre, factor, rowlen, divide = prologue if prologue is not None else (0, None, 0, False)
        rc = fn(tgt.data_ptr(), y0.data_ptr(), eta.data_ptr(),
                scale.data_ptr() if mode == "kernel" else None, scale_len,
                res.data_ptr(), y_final.data_ptr(), counts.data_ptr() if counts is not None else None,
                Tc, N, max(1, torch.get_num_threads()),
                factor.data_ptr() if factor is not None else None, rowlen, pre, int(bool(divide)))
        if rc != 0:
            raise RuntimeError(f"signgd_scan (C) failed with code {rc}")
    return finish(res, y_final, out_scale, mode, counts, spikes, out)


# --------------------------------------------------------------------------------------------
# The adaptive scan
# --------------------------------------------------------------------------------------------

def adaptive_scan_c(target, y, d, etas, grow, shrink, out_scale=None, spikes=None, out=None, pow2=False,
                    floors=None):
    """``signgd.kernels.adaptive_scan`` in C (same arguments), or None when the C kernel cannot run
    these inputs (not CPU float32/float64, non-contiguous state, a scale that promotes, the C
    library unavailable): the caller then runs torch. ``adaptive_scan`` asks the backend choice
    first (``$SIGNGD_KERNEL``, inputs that require grad)."""
    if target.dim() < 1 or target.device.type != "cpu" or target.dtype not in CPU_DTYPES:
        return None
    if not (y.is_contiguous() and d.is_contiguous() and y.dtype == d.dtype == target.dtype
            and y.device == target.device
            and scale_for_kernel(out_scale, y, tuple(target.shape[1:]))[0] != "after"):
        return None
    lib, _ = library()
    if lib is None:
        return None
    return _run_adaptive_c(lib, target, y, d, etas, grow, shrink, out_scale, spikes, out, pow2, floors)


def _run_adaptive_c(lib, target, y, d, etas, grow, shrink, out_scale=None, spikes=None, out=None, pow2=False,
                    floors=None):
    Tc, S = target.shape[0], tuple(target.shape[1:])
    mode, scale, scale_len = scale_for_kernel(out_scale, y, S)
    tgt = target.detach().contiguous()
    res = out if out is not None else torch.empty(target.shape, dtype=target.dtype)
    eta = etas.detach().to(device="cpu", dtype=target.dtype).contiguous()
    gmin = torch.full((Tc,), MIN_GAIN, dtype=target.dtype) if floors is None else \
        floors.detach().to(device="cpu", dtype=target.dtype).contiguous()
    counts = torch.zeros(Tc, dtype=torch.int64) if spikes is not None else None
    if Tc > 0 and y.numel() > 0:
        fn = lib.signgd_adaptive_f32 if target.dtype == torch.float32 else lib.signgd_adaptive_f64
        rc = fn(tgt.data_ptr(), y.data_ptr(), d.data_ptr(), eta.data_ptr(),
                scale.data_ptr() if mode == "kernel" else None, scale_len, res.data_ptr(),
                counts.data_ptr() if counts is not None else None, Tc, y.numel(),
                max(1, torch.get_num_threads()), grow, shrink, gmin.data_ptr(), MAX_GAIN, int(bool(pow2)))
        if rc != 0:
            raise RuntimeError(f"signgd adaptive scan (C) failed with code {rc}")
    if counts is not None:
        spikes += counts.to(spikes.device)
    return res


# --------------------------------------------------------------------------------------------
# The sparse scan (dynamics="sparse")
# --------------------------------------------------------------------------------------------

def sparse_scan_c(target, y, etas, thresholds, out_scale=None, spikes=None, out=None, normalize=False,
                  graded=False):
    """``signgd.kernels.sparse_scan`` in C (same arguments; ``graded``: the graded neuron's steps), or None
    when the C kernel cannot run these inputs (not CPU float32/float64, a non-contiguous ``y`` or ``out``,
    an ``out`` of another dtype or partly overlapping ``target``, a scale that promotes, a ``normalize`` the
    kernel cannot fuse, the C library unavailable): the caller then runs torch. ``normalize``: the target is
    ``target / out_scale``, divided in the pass as torch divides (``prologue_torch``); ignored without a
    scale."""
    if not (isinstance(target, torch.Tensor) and isinstance(y, torch.Tensor) and target.dim() >= 1
            and target.device.type == "cpu" and target.dtype in CPU_DTYPES):
        return None
    Tc, S = target.shape[0], tuple(target.shape[1:])
    if not (y.is_contiguous() and y.dtype == target.dtype and y.device == target.device and tuple(y.shape) == S
            and not overlap(y, target)):
        return None
    for steps in (etas, thresholds):
        if not (isinstance(steps, torch.Tensor) and steps.dim() == 1 and steps.shape[0] >= Tc):
            return None
    if scale_for_kernel(out_scale, y, S)[0] == "after":
        return None
    if out is not None and not (
            isinstance(out, torch.Tensor) and tuple(out.shape) == tuple(target.shape) and out.dtype == target.dtype
            and out.device == target.device and out.is_contiguous() and not overlap(out, y)
            and (same_buffer(out, target) or not overlap(out, target))):
        return None
    divide = bool(normalize) and out_scale is not None
    if divide and c_prologue(target, y, out_scale, None, None, True) is None:
        return None
    lib, _ = library()
    if lib is None:
        return None
    return _run_sparse_c(lib, target, y, etas, thresholds, out_scale, spikes, out, divide, graded)


def _run_sparse_c(lib, target, y, etas, thresholds, out_scale=None, spikes=None, out=None, divide=False,
                  graded=False):
    Tc, S = target.shape[0], tuple(target.shape[1:])
    mode, scale, scale_len = scale_for_kernel(out_scale, y, S)
    tgt = target.detach().contiguous()
    res = out if out is not None else torch.empty(target.shape, dtype=target.dtype)
    # torch rounds the steps and thresholds to the tensor's dtype (sparse_scan_torch: .to(dtype)); so does this
    eta = etas.detach()[:Tc].to(device="cpu", dtype=target.dtype).contiguous()
    thr = thresholds.detach()[:Tc].to(device="cpu", dtype=target.dtype).contiguous()
    counts = torch.zeros(Tc, dtype=torch.int64) if spikes is not None else None
    if Tc > 0 and y.numel() > 0:
        fn = lib.signgd_sparse_f32 if target.dtype == torch.float32 else lib.signgd_sparse_f64
        rc = fn(tgt.data_ptr(), y.data_ptr(), eta.data_ptr(), thr.data_ptr(),
                scale.data_ptr() if mode == "kernel" else None, scale_len, res.data_ptr(),
                counts.data_ptr() if counts is not None else None, Tc, y.numel(),
                max(1, torch.get_num_threads()), int(bool(divide) and mode == "kernel"), int(bool(graded)))
        if rc != 0:
            raise RuntimeError(f"signgd sparse scan (C) failed with code {rc}")
    if counts is not None:
        spikes += counts.to(spikes.device)
    return res
