"""The model zoo: does every torchvision and timm family convert, and does its SNN track its ANN?

For each model of ``benchmarks/zoo_models.py`` (smallest variant, random init with zero weights
re-initialised, small inputs), in its own process with a time limit and one torch thread:
``signgd.convert(model, torch.randn(16, ...))`` with the defaults, then on another batch of 4. The input side
is the model's own (``zoo_models.side``), except that a timm model whose native side is above 64 is first tried
at 64 (``zoo_models.sides``: it must build and run there) and falls back to its native side:

- converts: yes, or the error's first line;
- ANN: ``max |snn.ann(x) - model(x)| / max |model(x)|`` (the rewritten graph as an ANN);
- tracking error ``||snn(x, T) - model(x)|| / ||model(x)||`` at T=32 and T=256 (one run of 256 steps);
  a model *tracks* when the error falls from T=32 to T=256 (or is 0) and ends below 0.25;
- spread: ``||model(x) - mean over the batch|| / ||model(x)||``; below 1e-3 the random model's output
  is nearly constant and its row is marked degenerate;
- tuning seconds (the default ``convert`` tunes its schedule: 22 candidates screened for 16 steps, the best 7
  simulated for 64 steps on the calibration batch, most of a row's time), and the worker's CPU and wall seconds.

The time limit (``--timeout``) is in CPU seconds of the worker process (``RLIMIT_CPU``), so that a busy
shared machine slows a model down without turning it into a timeout; a wall-clock backstop of
``WALL_FACTOR`` times the limit catches a worker that sleeps. ``--schedule exponential`` passes that schedule
to ``convert`` (no tuning: not the defaults; its rows get their own section of the report). ``--shard K/N``
runs every Nth model, to run N processes side by side; ``--from-json`` renders their files together.

``--modes random,realistic`` adds rows with every BatchNorm's running statistics re-estimated on random inputs
(activation scales like a trained network's) for the models that have BatchNorm. Writes Markdown::

    nice -n 10 python benchmarks/zoo.py --out docs/zoo.md --json benchmarks/.cache/zoo.json
    nice -n 10 python benchmarks/zoo.py --shard 0/2 --json a.json &
    nice -n 10 python benchmarks/zoo.py --shard 1/2 --json b.json
    python benchmarks/zoo.py --from-json a.json,b.json --notes docs/zoo_notes.md --out docs/zoo.md
    python benchmarks/zoo.py --only torchvision:mobilenet_v2,timm:davit_tiny
    python benchmarks/zoo.py --torchvision all --limit 10 --timeout 120
    python benchmarks/zoo.py --no-timm --modes realistic
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import _common as common  # this folder: a script's own folder is on sys.path
import zoo_models  # noqa: E402

STEPS = (32, 256)
TRACKING_BOUND = 0.25
CALIBRATION, EVALUATION = 16, 4
MODES = {"random": "Random init", "realistic": "Realistic statistics (BatchNorm re-estimated)"}
WALL_FACTOR = 4  # the wall-clock backstop, in multiples of the CPU-time limit


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--only", default=None, help="comma-separated models (source:name, or a name part to match)")
    p.add_argument("--limit", type=int, default=None, help="run the first N models only")
    p.add_argument("--no-simulate", action="store_true",
                   help="convert and check the ANN side only (no tracking): a cheap answer to 'does it convert'")
    p.add_argument("--native-side", action="store_true",
                   help="run every model at its native input side (no smaller side tried first): to check that a "
                        "row at the smaller side says the same")
    p.add_argument("--shard", default=None, help="K/N: every Nth model from the Kth (0-based), to run N side by side")
    p.add_argument("--torchvision", choices=("families", "all"), default="families",
                   help="the smallest variant of each family, or every builder")
    p.add_argument("--no-timm", action="store_true", help="torchvision only")
    p.add_argument("--modes", default="random",
                   help="comma-separated: random (random init), realistic (BatchNorm statistics re-estimated)")
    p.add_argument("--timeout", type=float, default=300,
                   help=f"CPU seconds per model and mode (the worker's; wall-clock backstop: {WALL_FACTOR}x)")
    p.add_argument("--schedule", default=None,
                   help="pass this schedule to convert (e.g. exponential: no tuning) instead of the default")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    p.add_argument("--json", type=Path, default=None, help="write the raw results here")
    p.add_argument("--from-json", default=None,
                   help="comma-separated --json files of earlier runs: render them together (and write the merged "
                        "rows to --json), run nothing")
    p.add_argument("--notes", type=Path, default=None,
                   help="a hand-written Markdown file to put between the header and the tables")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="random", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = zoo_models.keys(args.torchvision, not args.no_timm)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        models = [m for m in models if m in wanted or any(w in m for w in wanted)]
        models += [w for w in wanted if ":" in w and w not in models]  # a model outside the lists
    args.models = models[:args.limit] if args.limit else models
    if args.shard:
        k, n = (int(v) for v in args.shard.split("/"))
        if not 0 <= k < n:
            p.error(f"--shard {args.shard}: need K/N with 0 <= K < N, e.g. 0/2 and 1/2")
        args.models = args.models[k::n]
    bad = [m for m in args.modes.split(",") if m.strip() not in ("random", "realistic")]
    if bad:
        p.error(f"unknown mode(s) {bad}; choose random and/or realistic")
    return args


def first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def measure(key: str, mode: str, schedule: str | None = None, simulate: bool = True,
            native_side: bool = False) -> dict:
    """Build, convert and simulate one model; every field of its row (run in the worker process)."""
    import torch

    import signgd.convert  # noqa: F401 - loaded for _tuning_timed

    torch.set_num_threads(1)
    row = {"model": key, "mode": mode, "schedule": schedule or "default"}
    with _tuning_timed(row):
        return _measure(row, key, mode, schedule, simulate, native_side)


def _measure(row: dict, key: str, mode: str, schedule: str | None, simulate: bool, native_side: bool) -> dict:
    import torch

    import signgd

    start = time.perf_counter()
    if native_side:
        model, s, failed = zoo_models.build(key), zoo_models.side(key), {}
    else:
        model, s, failed = zoo_models.build_sized(key)
    gen = torch.Generator().manual_seed(0)
    calibration = torch.randn(CALIBRATION, 3, s, s, generator=gen)
    x = torch.randn(EVALUATION, 3, s, s, generator=gen)
    if mode == "realistic":
        row["batchnorms"] = zoo_models.reestimate_batchnorm(model, torch.randn(64, 3, s, s, generator=gen))
        if not row["batchnorms"]:
            row["status"] = "no BatchNorm"
            return row
    row["params"] = sum(p.numel() for p in model.parameters())
    row["side"] = s
    if s != zoo_models.side(key):
        row["native_side"] = zoo_models.side(key)
    if failed:
        row["smaller_sides_failed"] = failed
    with torch.no_grad():
        ann = model(x)
        # the tuner ranks by the error alone when the ANN's arg-max is one class on every calibration sample
        row["ann_classes"] = len(set(model(calibration).reshape(calibration.shape[0], -1).argmax(-1).tolist()))
    row["spread"] = float((ann - ann.mean(0)).norm() / ann.norm().clamp_min(1e-30))
    try:
        snn = signgd.convert(model, calibration, **({"schedule": schedule} if schedule else {}))
    except Exception as exc:  # noqa: BLE001 - the row records any failure
        row.update(status="error", stage="convert", error=first_line(exc), seconds=time.perf_counter() - start)
        return row
    row["convert_seconds"] = time.perf_counter() - start
    row["neuron_layers"] = len(snn.neurons)
    if getattr(snn, "tuning", None) is not None:
        row["tuned_schedule"] = snn.settings["schedule"]
    try:
        with torch.no_grad():
            row["ann_error"] = float((snn.ann(x) - ann).abs().max() / ann.abs().max().clamp_min(1e-30))
            if not simulate:
                row.update(status="converted", seconds=time.perf_counter() - start)
                return row
            outs = snn(x, T=list(STEPS))
    except Exception as exc:  # noqa: BLE001
        row.update(status="error", stage="simulate", error=first_line(exc), seconds=time.perf_counter() - start)
        return row
    for t in STEPS:
        row[f"err{t}"] = float((outs[t] - ann).norm() / ann.norm().clamp_min(1e-30))
    row["tracks"] = tracks(row)
    row["status"] = "ok"
    row["seconds"] = time.perf_counter() - start
    return row


@contextlib.contextmanager
def _tuning_timed(row: dict):
    """Within: record in ``row["tune_seconds"]`` how long ``convert``'s schedule tuning takes (it wraps the
    function ``signgd.convert`` calls, and puts it back after; the call itself is unchanged)."""
    module = sys.modules["signgd.convert"]
    tune = module.tune_network

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return tune(*args, **kwargs)
        finally:
            row["tune_seconds"] = row.get("tune_seconds", 0.0) + time.perf_counter() - t0

    module.tune_network = timed
    try:
        yield
    finally:
        module.tune_network = tune


def tracks(row: dict) -> bool:
    """The error falls from T=32 to T=256 (or is exactly 0: a constant output) and ends below the bound."""
    lo, hi = row[f"err{STEPS[0]}"], row[f"err{STEPS[-1]}"]
    return bool((hi < lo or hi == 0) and hi < TRACKING_BOUND)


def run_one(key: str, mode: str, limit: float, schedule: str | None = None, simulate: bool = True,
            native_side: bool = False) -> dict:
    """``measure`` in a fresh process (one thread) with a limit of ``limit`` CPU seconds (``RLIMIT_CPU``: a busy
    machine slows the worker's wall clock, not its CPU time) and a wall-clock backstop of ``WALL_FACTOR * limit``;
    a crash or a limit reached is a row too. Every row gets the worker's CPU and wall seconds (imports included)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MKL_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", key, "--mode", mode] + (["--schedule", schedule] if schedule else [])
    cmd += ([] if simulate else ["--no-simulate"]) + (["--native-side"] if native_side else [])
    cpu_before, start = _children_cpu(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WALL_FACTOR * limit, env=env,
                              preexec_fn=_cpu_limit(limit))
    except subprocess.TimeoutExpired:
        proc = None
    usage = {"cpu_seconds": _children_cpu() - cpu_before, "wall_seconds": time.perf_counter() - start,
             "cpu_limit": limit}
    base = {"model": key, "mode": mode, "schedule": schedule or "default", **usage}
    if proc is None:
        return dict(base, status="timeout", error=f"no result within the wall-clock backstop of "
                    f"{WALL_FACTOR * limit:.0f} s ({usage['cpu_seconds']:.0f} CPU s used: a busy machine)")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line), **usage)
    tail = " ".join((proc.stderr or "").strip().splitlines()[-1:])[:300]
    return cpu_limited(dict(base, status="crash", error=f"exit {proc.returncode}: {tail}"))


