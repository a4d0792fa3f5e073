"""The demo's wall time on a quiet machine and beside one competing CPU-bound process.

Issue 17's target: ``python -m signgd demo`` within 2x of its quiet time while one other CPU-bound
process (``python -c "while True: pass"`` at normal priority) runs. Rounds alternate quiet / busy, so
both conditions see the same drift of the machine; the load average before each run is printed, so a
reader can tell a quiet run from a shared one.

    python benchmarks/demo_load.py --rounds 2 --out docs/demo_load.md
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from _common import REPO_ROOT, command_line, emit, log, machine_line


def _run_demo(out_dir: str) -> tuple[float, float, list[str]]:
    """Wall and user seconds of one demo process, and its timing lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "signgd", "demo", "--out", out_dir], env=env,
                         capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines()
             if " in " in ln and " s" in ln and ln.strip().startswith(("trained", "signgd", "subgradient"))]
    return wall, after.ru_utime - before.ru_utime, lines


def _busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="write the markdown table here too")
    args = parser.parse_args(argv)
    rows, ratios, details = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, args.rounds + 1):
            load_q = os.getloadavg()[0]
            log(f"round {r}: quiet (load {load_q:.2f})")
            wall_q, user_q, lines_q = _run_demo(f"{tmp}/quiet{r}")
            busy = _busy_loop()
            time.sleep(1.0)
            try:
                load_b = os.getloadavg()[0]
                log(f"round {r}: beside a busy loop (load {load_b:.2f})")
                wall_b, user_b, lines_b = _run_demo(f"{tmp}/busy{r}")
            finally:
                busy.kill()
                busy.wait()
            ratio = wall_b / wall_q
            ratios.append(ratio)
            rows.append(f"| {r} | {load_q:.2f} | {wall_q:.1f} s ({user_q:.1f} s) | {load_b:.2f} | "
                        f"{wall_b:.1f} s ({user_b:.1f} s) | {ratio:.2f} |")
            details.append((r, lines_q, lines_b))
            log(rows[-1])
    text = [f"Machine: {machine_line()}", "", f"Command: `{command_line()}`", "",
            "| round | load before (quiet) | quiet: wall (user) | load before (busy) | "
            "+ one busy loop: wall (user) | ratio |",
            "|---:|---:|---:|---:|---:|---:|", *rows, "",
            f"Median ratio: **{statistics.median(ratios):.2f}** (worst {max(ratios):.2f}); target: at most 2.", "",
            "The demo's own timing lines (quiet, then busy):", ""]
    for r, lines_q, lines_b in details:
        text += [f"- round {r} quiet: " + "; ".join(lines_q), f"- round {r} busy: " + "; ".join(lines_b)]
    emit("\n".join(text), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
