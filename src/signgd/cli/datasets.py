"""Turn a DATA argument into labelled calibration and test datasets.

DATA is one of ``digits`` (scikit-learn's 8x8 digits, always available), ``fashion-mnist[:PATH]``
(IDX files; without PATH the usual search of ``signgd.data.fashion_mnist``), ``cifar10:PATH``,
``cifar100:PATH`` (torchvision's python-pickle layout under PATH, never downloaded) or
``imagefolder:PATH`` (class sub-folders; ``PATH/train`` and ``PATH/val`` or ``PATH/test`` when
present, else PATH for both). Images are scaled to [0, 1], then optionally resized
(``--resize``), centre-cropped (``--crop``) and normalized (``--mean``/``--std``), as the model was
trained, with torchvision's ``transforms.v2``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .. import data as signgd_data
from ..batches import sample_dataset
from ..preprocessing import KEYS
from .usage import UsageError

__all__ = ["ImageOptions", "load_split", "calibration_subset", "parse_floats", "stored_options"]


@dataclass(frozen=True)
class ImageOptions:
    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def settings(self) -> dict:
        """The options as the report's settings and ``snn.settings["preprocessing"]`` record them."""
        return {"resize": self.resize, "crop": self.crop, "mean": self.mean and list(self.mean),
                "std": self.std and list(self.std)}

    @classmethod
    def from_settings(cls, recorded: dict) -> "ImageOptions":
        """The options a ``settings()`` dict records (``signgd.preprocessing``)."""
        mean, std = recorded.get("mean"), recorded.get("std")
        return cls(recorded.get("resize"), recorded.get("crop"), mean and tuple(mean), std and tuple(std))


def stored_options(stored: dict | None, given: ImageOptions, override: bool) -> ImageOptions:
    """What ``evaluate`` applies: the preprocessing stored in the network (None: not known, so the
    options given); an option given that differs from it is refused, unless ``override`` (then the
    options given, alone)."""
    if override or stored is None:
        return given
    kept = ImageOptions.from_settings(stored)
    for key in KEYS:
        mine, theirs = getattr(given, key), getattr(kept, key)
        if mine is not None and mine != theirs:
            raise UsageError(f"--{key} {_show(mine)} differs from the network's stored preprocessing ({key} "
                             f"{_show(theirs)}); leave --{key} out to apply the stored one, or add "
                             f"--override-preprocessing to apply yours")
    return kept


def _show(value) -> str:
    if value is None:
        return "not set"
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, e.g. 0.485,0.456,0.406; got {text!r}") from None


def _tensor_transform(opts: ImageOptions):
    """The options as torchvision's ``transforms.v2`` pipeline for one image tensor [C, H, W] in [0, 1]:
    ``Resize`` (shorter side, bilinear, no antialiasing), ``CenterCrop``, ``Normalize``; a crop
    larger than the image or a mean/std that does not fit the channels is refused, not padded."""
    try:
        from torchvision.transforms import v2
    except ImportError:
        raise UsageError("--resize, --crop, --mean and --std need torchvision: pip install torchvision") from None
    steps = []
    if opts.resize:
        steps.append(v2.Resize(opts.resize, antialias=False))
    if opts.crop:
        steps += [_crop_fits(opts.crop), v2.CenterCrop(opts.crop)]
    if opts.mean is not None or opts.std is not None:
        steps += [_channels_fit(opts), _normalize(opts)]
    return v2.Compose(steps)


