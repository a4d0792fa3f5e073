"""Simulation speed and memory: SNN time against T forward passes of the ANN, per execution order.

Simulating T steps costs at least T forward passes of the ANN; this script measures how close the
simulator gets, for each execution order of ``SpikingNetwork``: time-major (``chunk=1``), the
default (chunk sized by the memory budget) and fully layer-major (``chunk=T``). Every figure of a
table comes from one run of this script on one machine, so the ratios compare like with like.

    python benchmarks/speed.py                                  # Fashion-MNIST VGG + ResNet-18, batch 256 and 16, T=64
    python benchmarks/speed.py --models vgg --batch 256 --T 64  # one configuration
    python benchmarks/speed.py --device cuda                    # on a GPU

Peak memory on the CPU is the growth of the peak resident set size of a fresh process running that
one configuration (over the same process after loading the model); on CUDA it is
``torch.cuda.max_memory_allocated`` during the run.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

common.ensure_signgd()

import torch  # noqa: E402

import signgd  # noqa: E402
from signgd import kernels  # noqa: E402


def build(name: str):
    """``(model, input batch maker)`` for a benchmark model name."""
    if name == "vgg":
        import accuracy  # the trained Fashion-MNIST VGG of the accuracy benchmark (cached weights)
        from signgd import data
        args = accuracy.parse_args([])
        model, _ = accuracy.train_model(args, data.fashion_mnist("train"), data.fashion_mnist("test"))
        images = data.fashion_mnist("test").tensors[0]
        return model, lambda b: images[:b].clone()
    if name == "resnet18":
        import torchvision
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
        return model, lambda b: torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    raise SystemExit(f"unknown model {name!r}; choose vgg or resnet18")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeat: int) -> float:
    fn()  # warm-up (kernel compilation, allocator)
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, batch: int, T: int, device: str, repeat: int, mode: str) -> dict:
    """One configuration in this process: mode is 'setup', 'ann' or 'snn:<chunk or auto>'."""
    dev = torch.device(device)
    model, make = build(name)
    model = model.to(dev)
    x = make(batch).to(dev)
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if mode != "ann":  # calibrated on 8 samples, so that conversion adds little to the peak
        snn = signgd.convert(model, make(8).to(dev))
    out = {"mode": mode}
    with torch.inference_mode():
        if mode == "ann":
            out["seconds"] = _time(lambda: model(x), dev, repeat)
        elif mode.startswith("snn:"):
            chunk = None if mode == "snn:auto" else int(mode[4:])
            out["chunk"] = chunk if chunk is not None else snn._chunk(x, T)
            out["seconds"] = _time(lambda: snn(x, T=T, chunk=chunk), dev, repeat)
    if dev.type == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
    else:
        out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_setup
    return out


def run_isolated(args, name, batch, mode) -> dict:
    cmd = [sys.executable, __file__, "--one", mode, "--models", name, "--batch", str(batch), "--T", str(args.T),
           "--device", args.device, "--repeat", str(args.repeat), "--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg,resnet18")
    p.add_argument("--batch", default="256,16", help="comma-separated batch sizes")
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=2, help="timed repetitions (the best is kept)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: one per CPU")
    p.add_argument("--chunks", default="1", help="chunk sizes to time besides the default and chunk=T")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.threads = common.setup_torch(args.threads or None, deterministic=False)
    if args.one:
        print(json.dumps(measure(args.models, int(args.batch), args.T, args.device, args.repeat, args.one)))
        return 0

    modes = [("default (auto chunk)", "snn:auto")]
    modes += [(f"chunk={c}" + (" (time-major)" if c == 1 else " (layer-major)" if c == args.T else ""), f"snn:{c}")
              for c in sorted({int(c) for c in args.chunks.split(",")} | {args.T})]
    lines = [f"# Simulation speed, T={args.T}, device {args.device}", "",
             f"Command: `{common.command_line()}`", "", f"Machine: {common.machine_line()}; "
             f"signGD scan kernel: {kernels.resolve_backend(torch.zeros(1, device=args.device))}", "",
             "| model | batch | path | seconds | SNN / (T x ANN) | peak memory growth (MiB) | memory / ANN's |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            common.log(f"{name} batch {batch}: ANN")
            ann = run_isolated(args, name, batch, "ann")
            lines.append(f"| {name} | {batch} | ANN forward x T | {ann['seconds'] * args.T:.3f} | 1.00 | "
                         f"{ann['peak_bytes'] / 2**20:.0f} | 1.00 |")
            for label, mode in modes:
                common.log(f"{name} batch {batch}: {label}")
                r = run_isolated(args, name, batch, mode)
                lines.append(f"| {name} | {batch} | {label} | {r['seconds']:.3f} | "
                             f"{r['seconds'] / (args.T * ann['seconds']):.2f} | {r['peak_bytes'] / 2**20:.0f} | "
                             f"{r['peak_bytes'] / max(ann['peak_bytes'], 1):.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
