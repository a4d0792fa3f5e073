"""Tune a converted network in place for the T a user will run (what ``convert`` does when it tunes): the schedule that
agrees best with the ANN (``signgd.tuning``), or the cheapest sparse or graded configuration that agrees
(``signgd.energy_tuning``), and record the choice in its settings."""
from __future__ import annotations

import torch

from . import distributed as _dist
from . import schedules as sched
from .configured import set_scales, set_window
from .dynamics import BAND_DYNAMICS
from .energy_tuning import tune_energy
from .tuning import ADAPTIVE, steps_text, tune_schedule


def tune_network(snn, x: torch.Tensor, T, objective: str = "agreement", tune_tolerance: bool = False,
                 share: bool = False, progress: bool | None = None, mean_scales: dict | None = None,
                 window_limit: int | None = None) -> tuple[str, str]:
    """Tune ``snn`` in place for ``T`` on ``x`` (``convert`` does this): ``objective="agreement"`` picks the
    schedule that agrees best (``tune_schedule``; no adaptive candidates for the sparse neuron, whose steps
    are the schedule's), ``"energy"`` the cheapest sparse configuration that agrees (``tune_energy``; its
    tolerance too when ``tune_tolerance``, and the T it needs, recorded as ``settings["tuned_for"]``).
    ``mean_scales``: the energy objective may also divide every normalized neuron by these (its calibration mean
    ``|f(x)|``), recorded as ``settings["scale"] = "mean"`` when chosen; and it may pick layer windows
    (``settings["window"]``) whose output settles by ``window_limit`` (None: at any step). With ``share`` rank 0's
    choice is kept on every rank. Returns the conversion log's note and what the summary line says."""
    sparse = snn.settings["dynamics"] in BAND_DYNAMICS
    if objective == "energy":
        tolerances = None if tune_tolerance else (snn.settings["tolerance"],)
        kinds = ("graded",) if snn.settings["dynamics"] == "graded" else BAND_DYNAMICS  # asked for: graded only
        result = tune_energy(snn, x, T, tolerances=tolerances, kinds=kinds, progress=progress, mean_scales=mean_scales,
                             window_limit=window_limit)
        chosen = {"schedule": result.schedule.spec(), "tolerance": result.best.tolerance, "T": result.best.T,
                  "dynamics": result.best.dynamics, "scale": result.best.scale, "window": result.best.window}
    else:
        result = tune_schedule(snn, x, T, adaptive=() if sparse else ADAPTIVE, progress=progress)
        chosen = {"schedule": result.schedule.spec()}
    if share:  # every rank tunes the same network; rank 0's choice is the one kept
        chosen = _dist.broadcast_object(chosen)
    snn.schedule = sched.make_schedule(chosen["schedule"])
    snn.settings["schedule"] = chosen["schedule"]
    snn.tuning = result
    if objective == "energy":
        snn.settings["tolerance"], snn.settings["tuned_for"] = chosen["tolerance"], chosen["T"]
        snn.settings["dynamics"] = chosen["dynamics"]
        set_window(snn, chosen["window"])
        if chosen["scale"] == "mean":
            set_scales(snn, mean_scales)
            snn.settings["scale"] = "mean"
            if share:  # rank 0's scales on every rank, as convert does with the others
                _dist.broadcast_network(snn)
        verdict = "" if result.reached else (f"; no candidate reached {100 * result.min_agreement:.0f}% agreement, "
                                             f"this one agrees best")
        scaled = ", scaled by the calibration mean |f(x)|" if chosen["scale"] == "mean" else ""
        windows = f", layer windows of {chosen['window']} steps" if chosen["window"] is not None else ""
        what = (f"{chosen['dynamics']} neurons, {snn.schedule!r}, tolerance {chosen['tolerance']:g}{scaled}{windows}, "
                f"T={chosen['T']}")
        return (f"tuned for energy at T={steps_text(result.T)} on {result.samples} calibration samples: {what} "
                f"({100 * result.best.agreement:.1f}% agreement with the ANN, {result.best.energy_ratio:.2f}x "
                f"its energy{verdict})",
                f"{what} tuned for energy at T={steps_text(result.T)} on {result.samples} samples"
                + ("" if result.reached else f" (none agreed with the ANN on {100 * result.min_agreement:.0f}% of "
                   f"them; best {100 * result.best.agreement:.1f}%: the default may serve this model better)"))
    return (f"tuned the schedule for T={steps_text(T)} on {result.samples} calibration samples: "
            f"{snn.schedule!r} ({100 * result.best.agreement:.1f}% agreement with the ANN; the paper's schedule: "
            f"{100 * result.paper.agreement:.1f}%)",
            f"schedule {snn.schedule!r} tuned for T={steps_text(T)} on {result.samples} samples")
