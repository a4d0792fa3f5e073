"""Explore the sparse neuron by hand: accuracy, energy against the ANN and firing at T = 8, 16, 32, 64 for
configurations given on the command line (what ``preset="low-energy"``'s grid was chosen from).

Each configuration is ``lr,decay,floor,tolerance,pow2`` (``exponential(lr, decay, floor, pow2)`` steps,
``dynamics="sparse"``); firing is the neuron-weighted mean of the report's per-layer rates over steps 1..T.

    python benchmarks/sparse_explore.py vgg 500 0.3,0.8,0,0.5,0 0.3,0.8,0.02,0.75,1
"""
from __future__ import annotations

import sys

import _common as common  # this folder: a script's own folder is on sys.path
import architectures as arch  # noqa: E402

import signgd  # noqa: E402
from signgd.report import make_report  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3:
        raise SystemExit(__doc__)
    name, limit, specs = argv[0], int(argv[1]), argv[2:]
    common.setup_torch(1)
    args = arch.parse_args([])
    args.limit = limit
    train28, test28, idx_test, idx_cal = arch.splits(args)
    model, _, subset, calibration = arch.prepared(name, arch.parse_args([]), train28, test28, idx_test, idx_cal)
    print(f"`{common.command_line()}`\n\n{common.machine_line()}\n")
    for spec in specs:
        lr, decay, floor, tol, pow2 = map(float, spec.split(","))
        schedule = signgd.schedules.exponential(lr, decay, floor, bool(pow2))
        snn = signgd.convert(model, calibration, dynamics="sparse", schedule=schedule, tolerance=tol, progress=False)
        rep = make_report(snn, subset, [8, 16, 32, 64], batch_size=250, progress=False)
        neurons = sum(layer["neurons"] for layer in rep["layers"])
        rates = [sum(layer["firing_rate"][i] * layer["neurons"] for layer in rep["layers"]) / neurons for i in range(4)]
        print(spec, "ann", rep["accuracy"]["ann"], "snn", rep["accuracy"]["snn"],
              "ratio", [round(r, 3) for r in rep["energy"]["energy_ratio_to_ann"]],
              "rate", [round(r, 3) for r in rates], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
