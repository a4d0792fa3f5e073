"""Assemble a report: a plain JSON-able dict that alone says what was run and what came out.

Per-T quantities are lists aligned with ``steps`` (JSON has no integer keys). The ``settings``
section holds everything needed to reproduce the run: the conversion settings (dynamics, schedule,
encoding, normalization, seed, ...), the evaluation settings (T, batch size, sample limit), the model
and data specs and the command line when a command made it, and the library versions.
"""
from __future__ import annotations

import datetime
import platform
import sys

import torch

from .. import distributed as _dist
from ..network import SpikingNetwork, Steps, parse_steps
from ..version import __version__
from . import energy as energy_mod
from .names import layer_names
from .stats import RunStatistics, collect

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "make_report", "build_report", "versions"]

REPORT_FORMAT = "signgd.report"
REPORT_VERSION = 2  # 2: the energy section counted node by node on the events sent


def versions() -> dict[str, str]:
    """Versions of what produced the numbers."""
    out = {"signgd": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    for name in ("numpy", "torchvision", "timm"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            out[name] = str(module.__version__)
    return out


def build_report(snn: SpikingNetwork, stats: RunStatistics, *, energy_model=energy_mod.EnergyModel(),
                 run_settings: dict | None = None) -> dict:
    """The report dict from measured statistics (``stats.collect`` with its energy count) and the network."""
    if stats.synaptic_ops is None:
        raise ValueError("these statistics were collected without the energy count; use collect(..., energy=True)")
    ev = stats.evaluation
    steps = ev.steps
    layers = []
    for name, layer in stats.layers.items():
        layers.append({
            "name": name, "label": layer.label, "target": layer.target, "neurons": layer.neurons,
            "spikes_per_sample": [layer.spikes_per_sample(t) for t in steps],
            "firing_rate": [layer.firing_rate(t) for t in steps],
            "relative_error": [layer.relative_error[t] for t in steps],
            "mean_abs_error": [layer.mean_abs_error[t] for t in steps],
        })
    energy = energy_mod.energy_section(snn, steps, stats.synaptic_ops, stats.synaptic_nodes, ev.n,
                                       [ev.snn_accuracy[t] for t in steps], ev.ann_accuracy,
                                       labels=layer_names(snn), model=energy_model, events=stats.neuron_events)
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"conversion": dict(snn.settings), **(run_settings or {})},
        "versions": versions(),
        "network": {"input_shape": list(snn.input_shape), "neuron_layers": len(snn.neurons),
                    "neurons_per_sample": sum(layer.neurons for layer in stats.layers.values()),
                    "parameters": sum(p.numel() for p in snn.graph_module.parameters()),
                    "conversion_log": list(snn.conversion_log)},
        "samples": ev.n,
        "steps": steps,
        "accuracy": {"ann": ev.ann_accuracy, "snn": [ev.snn_accuracy[t] for t in steps],
                     "agreement": [ev.agreement[t] for t in steps]},
        "layers": layers,
        "energy": energy,
    }


def make_report(snn: SpikingNetwork, data, T: Steps, *, batch_size: int = 256, limit: int | None = None,
                progress: bool | None = None, energy_model=energy_mod.EnergyModel(),
                run_settings: dict | None = None, distributed: bool | None = None) -> dict:
    """Measure ``snn`` on labelled ``data`` at each T and return the report dict.

    ``distributed`` as in ``signgd.evaluate`` (default: on inside an initialized torch.distributed
    group): each rank measures its shard, every rank returns the same report of all the samples, and
    ``settings.processes`` records how many ranks shared the work."""
    steps = parse_steps(T)
    stats = collect(snn, data, steps, batch_size=batch_size, limit=limit, progress=progress,
                    distributed=distributed)
    settings = {"T": steps, "batch_size": batch_size, "limit": limit,
                "processes": _dist.world_size() if _dist.active(distributed) else 1, **(run_settings or {})}
    return build_report(snn, stats, energy_model=energy_model, run_settings=settings)
