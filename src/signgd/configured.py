"""A network run for a while as another configuration, then restored: how the energy tuner scores candidates
that differ in their dynamics (sparse or graded: the same neurons and starts, other steps), in what their
neurons are divided by (``convert(scale=...)``) or in their layer windows (``convert(window=...)``) without
converting again."""
from __future__ import annotations

from contextlib import contextmanager


def set_scales(snn, scales: dict) -> None:
    """Divide every normalized neuron of ``snn`` by ``scales[name]`` (per element) from now on."""
    for name, mod in snn.neurons.items():
        if mod.normalized:
            mod.set_scale(scales[name])


@contextmanager
def run_as(snn, dynamics: str, scales: dict | None = None, window: int | None = None):
    """Within: ``snn`` simulated and counted as ``dynamics``, (``scales``: ``{neuron: per-element scale}``) its
    normalized neurons divided by those, and with layer windows of ``window`` steps (``convert(window=)``) or none;
    its own dynamics, scales and windows restored after, whatever happens."""
    own_dynamics, own_window = snn.settings["dynamics"], snn.settings.get("window")
    own_scales = {name: mod.scale for name, mod in snn.neurons.items() if mod.normalized} if scales is not None \
        else {}
    snn.settings["dynamics"] = dynamics
    set_window(snn, window)
    try:
        if scales is not None:
            set_scales(snn, scales)
        yield snn
    finally:
        snn.settings["dynamics"] = own_dynamics
        set_window(snn, own_window)
        if own_scales:
            set_scales(snn, own_scales)


def set_window(snn, window: int | None) -> None:
    """Record ``window`` as the network's layer windows (None: none), as ``convert(window=)`` would."""
    if window is None:
        snn.settings.pop("window", None)
    else:
        snn.settings["window"] = window
