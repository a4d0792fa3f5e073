"""A network run for a while as another configuration, then restored: how the energy tuner scores candidates
that differ in their dynamics (sparse or graded: the same neurons and starts, other steps) or in what their
neurons are divided by (``convert(scale=...)``) without converting again."""
from __future__ import annotations

from contextlib import contextmanager


def set_scales(snn, scales: dict) -> None:
    """Divide every normalized neuron of ``snn`` by ``scales[name]`` (per element) from now on."""
    for name, mod in snn.neurons.items():
        if mod.normalized:
            mod.set_scale(scales[name])


@contextmanager
def run_as(snn, dynamics: str, scales: dict | None = None):
    """Within: ``snn`` simulated and counted as ``dynamics``, and (``scales``: ``{neuron: per-element scale}``) its
    normalized neurons divided by those; its own dynamics and scales restored after, whatever happens."""
    own_dynamics = snn.settings["dynamics"]
    own_scales = {name: mod.scale for name, mod in snn.neurons.items() if mod.normalized} if scales is not None \
        else {}
    snn.settings["dynamics"] = dynamics
    try:
        if scales is not None:
            set_scales(snn, scales)
        yield snn
    finally:
        snn.settings["dynamics"] = own_dynamics
        if own_scales:
            set_scales(snn, own_scales)
