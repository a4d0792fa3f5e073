"""Reports of a converted network: accuracy, per-layer statistics and energy per T, as JSON and plots.

``make_report(snn, data, T)`` measures (one ANN and one SNN run per batch), ``write_report(report, dir)``
writes ``report.json`` and the PNG plots, ``read_report(dir)`` and ``draw_plots(report, dir)`` redraw
them, ``summary(report)`` prints the tables.
"""
from .build import build_report, make_report, versions
from .energy import EnergyModel, EnergyProbe, ann_costs, dense_synaptic_ops, neuron_work
from .files import ReportError, read_report, summary, write_json, write_report
from .names import layer_names
from .plots import PLOTS, draw_plots
from .stats import RunStatistics, collect

__all__ = ["make_report", "build_report", "write_report", "read_report", "draw_plots", "summary", "versions",
           "EnergyModel", "EnergyProbe", "ann_costs", "dense_synaptic_ops", "neuron_work", "collect",
           "RunStatistics", "ReportError", "PLOTS", "write_json",
           "layer_names"]