def cpu_limited(row: dict) -> dict:
    """A worker ended by SIGXCPU (sent only for RLIMIT_CPU) reached the CPU-time limit: a timeout row, not a
    crash. The kernel counts the limit in scheduler time, which on a loaded VM runs ahead of the rusage
    seconds reported (maxvit_t: SIGXCPU at 240 s, rusage 227 s)."""
    if row.get("status") == "crash" and row.get("error", "").startswith(f"exit {-signal.SIGXCPU}:"):
        row = dict(row, status="timeout", error=f"no result within {row.get('cpu_limit', 0):.0f} CPU s")
    return row


def _cpu_limit(limit: float):
    """A ``preexec_fn``: SIGXCPU (which ends the process) after ``limit`` CPU seconds, SIGKILL 5 s later."""
    soft = max(1, math.ceil(limit))
    return lambda: resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))


def _children_cpu() -> float:
    """User plus system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        import warnings

        warnings.simplefilter("ignore")
        try:
            row = measure(args.worker, args.mode, args.schedule, not args.no_simulate, args.native_side)
        except Exception as exc:  # noqa: BLE001 - building the model failed: still one row
            row = {"model": args.worker, "mode": args.mode, "schedule": args.schedule or "default",
                   "status": "error", "stage": "build",
                   "error": first_line(exc)}
        print(json.dumps(row), flush=True)
        return 0
    if args.from_json:
        rows = [r for path in args.from_json.split(",") for r in json.loads(Path(path).read_text())]
        latest = {(r["model"], r["mode"], r.get("schedule", "default")): cpu_limited(r) for r in rows}
        order = {key: i for i, key in enumerate(zoo_models.keys("families", True))}
        rows = sorted(latest.values(), key=lambda r: order.get(r["model"], len(order)))  # a rerun wins
        if args.json:  # the merged rows
            args.json.write_text(json.dumps(rows, indent=1))
        common.emit(render(args, rows), args.out)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows, version = [], common.source_version()
    for i, key in enumerate(args.models):
        for mode in modes:
            row = dict(run_one(key, mode, args.timeout, args.schedule, not args.no_simulate, args.native_side),
                       version=version)
            rows.append(row)
            common.log(f"[{i + 1}/{len(args.models)}] {key} ({mode}): {summary(row)}")
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=1))
    common.emit(render(args, rows), args.out)
    return 0


def summary(row: dict) -> str:
    if row.get("status") == "converted":
        return f"converts (not simulated), ann {row['ann_error']:.1e}"
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('error', '')}"
    return (f"ann {row['ann_error']:.1e}, err T=32 {row['err32']:.3g}, T=256 {row['err256']:.3g}, "
            f"{'tracks' if tracks(row) else 'does not track'} ({row['seconds']:.0f} s)")


def _cell(v, fmt="{:.3g}"):
    return "-" if v is None else fmt.format(v)


def _side(row: dict) -> str:
    """The input side, and the native one where the model ran at a smaller side (or the smaller sides that
    failed before the native one was used)."""
    text = str(row.get("side", "-"))
    if "native_side" in row:
        text += f" (native {row['native_side']})"
    if row.get("smaller_sides_failed"):
        text += f" ({', '.join(str(s) for s in row['smaller_sides_failed'])} fails)"
    return text


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | params | input | converts | ANN max rel. diff | err T=32 | err T=256 | tracks | "
             "spread | tuning s | CPU s | wall s |", "|---|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        status = r.get("status")
        if status == "ok":
            conv = "yes"
        elif status == "converted":
            conv = "yes (not simulated)"
        elif status == "error" and r.get("stage") == "simulate":
            conv = f"yes; simulation fails: {r['error']}"
        else:
            conv = f"no: {r.get('error', status)}".replace("|", "\\|")
        tracked = "-" if status != "ok" else ("yes" if tracks(r) else "no")
        if status == "ok" and r.get("spread", 1) < 1e-3:
            tracked += " (degenerate)"
        params = f"{r['params'] / 1e6:.1f}M" if "params" in r else "-"
        name = r["model"] + ("" if r.get("schedule", "default") == "default" else f" (schedule {r['schedule']})")
        lines.append(f"| {name} | {params} | {_side(r)} | {conv} | "
                     f"{_cell(r.get('ann_error'), '{:.1e}')} | {_cell(r.get('err32'))} | "
                     f"{_cell(r.get('err256'))} | {tracked} | "
                     f"{_cell(r.get('spread'), '{:.2g}')} | {_cell(r.get('tune_seconds'), '{:.0f}')} | "
                     f"{_cell(r.get('cpu_seconds'), '{:.0f}')} | "
                     f"{_cell(r.get('wall_seconds', r.get('seconds')), '{:.0f}')} |")
    return lines


def counts(rows: list[dict], source: str) -> str:
    mine = [r for r in rows if r["model"].startswith(source + ":") and r.get("status") != "not run"]
    missing = sum(r.get("status") == "not run" for r in rows if r["model"].startswith(source + ":"))
    conv = [r for r in mine if r.get("status") in ("ok", "converted") or r.get("stage") == "simulate"]
    unsimulated = sum(r.get("status") == "converted" for r in mine)
    ok = [r for r in mine if r.get("status") == "ok"]
    good = [r for r in ok if tracks(r)]
    return (f"{source}: {len(conv)} of {len(mine)} convert, {len(ok)} also simulate a batch of "
            f"{EVALUATION}, {len(good)} track" + (f" ({missing} more not run)" if missing else "")
            + (f"; {unsimulated} converted without a simulation (--no-simulate: tracking not measured)"
               if unsimulated else ""))


def any_schedule(rows: list[dict], source: str) -> str:
    """Per family over every schedule's random-init rows: how many convert, and how many track with at least one
    schedule (and with which), the degenerate ones (spread below 1e-3) counted apart."""
    mine = [r for r in rows if r["model"].startswith(source + ":") and r["mode"] == "random"]
    families = sorted({r["model"] for r in mine})
    conv = {r["model"] for r in mine if r.get("status") in ("ok", "converted") or r.get("stage") == "simulate"}
    tracking = [r for r in mine if r.get("status") == "ok" and tracks(r)]
    good = {r["model"] for r in tracking}
    degenerate = good - {r["model"] for r in tracking if r.get("spread", 1) >= 1e-3}
    by = {}
    for r in tracking:
        by.setdefault(r.get("schedule", "default"), set()).add(r["model"])
    share = 100 * len(good) / max(len(families), 1)
    return (f"{source}: {len(conv)} of {len(families)} families convert; {len(good)} ({share:.0f}%) track with at "
            f"least one schedule ({len(degenerate)} of them degenerate); by schedule: "
            + ", ".join(f"{k} {len(v)}" for k, v in sorted(by.items()))
            + f"; not shown to track: {', '.join(m.split(':', 1)[1] for m in families if m not in good) or 'none'}")


def time_spent(rows: list[dict]) -> str:
    """Where the time went: the workers' CPU and wall seconds, and the share of the schedule tuning."""
    timed = [r for r in rows if "wall_seconds" in r]
    cpu, wall = sum(r.get("cpu_seconds", 0) for r in timed), sum(r["wall_seconds"] for r in timed)
    tuned = [r for r in timed if "tune_seconds" in r]
    tune, tuned_wall = sum(r["tune_seconds"] for r in tuned), sum(r["wall_seconds"] for r in tuned)
    text = f"time: {cpu:.0f} CPU s, {wall:.0f} wall s in {len(timed)} workers"
    if tuned:
        text += (f"; in the {len(tuned)} that tuned a schedule, tuning took {tune:.0f} of their {tuned_wall:.0f} "
                 f"wall s ({100 * tune / max(tuned_wall, 1e-9):.0f}%)")
    limited = sum(r.get("status") == "timeout" for r in rows)
    return text + (f"; {limited} reached the time limit" if limited else "")


