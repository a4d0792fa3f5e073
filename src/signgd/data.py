"""Small, offline-friendly datasets for converting and evaluating networks.

Two datasets are supported:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits. It ships inside
  scikit-learn, so it is always available, and tests and quick experiments
  never need the network.
* ``fashion-mnist``: 28x28 Fashion-MNIST, read straight from the IDX files.
  We parse IDX ourselves instead of going through torchvision so that the
  Debian package ``dataset-fashion-mnist`` (or any directory of IDX files)
  works without torchvision and without a download.

Every loader returns a :class:`torch.utils.data.TensorDataset` of
``(images float32 [N, 1, H, W] in [0, 1], labels int64 [N])``.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .errors import DatasetNotFoundError

__all__ = [
    "DatasetNotFoundError",
    "ENV_VAR",
    "SYSTEM_DIR",
    "class_names",
    "digits",
    "fashion_mnist",
    "load",
    "read_idx",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
#: A module-level constant (read at call time) so tests can patch it.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Environment variable naming a data directory (flat IDX files or a
#: torchvision-style root containing ``FashionMNIST/raw``).
ENV_VAR = "SIGNGD_DATA"

_SPLITS = ("train", "test")

#: File stems of the IDX files per split, as published and as torchvision
#: stores them; each may also carry a ``.gz`` suffix.
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}

# IDX type code -> big-endian numpy dtype (the format is always big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------


def digits(split: str = "train", test_fraction: float = 0.25, seed: int = 0) -> TensorDataset:
    """scikit-learn's 8x8 digits as ``[N, 1, 8, 8]`` float32 images in [0, 1].

    The split is stratified and seeded so every class appears in both halves
    and repeated calls (and separate processes) see exactly the same samples;
    ``split="all"`` returns the 1797 samples in their original order.
    """
    _check_split(split, ("train", "test", "all"))
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    # Pixel intensities are integers 0..16; divide so inputs match [0, 1].
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = y.astype(np.int64)
    if split != "all":
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=test_fraction, stratify=y, random_state=seed
        )
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))


# --------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Parse an IDX file (gzipped or raw) into a tensor of its native dtype.

    Compression is detected from the gzip magic bytes rather than the file
    name, because mirrors and torchvision store the same content under both
    ``.gz`` and extension-less names. The header is validated strictly so a
    truncated download fails loudly here instead of as a reshape error later.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc

    if len(raw) < 4:
        raise ValueError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (first two bytes must be zero)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")

    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header: need {header_len} bytes for {ndim} dims, "
            f"file has {len(raw)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX payload {what}: dims {dims} of {dtype.name} need "
            f"{expected} bytes, found {actual}"
        )

    # astype to native byte order copies, giving a writable array torch accepts.
    arr = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return torch.from_numpy(arr.astype(dtype.newbyteorder("=")))


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------


def fashion_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
) -> TensorDataset:
    """Fashion-MNIST as ``[N, 1, 28, 28]`` float32 images in [0, 1].

    Directories are searched in this order, explicit before implicit, so a
    caller's ``root`` always wins:

    1. ``root`` and its torchvision layout ``root/FashionMNIST/raw``;
    2. ``$SIGNGD_DATA`` and ``$SIGNGD_DATA/FashionMNIST/raw``;
    3. :data:`SYSTEM_DIR` (Debian's ``dataset-fashion-mnist``).

    Each directory may hold the ``.gz`` or the uncompressed files. Only when
    nothing is found and ``download=True`` is torchvision asked to fetch the
    data (into ``root``, else ``$SIGNGD_DATA``, else ``~/.cache/signgd``).
    Parsed tensors are cached per process, so repeated calls are cheap; the
    returned tensors are shared between calls and must not be modified in place.
    """
    _check_split(split, _SPLITS)
    searched = _search_dirs(root)
    found = _find_pair(split, searched)

    if found is None and download:
        dl_root = _download_root(root)
        error: Exception | None = None
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(root=str(dl_root), train=(split == "train"), download=True)
        except Exception as exc:  # network, disk, missing torchvision, ...
            error = exc
        raw_dir = dl_root / "FashionMNIST" / "raw"
        if raw_dir not in searched:
            searched.append(raw_dir)
        found = _find_pair(split, [raw_dir])
        if found is None:
            raise DatasetNotFoundError(_not_found_message(split, searched, error)) from error

    if found is None:
        raise DatasetNotFoundError(_not_found_message(split, searched))

    images, labels = found
    x, y = _load_pair(*_cache_key(images), *_cache_key(labels))
    return TensorDataset(x, y)


def _search_dirs(root: str | os.PathLike | None) -> list[Path]:
    """Candidate directories in priority order, without duplicates."""
    bases = [Path(root).expanduser()] if root is not None else []
    env = os.environ.get(ENV_VAR)
    if env:
        bases.append(Path(env).expanduser())
    dirs: list[Path] = []
    for base in bases:
        dirs += [base, base / "FashionMNIST" / "raw"]
    dirs.append(Path(SYSTEM_DIR))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _find_pair(split: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    """First directory holding both the images and labels of ``split``.

    Both files must come from the same directory so images and labels never
    get mixed across copies of the dataset.
    """
    image_stem, label_stem = _FASHION_FILES[split]
    for d in dirs:
        images, labels = _find_file(d, image_stem), _find_file(d, label_stem)
        if images is not None and labels is not None:
            return images, labels
    return None


def _download_root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "signgd"


def _not_found_message(split: str, searched: list[Path], error: Exception | None = None) -> str:
    image_stem, label_stem = _FASHION_FILES[split]
    lines = [
        f"Fashion-MNIST '{split}' files ({image_stem}[.gz], {label_stem}[.gz]) not found.",
        "Searched:",
        *(f"  - {d}" for d in searched),
    ]
    if error is not None:
        lines.append(f"Download failed: {type(error).__name__}: {error}")
    lines += [
        "Fix one of:",
        "  - apt-get install dataset-fashion-mnist",
        f"  - set {ENV_VAR}=/path to a directory holding the IDX files",
        "  - pass root=/path to a directory holding the IDX files",
        "  - pass download=True (needs torchvision and internet access)",
    ]
    return "\n".join(lines)


def _cache_key(path: Path) -> tuple[str, int, int]:
    # Size and mtime in the key so a file replaced on disk is re-read.
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _load_pair(
    images_path: str, _images_mtime: int, _images_size: int,
    labels_path: str, _labels_mtime: int, _labels_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected 3-D images [N, H, W], got shape {tuple(images.shape)}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected 1-D labels [N], got shape {tuple(labels.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels"
        )
    x = images.unsqueeze(1).to(torch.float32).div_(255.0)
    return x, labels.to(torch.int64)


# --------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------

_LOADERS = {"digits": digits, "fashion-mnist": fashion_mnist}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_LOADERS)}")
    return key


def load(name: str, split: str = "train", **kw) -> TensorDataset:
    """Load a dataset by name (``"digits"`` or ``"fashion-mnist"``/``"fashion_mnist"``)."""
    return _LOADERS[_canonical(name)](split=split, **kw)


def class_names(name: str) -> list[str]:
    """The 10 human-readable class names of a dataset, indexed by label."""
    return list(_CLASS_NAMES[_canonical(name)])


def _check_split(split: str, valid: tuple[str, ...]) -> None:
    if split not in valid:
        raise ValueError(f"split must be one of {', '.join(map(repr, valid))}; got {split!r}")