def _crop_fits(crop: int):
    def check(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if crop > min(h, w):
            raise UsageError(f"--crop {crop} is larger than the {h}x{w} images; use --resize first")
        return x
    return check


def _channels_fit(opts: ImageOptions):
    def check(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[0]
        m, s = len(opts.mean or (0.0,)), len(opts.std or (1.0,))
        if m not in (1, c) or s not in (1, c):
            raise UsageError(f"--mean/--std give {m}/{s} values for {c}-channel images")
        return x
    return check


def _normalize(opts: ImageOptions):
    from torchvision.transforms import v2
    mean, std = list(opts.mean or (0.0,)), list(opts.std or (1.0,))
    if len(mean) != len(std):  # v2.Normalize takes one value per channel for both, or one for both
        n = max(len(mean), len(std))
        mean, std = mean * (n // len(mean)), std * (n // len(std))
    return v2.Normalize(mean, std)


class _Mapped(Dataset):
    """A labelled dataset with a transform applied to each image; ``preprocessing`` records the
    options (``signgd.convert`` reads it)."""

    def __init__(self, base, transform, opts: ImageOptions):
        self.base, self.transform, self.preprocessing = base, transform, opts.settings()

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i][:2]
        if not isinstance(x, torch.Tensor):
            from torchvision.transforms.functional import to_tensor
            x = to_tensor(x)
        return self.transform(x.float()), y


def _torchvision_datasets():
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise UsageError("cifar10, cifar100 and imagefolder data need torchvision: pip install torchvision") from None
    return tvd


def _cifar(kind: str, path: str, split: str):
    tvd = _torchvision_datasets()
    cls = tvd.CIFAR10 if kind == "cifar10" else tvd.CIFAR100
    folder = cls.base_folder
    if not (Path(path) / folder).is_dir():
        raise UsageError(f"{kind} not found under {path} (expected {Path(path) / folder}); download it once with "
                         f"python -c \"import torchvision; "
                         f"torchvision.datasets.{cls.__name__}('{path}', download=True)\"")
    try:
        return cls(root=path, train=(split == "train"), download=False)
    except RuntimeError as exc:
        raise UsageError(f"{kind} under {path} is incomplete or corrupt ({exc}); download it again") from None


def _imagefolder(path: str, split: str):
    tvd = _torchvision_datasets()
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"image folder {root} not found; give a folder with one sub-folder per class")
    names = {"train": ["train"], "test": ["val", "test"]}[split]
    folder = next((root / n for n in names if (root / n).is_dir()), root)
    try:
        return tvd.ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as exc:
        raise UsageError(f"cannot read images from {folder} ({exc}); "
                         f"it needs one sub-folder of images per class") from None


def load_split(spec: str, split: str, opts: ImageOptions = ImageOptions()) -> Dataset:
    """The ``split`` ("train" for calibration, "test") of the dataset DATA names."""
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind == "digits" and not sep:
        base = signgd_data.digits(split)
    elif kind == "fashion-mnist":
        if path and not Path(path).is_dir():
            raise UsageError(f"Fashion-MNIST folder {path} not found; give fashion-mnist:PATH to a folder of the IDX "
                             f"files, or plain fashion-mnist to use the installed copy")
        try:
            base = signgd_data.fashion_mnist(split, root=path or None)
        except signgd_data.DatasetNotFoundError as exc:
            where = f" under {path}" if path else ""
            raise UsageError(f"Fashion-MNIST not found{where}: {str(exc).splitlines()[0]} Fix: "
                             f"apt-get install dataset-fashion-mnist, or give fashion-mnist:PATH to a folder "
                             f"of the IDX files") from None
    elif kind in ("cifar10", "cifar100") and path:
        base = _cifar(kind, path, split)
    elif kind == "imagefolder" and path:
        base = _imagefolder(path, split)
    else:
        raise UsageError(f"cannot read DATA {spec!r}; write digits, fashion-mnist[:PATH], cifar10:PATH, "
                         f"cifar100:PATH or imagefolder:PATH")
    if opts == ImageOptions() and isinstance(base, torch.utils.data.TensorDataset):
        return base
    return _Mapped(base, _tensor_transform(opts), opts)


def calibration_subset(dataset: Dataset, n: int, seed: int) -> Dataset:
    """``n`` samples drawn without replacement (seeded), or all of them when there are fewer."""
    if n < 1:
        raise UsageError(f"--calibration must be a positive number of samples, got {n}")
    return sample_dataset(dataset, n, seed)[0]
