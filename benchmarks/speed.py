"""Simulation speed and memory: SNN time against T forward passes of the ANN, per execution path, and
SpikingJelly's integrate-and-fire simulation of the same model as the peer.

Simulating T steps costs at least T forward passes of the ANN; this script measures how close the
simulator gets, for each execution path of ``SpikingNetwork``: the default (``snn.plan``: slices of
the batch, several steps folded into each affine call), with spike statistics on, the time-major
path (``chunk=1``, whole batch) and the fully layer-major one (``chunk=T``, whole batch); and the
same figures for SpikingJelly's ann2snn conversion in its multi-step and single-step modes
(``benchmarks/_peers.py``).

    python benchmarks/speed.py                                   # VGG, ResNet-18, three Mixers; batch 256 and 16; T=64
    python benchmarks/speed.py --models fmnist-convnext,fmnist-resmlp   # the other trained timm models
    python benchmarks/speed.py --models vgg --batch 256 --T 64   # one configuration
    python benchmarks/speed.py --device cuda                     # on a GPU

Every configuration runs in a fresh process (``--one``), so that its peak memory is its own: the
growth of the peak resident set over the process's resident set just before the call, after a
warm-up call (``benchmarks/_memory.py``; on CUDA the allocator's peak). Each process also times
the ANN, interleaved with the configuration (ANN, SNN, ANN, SNN, ...; the best of ``--repeat``
each), and reports SNN / (T x ANN) from those two timings: both saw the same machine load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as common  # noqa: E402  (this folder: a script's own folder is on sys.path)
import _memory  # noqa: E402
import _peers  # noqa: E402
import torch  # noqa: E402

import signgd  # noqa: E402
from signgd import kernels  # noqa: E402
from signgd.tuning import PAPER, continued  # noqa: E402

SPARSE_SCHEDULE = "exponential:lr=0.3,decay=0.87,floor=0.02,pow2=1"
MODELS = ("vgg", "resnet18", "mixer", "fmnist-mixer", "postnorm-mixer")
#: The trained timm models of the beyond-ReLU benchmark (benchmarks/architectures.py, cached weights):
#: "fmnist-<name>" runs that model on the first test images (padded to 32x32) with its accuracy.
TRAINED = ("fmnist-mixer", "fmnist-convnext", "fmnist-resmlp", "fmnist-vit")


class PostNormMixer(torch.nn.Module):
    """An MLP-Mixer in the other common layout (timm's is pre-norm on a transposed residual
    stream): post-norm, i.e. a LayerNorm over the channels after the patch embedding and after
    each residual add, so the stream is contiguous after each norm; token mixing written as
    ``.transpose(1, 2)`` -> Linear -> GELU -> Linear -> ``.transpose(1, 2)``; a mean over tokens.
    28x28 inputs, 4x4 patches: 49 tokens x ``dim``; timm's hidden widths (``dim / 2`` for the
    tokens, ``4 dim`` for the channels)."""

    def __init__(self, dim: int = 64, blocks: int = 2, tokens: int = 49, patch: int = 4, classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.ln0 = nn.LayerNorm(dim)
        self.token = nn.ModuleList(nn.Sequential(nn.Linear(tokens, dim // 2), nn.GELU(), nn.Linear(dim // 2, tokens))
                                   for _ in range(blocks))
        self.channel = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
                                     for _ in range(blocks))
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(blocks))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(blocks))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.ln0(self.embed(x).flatten(2).transpose(1, 2))  # [B, tokens, dim]
        for token, channel, ln1, ln2 in zip(self.token, self.channel, self.ln1, self.ln2):
            x = ln1(x + token(x.transpose(1, 2)).transpose(1, 2))
            x = ln2(x + channel(x))
        return self.head(x.mean(1))


def build(name: str):
    """``(model, make(batch) -> inputs, labels or None)`` for a benchmark model name."""
    if name == "vgg":
        import accuracy  # the trained Fashion-MNIST VGG of the accuracy benchmark (cached weights)

        from signgd import data
        args = accuracy.parse_args([])
        model, _ = accuracy.train_model(args, data.fashion_mnist("train"), data.fashion_mnist("test"))
        images, labels = data.fashion_mnist("test").tensors
        return model, lambda b: images[:b].clone(), labels
    if name in TRAINED:
        import architectures  # the same configuration, hence the same cache file, as that benchmark

        from signgd import data
        train28, test28 = data.fashion_mnist("train"), data.fashion_mnist("test")
        model, _ = architectures.trained(name.split("-", 1)[1], architectures.parse_args([]), train28, test28)
        images, labels = architectures.pad32(test28).tensors
        return model.eval(), lambda b: images[:b].clone(), labels
    gen = lambda b: torch.rand(b, *shape, generator=torch.Generator().manual_seed(0))  # noqa: E731
    torch.manual_seed(0)
    if name == "resnet18":
        import torchvision
        shape = (3, 32, 32)
        return torchvision.models.resnet18(weights=None, num_classes=10).eval(), gen, None
    if name == "mixer":
        # An MLP-Mixer (LayerNorm, GELU) with small depth and width; random weights (timing only).
        from timm.models.mlp_mixer import MlpMixer
        shape = (1, 32, 32)
        return MlpMixer(num_classes=10, img_size=32, in_chans=1, patch_size=4, num_blocks=2,
                        embed_dim=64).eval(), gen, None
    if name == "postnorm-mixer":
        # The post-norm Mixer above on Fashion-MNIST test images; random weights (timing only).
        from signgd import data
        images = data.fashion_mnist("test").tensors[0]
        return PostNormMixer().eval(), lambda b: images[:b].clone(), None
    raise SystemExit(f"unknown model {name!r}; choose from {', '.join(dict.fromkeys(MODELS + TRAINED))}")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _interleaved(fns: dict, device, repeat: int) -> dict:
    """Best wall time of each function, timed in turns (a, b, a, b, ...) after one warm-up each."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def _prepare(mode: str, model, make, x, T: int, dev):
    """``(fn, info)``: the call to time for ``mode``, or ``(None, {"skip": reason})``."""
    if mode == "ann":
        return (lambda: model(x)), {}
    if mode.startswith("sj:"):
        reason = _peers.unavailable()
        if reason:
            return None, {"skip": f"SpikingJelly unavailable ({reason})"}
        try:
            net = _peers.convert(model, make(8).to(dev))
        except Exception as exc:
            msg = str(exc).splitlines()[0][:80] if str(exc) else ""
            return None, {"skip": f"n/a: SpikingJelly cannot convert it ({type(exc).__name__}: {msg})"}
        leftovers = _peers.analog_leftovers(net)
        if leftovers:
            return None, {"skip": f"n/a: SpikingJelly converts ReLUs only ({', '.join(leftovers)} stay analog)"}
        step_mode = mode[3:]
        return (lambda xb=x: _peers.run(net, xb, T, step_mode)), {}
    # per-neuron steps (signgd.schedules.adaptive); the paper's schedule, plain or continued by gains past T/2 as the
    # tuned default is past the T it was tuned for (signgd.tuning.continued)
    schedule = {"ada": "adaptive", "exp": signgd.schedules.exponential(*PAPER),
                "cont": continued(max(1, T // 2), *PAPER)}.get(mode.rpartition(":")[2])
    # the sparse neuron (dynamics="sparse") with the low-energy preset's kind of schedule; the graded neuron, without
    # and with layer windows (a layer outside its window skips its target and its scan)
    sparse = {"sparse": {"dynamics": "sparse", "schedule": SPARSE_SCHEDULE, "tolerance": 0.75},
              "graded": {"dynamics": "graded"},
              "windowed": {"dynamics": "graded", "window": 3}}.get(mode.rpartition(":")[2], {})
    try:  # calibrated on 8 samples: conversion cost is not what is measured
        snn = signgd.convert(model, make(8).to(dev), **({"schedule": schedule} | sparse))
    except signgd.UnsupportedOperationError as exc:
        return None, {"skip": "not convertible yet: " + str(exc).split(":")[0]}
    parts = mode.split(":")
    stats = "stats" in parts
    if parts[1] == "auto":
        bc, chunk = snn.plan(x, T)
        info = {"plan": f"{bc} samples x {chunk} steps per call"}
        return (lambda xb=x: snn.simulate(xb, T, stats=stats)), info
    chunk = int(parts[1])
    bc = next((int(q[2:]) for q in parts if q.startswith("bc")), None)  # "snn:<chunk>:bc<samples>"
    return (lambda xb=x: snn.simulate(xb, T, stats=stats, chunk=chunk, batch_chunk=bc)), {}


def _accuracy(fn_on, make, labels, n: int, batch: int) -> float:
    """Top-1 accuracy (%) of ``fn_on(x) -> logits or SimulationResult`` on the first n test images."""
    correct = 0
    xs, ys = make(n), labels[:n]
    for i in range(0, n, batch):
        out = fn_on(xs[i:i + batch])
        if isinstance(out, signgd.SimulationResult):
            out = out.outputs[max(out.outputs)]
        correct += int((out.argmax(1) == ys[i:i + batch]).sum())
    return 100.0 * correct / n


def measure(name: str, batch: int, T: int, device: str, repeat: int, mode: str, accuracy_n: int) -> dict:
    """One configuration in this process."""
    dev = torch.device(device)
    model, make, labels = build(name)
    model = model.to(dev)
    x = make(batch).to(dev)
    ann = lambda: model(x)  # noqa: E731
    with torch.inference_mode():
        fn, info = _prepare(mode, model, make, x, T, dev)
        out = {"mode": mode, **info}
        if fn is None:
            return out
        fn()  # warm-up: kernel compilation, allocator, oneDNN primitive caches
        out["peak_bytes"], out["precise_memory"] = _memory.measure(fn, device)
        ann()
        best = _interleaved({"ann": ann, "run": fn}, dev, repeat)
        out["ann_seconds"], out["seconds"] = best["ann"], best["run"]
        if accuracy_n and labels is not None:
            run = (lambda xb: model(xb)) if mode == "ann" else (lambda xb: fn(xb))
            out["accuracy"] = _accuracy(run, lambda n: make(n).to(dev), labels.to(dev), accuracy_n, batch)
    return out


def run_isolated(args, name, batch, mode) -> dict:
    cmd = [sys.executable, __file__, "--one", mode, "--models", name, "--batch", str(batch), "--T", str(args.T),
           "--device", args.device, "--repeat", str(args.repeat), "--threads", str(args.threads),
           "--accuracy", str(args.accuracy)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _modes(args) -> list[tuple[str, str]]:
    modes = [("signgd default", "snn:auto"), ("signgd default, stats=True", "snn:auto:stats")]
    if args.adaptive:
        modes.append(("signgd, adaptive schedule", "snn:auto:ada"))
    if args.continued:
        modes.append(("signgd, exponential(0.15, 0.95)", "snn:auto:exp"))
        modes.append((f"signgd, the same continued by gains past T={max(1, args.T // 2)}", "snn:auto:cont"))
    if args.sparse:
        modes.append(("sparse signGD (dynamics='sparse')", "snn:auto:sparse"))
        modes.append(("graded signGD (dynamics='graded')", "snn:auto:graded"))
        modes.append(("graded signGD with layer windows (window=3)", "snn:auto:windowed"))
    for c in sorted({int(c) for c in args.chunks.split(",") if c} | {1, args.T}):
        label = "time-major" if c == 1 else "layer-major" if c == args.T else f"{c} steps per call"
        modes.append((f"signgd chunk={c}, whole batch ({label})", f"snn:{c}"))
    for split in (sp for sp in args.splits.split(",") if sp):
        b, c = (int(v) for v in split.split("x"))
        modes.append((f"signgd {b} samples x {c} steps per call", f"snn:{c}:bc{b}"))
    if args.peers:
        modes += [("SpikingJelly IF, multi-step", "sj:m"), ("SpikingJelly IF, single-step", "sj:s")]
    return modes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", default="256,16", help="comma-separated batch sizes")
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--adaptive", action="store_true",
                   help="also time the adaptive schedule (signgd.schedules.adaptive)")
    p.add_argument("--continued", action="store_true",
                   help="also time the paper's schedule, plain and continued by gains past T/2 "
                        "(signgd.tuning.continued: what the tuned default does past the T it was tuned for)")
    p.add_argument("--sparse", action="store_true",
                   help="also time the sparse neuron (dynamics='sparse', the low-energy preset's neuron) and the "
                        "graded one (dynamics='graded'), without and with layer windows (window=3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (the best is kept)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: one per CPU")
    p.add_argument("--chunks", default="", help="chunk sizes to time (whole batch) besides 1 and T")
    p.add_argument("--splits", default="", help="comma-separated SAMPLESxSTEPS per call to time (e.g. 16x16,64x4)")
    p.add_argument("--accuracy", type=int, default=1024,
                   help="test images for the accuracy column (models with labels; 0: skip)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also run SpikingJelly (pip install -e '.[bench]')")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.threads = common.setup_torch(args.threads or None, deterministic=False)
    if args.one:
        print(json.dumps(measure(args.models, int(args.batch), args.T, args.device, args.repeat, args.one,
                                 args.accuracy)))
        return 0

    lines = [f"# Simulation speed, T={args.T}, device {args.device}", "",
             f"Command: `{common.command_line()}`", "", f"Machine: {common.machine_line()}; "
             f"signGD scan kernel: {kernels.resolve_backend(torch.zeros(1, device=args.device))}; "
             f"SpikingJelly: {_peer_version()}; load average before the run: {_load()}", "",
             "| model | batch | path | seconds | T x ANN seconds | SNN / (T x ANN) | peak memory (MiB) "
             f"| memory / ANN's | accuracy at T={args.T} (%) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            common.log(f"{name} batch {batch}: ANN")
            ann = run_isolated(args, name, batch, "ann")
            lines.append(_row(name, batch, "ANN forward x T", ann, ann, args.T))
            for label, mode in _modes(args):
                common.log(f"{name} batch {batch}: {label}")
                r = run_isolated(args, name, batch, mode)
                if "plan" in r:
                    label += f" ({r['plan']})"
                lines.append(_row(name, batch, label, r, ann, args.T))
    lines += ["", f"Load average after the run: {_load()}"]
    text = "\n".join(lines)
    common.emit(text, args.out)
    return 0


def _row(name, batch, label, r, ann, T) -> str:
    if "skip" in r:
        return f"| {name} | {batch} | {label} | {r['skip']} | | | | | |"
    is_ann = r["mode"] == "ann"
    secs = r["ann_seconds"] * T if is_ann else r["seconds"]
    mem = r["peak_bytes"] / 2**20
    acc = f"{r['accuracy']:.2f}" if "accuracy" in r else ""
    precise = "" if r.get("precise_memory", True) else " (maxrss)"
    return (f"| {name} | {batch} | {label} | {secs:.3f} | {r['ann_seconds'] * T:.3f} | "
            f"{secs / (T * r['ann_seconds']):.2f} | {mem:.0f}{precise} | "
            f"{r['peak_bytes'] / max(ann['peak_bytes'], 1):.2f} | {acc} |")


def _peer_version() -> str:
    if _peers.unavailable():
        return "not installed"
    from importlib.metadata import version
    return version("spikingjelly")


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
