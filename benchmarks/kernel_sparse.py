"""The sparse neuron's C scan (``signgd.kernels.sparse_scan``, dynamics="sparse"; and with its graded steps,
dynamics="graded") against the signGD C scan
(``signgd_scan``) and the adaptive C scan (``adaptive_scan``), per step, on one layer-sized tensor.

Every scan runs through its public entry point with what the simulator passes: a per-element scale
(``out[t] = y_t * scale``), a reused ``out`` buffer, a float64 ``[Tc]`` spike-count tensor, the state
updated in place (carried from call to call). The scans are timed in turns (a, b, c, ..., a, b, c, ...)
after one warm-up call each; each row is the best of ``--repeat`` calls, and the ratios are of times
measured in this one run, one table per dtype and thread count (default: one thread, and every CPU).
Also shown: the sparse scan dividing its target by the scale in its pass (``normalize=True``) against
torch dividing first, and the torch loop (``reference.sparse_scan_torch``).

    python benchmarks/kernel_sparse.py --out docs/speed_sparse_kernel.md
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from _common import command_line, cpu_count, emit, log, machine_line, setup_torch

from signgd.kernels import adaptive_scan, kernel_info, signgd_scan, sparse_scan
from signgd.kernels.reference import sparse_scan_torch


def _cases(Tc: int, shape: tuple, dtype: torch.dtype, tolerance: float) -> dict:
    g = torch.Generator().manual_seed(0)
    # a ReLU layer's targets: a fixed activation with a little noise per step
    base = torch.randn(shape, generator=g, dtype=dtype).relu_()
    target = base + 0.05 * torch.randn((Tc, *shape), generator=g, dtype=dtype)
    scale = torch.rand(shape[1:], generator=g, dtype=dtype) + 0.5
    normalized = target / scale
    etas = 0.5 * 0.9 ** torch.arange(Tc, dtype=torch.float64)
    thresholds = etas * tolerance
    out = torch.empty_like(target)
    spikes = torch.zeros(Tc, dtype=torch.float64)
    y = {k: torch.zeros(shape, dtype=dtype)
         for k in ("signgd", "adaptive", "sparse", "graded", "fused", "divide", "torch")}
    d = torch.zeros(shape, dtype=dtype)

    def sparse_divide_first():
        sparse_scan(target / scale, y["divide"], etas, thresholds, scale, spikes, out)

    return {
        "signGD C scan (`signgd_scan`)":
            lambda: signgd_scan(normalized, y["signgd"], etas, scale, spikes, out=out, inplace=True),
        "adaptive C scan (`adaptive_scan`)":
            lambda: adaptive_scan(normalized, y["adaptive"], d, etas, 1.2, 0.5, scale, spikes, out),
        "sparse C scan (`sparse_scan`)":
            lambda: sparse_scan(normalized, y["sparse"], etas, thresholds, scale, spikes, out),
        "graded C scan (`sparse_scan(graded=True)`, dynamics='graded')":
            lambda: sparse_scan(normalized, y["graded"], etas, thresholds, scale, spikes, out, graded=True),
        "sparse C scan, `normalize=True` (divides in the pass)":
            lambda: sparse_scan(target, y["fused"], etas, thresholds, scale, spikes, out, normalize=True),
        "sparse C scan after torch's `target / scale`": sparse_divide_first,
        "sparse torch loop (`sparse_scan_torch`)":
            lambda: sparse_scan_torch(normalized, y["torch"], etas, thresholds, scale, spikes, out),
    }


def _time(fns: dict, repeat: int, slow: str, slow_repeat: int) -> dict:
    """Best wall time of each function, timed in turns after one warm-up each (``slow`` only
    ``slow_repeat`` times)."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for i in range(repeat):
        for k, fn in fns.items():
            if k == slow and i >= slow_repeat:
                continue
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=16, help="Tc, the steps per call (default 16)")
    p.add_argument("--shape", default="8,64,16,16", help="one step's shape (default 8,64,16,16)")
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated (default float32,float64)")
    p.add_argument("--tolerance", type=float, default=0.5, help="threshold = tolerance * eta (default 0.5)")
    p.add_argument("--repeat", type=int, default=100, help="calls timed per scan (default 100)")
    p.add_argument("--threads", default=None,
                   help="comma-separated torch thread counts, one table each (default: 1 and every CPU)")
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    args = p.parse_args(argv)
    threads = [int(n) for n in args.threads.split(",")] if args.threads else sorted({1, cpu_count()})
    info = kernel_info()["c"]
    if not info["available"]:
        raise SystemExit(f"kernel_sparse: the C kernel is unavailable: {info['reason']}")
    shape = tuple(int(s) for s in args.shape.split(","))
    setup_torch(threads[-1])
    load_before = os.getloadavg()
    text = ["# The sparse neuron's C scan against the signGD and adaptive C scans", "",
            f"Command: `{command_line()}`", "", f"Machine: {machine_line()}; load average before the run: "
            + ", ".join(f"{v:.2f}" for v in load_before), "",
            f"One call: {args.steps} steps x {' x '.join(map(str, shape))} elements, a per-element scale of shape "
            f"{' x '.join(map(str, shape[1:]))}, a reused out buffer, spike counts, the state updated in place; "
            f"tolerance {args.tolerance}. Best of {args.repeat} calls each, timed in turns (the torch loop: "
            f"best of {max(1, args.repeat // 10)}). Ratios: to the signGD C scan of the same dtype and thread "
            "count, same run.", ""]
    slow = "sparse torch loop (`sparse_scan_torch`)"
    for n in threads:
        setup_torch(n)
        for name in args.dtypes.split(","):
            dtype = getattr(torch, name.strip())
            log(f"timing {name}, {n} thread(s)")
            best = _time(_cases(args.steps, shape, dtype, args.tolerance), args.repeat, slow, max(1, args.repeat // 10))
            base = best["signGD C scan (`signgd_scan`)"]
            text += [f"## {name}, {n} thread{'s' if n > 1 else ''}", "",
                     "| scan | ms per call | us per step | / signGD C scan |", "|---|---:|---:|---:|"]
            for k, s in best.items():
                text.append(f"| {k} | {s * 1e3:.3f} | {s / args.steps * 1e6:.1f} | {s / base:.2f} |")
            text.append("")
    text.append("Load average after the run: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    emit("\n".join(text), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