def render(args, rows: list[dict]) -> str:
    lines = [
        "# The model zoo: torchvision and timm families, converted with the defaults",
        "",
        f"Generated by `benchmarks/zoo.py`; rerun to refresh. Command: `{common.command_line()}`",
        "",
        f"Machine: {common.machine_line()} (each model in its own process, 1 torch thread, a limit of "
        f"{args.timeout:.0f} CPU seconds of the worker process (RLIMIT_CPU) and a wall-clock backstop of "
        f"{WALL_FACTOR * args.timeout:.0f} s)",
        "",
        f"Random init (seed 0), 10 classes, all-zero weights re-initialised; `convert(model, randn({CALIBRATION}, 3, "
        f"s, s))` (s: the input column; a timm model with a native side above {zoo_models.SMALL_SIDE} runs at "
        f"{zoo_models.SMALL_SIDE} where it builds and runs there, else at its native side), then a new batch of "
        f"{EVALUATION}. ANN: max |snn.ann(x) - model(x)| / max |model(x)|. err: "
        f"||snn(x, T) - model(x)|| / ||model(x)||. Tracks: err falls from T=32 to T=256 and ends below "
        f"{TRACKING_BOUND}. Spread: how much the output varies over the batch (below 1e-3: degenerate). tuning s: "
        f"wall seconds of the default `convert`'s schedule tuning (22 candidate schedules screened, the best "
        f"simulated for 64 steps on the calibration batch). CPU s, wall s: the worker process's, imports included "
        f"(rows of older runs: wall seconds only).",
        "",
    ]
    if getattr(args, "notes", None):
        lines += [args.notes.read_text().strip(), ""]
    lines += ["## Every family, any schedule (random init)", ""]
    lines += [f"- {any_schedule(rows, s)}" for s in ("torchvision", "timm")
              if any(r["model"].startswith(s + ":") for r in rows)] + [""]
    schedules = ["default"] + sorted({r.get("schedule", "default") for r in rows} - {"default"})
    for (mode, title), schedule in itertools.product(MODES.items(), schedules):
        mine = [r for r in rows if r["mode"] == mode and r.get("status") != "no BatchNorm"
                and r.get("schedule", "default") == schedule]
        if not mine:
            continue
        which = "" if schedule == "default" else f", `convert(..., schedule={schedule!r})` (not the defaults)"
        lines += [f"## {title}{which}", ""]
        sources = [s for s in ("torchvision", "timm") if any(r["model"].startswith(s) for r in mine)]
        lines += [f"- {counts(mine, s)}" for s in sources] + [f"- {time_spent(mine)}"]
        lines += [""] + table(mine) + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
