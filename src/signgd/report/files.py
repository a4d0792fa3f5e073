"""Report files: ``report.json`` and its plots in one folder, and a text summary for the terminal."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import ReportError
from ..evaluate import accuracy_table
from .build import REPORT_FORMAT, REPORT_VERSION
from .names import layer_label
from .plots import draw_plots

__all__ = ["ReportError", "write_json", "write_report", "read_report", "summary"]

REPORT_FILE = "report.json"


def write_json(report: dict, path: str | os.PathLike) -> Path:
    """Write ``report`` as JSON to ``path`` (its folder made if need be); NaN and infinities as null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    return path


def _jsonable(v):
    """NaN and infinities are not JSON: write them as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(a) for k, a in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(a) for a in v]
    return v


def write_report(report: dict, out_dir: str | os.PathLike, plots: bool = True) -> list[Path]:
    """Write ``report.json`` (and the PNG plots) into ``out_dir``; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(report, out / REPORT_FILE)]
    if plots:
        written += draw_plots(report, out)
    return written


def read_report(where: str | os.PathLike) -> dict:
    """Read a report from a folder holding ``report.json``, or from the JSON file itself."""
    path = Path(where)
    if path.is_dir():
        path = path / REPORT_FILE
    if not path.is_file():
        raise ReportError(f"{path}: no report found; give a folder written by `signgd convert --out DIR` or "
                          f"`signgd demo --out DIR` (it holds {REPORT_FILE})")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc}); the report is damaged, write it again") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ReportError(f"{path}: not a signgd report (no {REPORT_FORMAT!r} header)")
    if report.get("version") == 1:
        raise ReportError(f"{path}: written by an older signgd whose energy figures overcounted synapses; "
                          f"run `signgd report` again to measure it with the current cost model")
    if not isinstance(report.get("version"), int) or report["version"] > REPORT_VERSION:
        raise ReportError(f"{path}: report format version {report.get('version')!r} is newer than this signgd "
                          f"reads ({REPORT_VERSION}); upgrade signgd")
    return report


def summary(report: dict) -> str:
    """The report as Markdown tables: accuracy and energy per T, then the layers at the largest T."""
    steps, acc, en = report["steps"], report["accuracy"], report["energy"]
    snn, ann = en["snn"], en["ann"]
    energy = {"synaptic ACs": [f"{v:.3g}" for v in snn["ac"]], "synaptic MACs": [f"{v:.3g}" for v in snn["mac"]],
              "neuron ops": [f"{v:.3g}" for v in snn["neuron_ops"]],
              "SNN energy / ANN": ["n/a" if r is None else f"{r:.3f}" for r in en["energy_ratio_to_ann"]]}
    note = (f"; ANN per sample: {ann['mac']:.3g} MACs, {ann['ac']:.3g} ACs, {ann['neuron_ops']:.3g} neuron ops "
            f"= {en['ann_energy_pj'] / 1e6:.3g} uJ")
    lines = [accuracy_table(report["samples"], acc["ann"], steps, acc["snn"], acc["agreement"], energy, note)]
    lines += ["", f"Layers at T={steps[-1]}:", "",
              "| layer | target | neurons | firing rate | spikes per sample | relative error |",
              "|---|---|---:|---:|---:|---:|"]
    for layer in report["layers"]:
        lines.append(f"| {layer_label(layer)} | {layer['target']} | {layer['neurons']} | "
                     f"{layer['firing_rate'][-1]:.3f} | {layer['spikes_per_sample'][-1]:.4g} | "
                     f"{layer['relative_error'][-1]:.3g} |")
    head = en.get("headline")
    lines += ["", "Energy: " + (f"the SNN is within 1 point of the ANN from T={head['T']}, at "
                                f"{head['energy_ratio_to_ann']:.3g}x the ANN's energy" if head else
                                "the SNN is not within 1 point of the ANN at any T measured")
              + " (counts per sample; cost model: docs/energy.md)."]
    return "\n".join(lines)
