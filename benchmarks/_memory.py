"""Peak memory of one call, for the benchmarks: resident-set growth on a CPU, allocator peak on CUDA.

On Linux the peak resident set size (``VmHWM``) can be reset (``/proc/self/clear_refs``, Linux >= 4.0),
so ``measure(fn)`` frees what it can first (garbage collection and ``malloc_trim``, which returns
the C heap's free pages), reads the current resident size as the baseline, resets the peak, calls
``fn`` once, and reports peak minus baseline: the memory that call needed on top of what the
process already held (model, input, converted network). Where the peak cannot be reset it falls
back to ``ru_maxrss`` growth, which also counts anything the process did before (less precise;
``precise`` says which). The figure includes the C heap's own retention, as users see it.
"""
from __future__ import annotations

import ctypes
import gc
import re
import resource

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS) as f:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure(fn, device: str = "cpu") -> tuple[int, bool]:
    """``(bytes, precise)``: the peak memory ``fn()`` needs above what the process already holds."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, True
    _trim()
    rss = _status_kib("VmRSS")
    if rss is not None and _reset_peak():
        fn()
        return (_status_kib("VmHWM") - rss) * 1024, True
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, False
