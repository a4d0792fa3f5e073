"""The input preprocessing a converted network was calibrated with, recorded in ``snn.settings``.

``snn.settings["preprocessing"]`` is a dict ``{"resize", "crop", "mean", "std"}`` (the ``signgd``
command's ``--resize/--crop/--mean/--std``: shorter side resized bilinearly without antialiasing,
centre crop, per-channel normalization of an image tensor in [0, 1]; a key is None when that step
is not done), or None when it is not known. ``signgd evaluate`` applies the recorded steps.

From Python, ``convert(model, data)`` records the steps when ``data`` carries them (through a
DataLoader's or a ``Subset``'s ``dataset``): a ``preprocessing`` dict (the command's datasets), or a
torchvision ``transform`` (v1 or v2, a ``Compose`` or one transform) made only of ``ToTensor``-like
conversions to a float image in [0, 1] and ``Resize`` (one size, bilinear, ``antialias=False``) /
``CenterCrop`` (square) / ``Normalize`` steps, the ones the command can redo exactly, in that order.
Any other transform, or none, records None: signgd does not guess.
"""
from __future__ import annotations

import numbers

__all__ = ["KEYS", "from_data", "from_transform", "checked"]

KEYS = ("resize", "crop", "mean", "std")
#: Conversions to a float image tensor in [0, 1] (with ``ToDtype``/``ConvertImageDtype`` to a float dtype).
_TO_TENSOR = ("ToTensor", "ToImage", "PILToTensor", "ToDtype", "ConvertImageDtype")
_ORDER = {"Resize": 0, "CenterCrop": 1, "Normalize": 2}


def checked(preprocessing) -> dict | None:
    """A preprocessing dict with every key (missing ones None), values checked; None stays None."""
    if preprocessing is None:
        return None
    if not isinstance(preprocessing, dict) or set(preprocessing) - set(KEYS):
        raise ValueError(f"preprocessing must be None or a dict with keys {', '.join(KEYS)}; got {preprocessing!r}")
    out = dict.fromkeys(KEYS)
    for key in ("resize", "crop"):
        v = preprocessing.get(key)
        if v is not None and not (isinstance(v, numbers.Integral) and v > 0):
            raise ValueError(f"preprocessing {key} must be a positive number of pixels or None, got {v!r}")
        out[key] = None if v is None else int(v)
    for key in ("mean", "std"):
        v = preprocessing.get(key)
        if v is not None:
            values = [v] if isinstance(v, numbers.Real) else list(v)
            if not values or not all(isinstance(a, numbers.Real) for a in values):
                raise ValueError(f"preprocessing {key} must be a list of numbers (one per channel) or None, got {v!r}")
            out[key] = [float(a) for a in values]
    return out


def from_data(data) -> dict | None:
    """The preprocessing ``data`` (a Dataset, a DataLoader, a ``Subset``) carries, or None."""
    seen = set()
    while data is not None and id(data) not in seen:
        seen.add(id(data))
        recorded = getattr(data, "preprocessing", None)
        if isinstance(recorded, dict):
            return checked(recorded)
        transform = getattr(data, "transform", None)
        if transform is not None:
            return from_transform(transform)
        data = getattr(data, "dataset", None)
    return None


def from_transform(transform) -> dict | None:
    """The steps of a torchvision transform as a preprocessing dict, or None when it holds anything
    the command cannot redo exactly (see the module's docstring)."""
    steps = list(getattr(transform, "transforms", [transform])) if _torchvision(transform) else [transform]
    out, last = dict.fromkeys(KEYS), -1
    for step in steps:
        if not _torchvision(step):
            return None
        name = type(step).__name__
        if name in _TO_TENSOR:
            if name in ("ToDtype", "ConvertImageDtype") and not _float_scaled(step):
                return None
            continue
        if name not in _ORDER or _ORDER[name] <= last:
            return None
        last = _ORDER[name]
        if name == "Resize":
            size = step.size if isinstance(step.size, int) else list(step.size)
            size = size[0] if isinstance(size, list) and len(size) == 1 else size
            interpolation = getattr(step.interpolation, "value", step.interpolation)
            if not (isinstance(size, int) and interpolation == "bilinear" and step.max_size is None
                    and step.antialias is False):
                return None  # a fixed (h, w), antialiasing (always on PIL images): not what the command does
            out["resize"] = size
        elif name == "CenterCrop":
            h, w = (step.size, step.size) if isinstance(step.size, int) else tuple(step.size)
            if h != w:
                return None
            out["crop"] = int(h)
        else:
            out["mean"], out["std"] = [float(v) for v in step.mean], [float(v) for v in step.std]
    return out


def _torchvision(obj) -> bool:
    return type(obj).__module__.startswith("torchvision.transforms")


def _float_scaled(step) -> bool:
    dtype = step.dtype
    if isinstance(dtype, dict):  # v2.ToDtype({tv_tensors.Image: torch.float32, ...})
        dtype = next(iter(dtype.values()), None)
    return getattr(dtype, "is_floating_point", False) and getattr(step, "scale", True)
