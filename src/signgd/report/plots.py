"""The report's pictures, drawn from the report dict alone (so ``signgd report DIR`` can redraw them).

- ``accuracy.png``: SNN accuracy and agreement with the ANN against T, the ANN as a dotted line.
- ``layer_error.png``: each neuron layer's relative approximation error against T (log-log); up to
  12 layers in a qualitative palette with line styles and markers, the legend beside the axes; more
  coloured from the first layer (dark) to the last (light), with a colour bar.
- ``firing_rate.png``: each layer's firing rate at the largest T.
- ``energy.png``: the SNN's energy per sample against T, the ANN's as a dashed line.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ReportError
from .names import layer_label

__all__ = ["draw_plots", "PLOTS"]

PLOTS = ("accuracy.png", "layer_error.png", "firing_rate.png", "energy.png")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ReportError("drawing the plots needs matplotlib: pip install matplotlib "
                          "(a dependency of signgd: reinstall it); report.json is written without it") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _title(report: dict) -> str:
    conv = report["settings"]["conversion"]
    model = report["settings"].get("model", "")
    return f"{model + ': ' if model else ''}{conv['dynamics']} dynamics, {conv['encoding']} input"


def _log2_axis(ax, steps):
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps)
    ax.set_xticklabels([str(t) for t in steps])
    ax.minorticks_off()


def _accuracy(plt, report, path):
    steps, acc = report["steps"], report["accuracy"]
    fig, ax = plt.subplots(figsize=(6, 4))
    # The two curves often coincide: the agreement is drawn on top as large hollow squares on a dashed
    # line, so the SNN's filled dots show through; headroom above 100% keeps the ANN line off the border.
    ax.plot(steps, [100 * a for a in acc["snn"]], "o-", color="tab:blue", markersize=5, linewidth=2,
            label="SNN accuracy")
    ax.plot(steps, [100 * a for a in acc["agreement"]], "s--", color="tab:orange", markersize=9,
            markerfacecolor="none", markeredgewidth=1.5, linewidth=1.2, label="SNN agrees with ANN")
    ax.axhline(100 * acc["ann"], color="black", linestyle=":", linewidth=1.2,
               label=f"ANN accuracy ({100 * acc['ann']:.2f}%)")
    _log2_axis(ax, steps)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("% of test samples")
    ax.set_ylim(-3, 110)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"Accuracy vs T ({report['samples']} samples)\n{_title(report)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _layer_error(plt, report, path):
    steps, layers = report["steps"], report["layers"]
    few = len(layers) <= 12  # a legend (beside the axes) names each; more are told apart by a colour bar
    fig, ax = plt.subplots(figsize=(8.5, 4) if few else (6.5, 4))
    cmap = plt.get_cmap("viridis")
    palette = plt.get_cmap("tab10").colors
    for i, layer in enumerate(layers):
        errors = [e if e is not None and e > 0 else float("nan") for e in layer["relative_error"]]
        style = dict(color=palette[i % 10], linestyle=_LINES[i % len(_LINES)], marker=_MARKERS[i % len(_MARKERS)])
        if not few:
            style = dict(color=cmap(i / max(len(layers) - 1, 1) * 0.9), linestyle="-", marker="o")
        ax.plot(steps, errors, markersize=4, **style,
                label=f"{i + 1}. {layer_label(layer)}")
    _log2_axis(ax, steps)
    ax.set_yscale("log")
    ax.set_xlabel("time steps T")
    ax.set_ylabel("relative error of the estimate\n||y_T - ANN activation|| / ||ANN activation||")
    ax.set_title(f"Per-layer approximation error vs T\n{_title(report)}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if few:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    else:
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(1, len(layers)))
        fig.colorbar(sm, ax=ax, label="layer (input to output)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_LINES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _firing_rate(plt, report, path):
    layers, T = report["layers"], report["steps"][-1]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(layers) + 2), 4))
    names = [layer_label(layer) for layer in layers]
    rates = [layer["firing_rate"][-1] for layer in layers]
    colours = ["tab:blue" if layer["target"] == "relu" else "tab:orange" for layer in layers]
    ax.bar(range(len(layers)), rates, color=colours)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("neuron layer (input to output); orange: non-ReLU targets")
    ax.set_ylabel(f"firing rate at T={T}\n(spikes per neuron per step)")
    ax.set_ylim(0, 1)
    ax.set_title(f"Firing rate per layer\n{_title(report)}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _energy(plt, report, path):
    """Stacked bars per T: the SNN's energy split into synaptic ACs, synaptic MACs and neuron work,
    beside the ANN's (dashed)."""
    steps, en = report["steps"], report["energy"]
    snn, e_ac, e_mac = en["snn"], en["pj_per_ac"], en["pj_per_mac"]
    parts = [("synaptic ACs", [a * e_ac for a in snn["ac"]]), ("synaptic MACs", [m * e_mac for m in snn["mac"]]),
             ("neuron work", [a * e_ac + m * e_mac for a, m in zip(snn["neuron_ac"], snn["neuron_mac"])])]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = list(range(len(steps)))
    bottom = [0.0] * len(steps)
    for (label, values), color in zip(parts, ("#4c72b0", "#dd8452", "#55a868")):
        ax.bar(x, [v / 1e6 for v in values], bottom=bottom, color=color, label=label, width=0.7)
        bottom = [b + v / 1e6 for b, v in zip(bottom, values)]
    ax.axhline(en["ann_energy_pj"] / 1e6, color="black", linestyle="--", label="ANN (same rules)")
    ax.set_xticks(x)
    ax.set_xticklabels([str(t) for t in steps])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("energy per sample (uJ)")
    head = en.get("headline")
    note = (f"within 1 pt of the ANN from T={head['T']}: {head['energy_ratio_to_ann']:.2g}x its energy" if head
            else "never within 1 pt of the ANN")
    ax.set_title(f"Energy, E_AC = {e_ac} pJ, E_MAC = {e_mac} pJ; {note}\n{_title(report)}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_plots(report: dict, out_dir) -> list[Path]:
    """Draw the four plots into ``out_dir``; returns their paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in zip(PLOTS, (_accuracy, _layer_error, _firing_rate, _energy)):
        path = out / name
        draw(plt, report, path)
        paths.append(path)
    return paths
