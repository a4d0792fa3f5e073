"""Shared helpers for the benchmark scripts in this folder.

Each script runs as ``python benchmarks/<name>.py`` from a checkout with signgd installed
(``pip install -e .``, as README's set-up does). Trained models are cached in ``benchmarks/.cache/``,
keyed by a hash of their training configuration, so reruns (and other scripts using the same
configuration) reuse them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def setup_torch(threads: int | None = None, deterministic: bool = True) -> int:
    """Set torch's intra-op thread count (default: every CPU we may use) and ask for deterministic
    kernels. Returns the thread count."""
    import torch

    threads = threads or cpu_count()
    torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return threads


def log(msg: str) -> None:
    """Progress messages go to stderr, so stdout holds only the result."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-able configuration."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def seeded_subset(n_total: int, n: int, seed: int):
    """``n`` distinct indices out of ``range(n_total)``, fixed by ``seed``, in increasing order."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=gen)[:min(n, n_total)].sort().values


def train_cached(name: str, config: dict, build, train_fn, evaluate_fn=None, *, refresh: bool = False):
    """Return ``(model, info)``: the model ``build()`` makes, with weights from the cache file for
    ``config`` when there is one, else trained by ``train_fn(model)`` and then cached.

    ``config`` must describe everything that determines the weights (architecture, data, optimizer,
    epochs, seed): its hash names the cache file ``benchmarks/.cache/<name>-<hash>.pt``.
    ``evaluate_fn(model) -> float`` (optional) is stored as ``info["test_accuracy"]`` at training time.
    ``info`` also holds ``train_seconds`` (of the original training run), ``cached`` (whether the
    weights came from the cache), ``path`` and the ``config``.
    """
    import torch

    path = CACHE_DIR / f"{name}-{config_key(config)}.pt"
    model = build()
    if path.is_file() and not refresh:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("config") != config:
                raise ValueError("it holds a different configuration")
            model.load_state_dict(blob["state_dict"])
        except Exception as exc:  # unreadable, stale or mismatched: retrain and overwrite
            log(f"cannot use cache file {path} ({type(exc).__name__}: {exc}); retraining")
            model = build()
        else:
            model.eval()
            return model, dict(blob["info"], cached=True, path=str(path), config=config)
    start = time.perf_counter()
    train_fn(model)
    seconds = time.perf_counter() - start
    model.eval()
    info = {"train_seconds": seconds, "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "date": _dt.datetime.now().isoformat(timespec="seconds")}
    if evaluate_fn is not None:
        info["test_accuracy"] = float(evaluate_fn(model))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": config, "info": info, "state_dict": model.state_dict()}, tmp)
    tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache file
    return model, dict(info, cached=False, path=str(path), config=config)


def command_line() -> str:
    """The command that started this process, shell-quoted, relative to the repository root when
    the script lives in it."""
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(REPO_ROOT))
    except ValueError:
        pass
    return " ".join(shlex.quote(a) for a in ["python", *argv])


def source_version() -> str:
    """signgd's version and, in a git checkout, the commit (``+dirty`` with uncommitted changes)."""
    import subprocess

    import signgd

    version = f"signgd {signgd.__version__}"
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty=+dirty", "--abbrev=12"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode == 0 and commit.stdout.strip():
        version += f" (git {commit.stdout.strip()})"
    return version


def machine_line() -> str:
    import torch

    return (f"{cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {source_version()}, {_dt.date.today().isoformat()}")


def fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(s, 60)
    return f"{int(m)} min {s:.0f} s"


def save_partial(lines: list[str], out) -> None:
    """Write the report so far to ``out`` (when given), so that a long run stopped midway keeps its rows."""
    if out:
        Path(out).write_text("\n".join(lines) + "\n")


def add_subset_arguments(p, limit: int) -> None:
    """The options of a script that measures a few trained Fashion-MNIST models on a seeded test subset and appends
    its table to a Markdown file: ``--limit`` (test images), ``--calibration``, ``--seed``, ``--threads``, ``--out``."""
    p.add_argument("--limit", type=int, default=limit, help="test images (a seeded subset)")
    p.add_argument("--calibration", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="also append the table to this Markdown file")


def add_full_test_arguments(p) -> None:
    """The options of a script that measures accuracy on the full Fashion-MNIST test set and energy on a subset of it:
    ``--limit`` (10000), ``--energy-limit``, ``--calibration``, ``--seed``, ``--threads``, ``--out``."""
    p.add_argument("--limit", type=int, default=10000, help="test images for accuracy (10000: the full test set)")
    p.add_argument("--energy-limit", type=int, default=1000, help="test images the energy is counted on")
    p.add_argument("--calibration", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)


def append_report(lines: list[str], out=None) -> None:
    """Print a table and, when ``out`` is given, append it there (several runs' tables collect in one file)."""
    print("\n".join(lines))
    if out:
        with open(out, "a") as f:
            f.write("\n".join(lines) + "\n\n")


def emit(text: str, out=None) -> None:
    """Print a report to stdout and, when ``out`` (a path) is given, also write it there."""
    print(text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        log(f"wrote {out}")
