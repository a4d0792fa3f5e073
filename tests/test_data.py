"""Tests for signgd.data: real data, no network."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from signgd import data

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")

_TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
               np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz)."""
    array = np.asarray(array)
    code = _TYPE_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress if compress is not None else path.name.endswith(".gz"):
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def write_fashion(directory: Path, n: int, split: str = "train", gz: bool = True, seed: int = 0) -> Path:
    """Tiny Fashion-MNIST-shaped IDX files with the real names; ``n`` marks the copy."""
    rng = np.random.default_rng(seed)
    image_stem, label_stem = data._FASHION_FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(directory / (image_stem + suffix), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(directory / (label_stem + suffix), (np.arange(n) % 10).astype(np.uint8))
    return directory


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No env var and a nonexistent system dir, so results don't depend on the machine."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIR", tmp_path / "no-system-dir")
    return tmp_path


# ----------------------------------------------------------------- digits


@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_digits_shapes_dtype_range(split):
    ds = data.digits(split)
    x, y = ds.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape[1:] == (1, 8, 8) and x.shape[0] == y.shape[0] == len(ds)
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() == 1.0
    assert set(y.tolist()) == set(range(10))


def test_digits_split_sizes_and_partition():
    train, test, full = (data.digits(s) for s in ("train", "test", "all"))
    assert len(full) == 1797
    assert len(train) + len(test) == len(full)
    assert len(test) == pytest.approx(0.25 * len(full), abs=1)

    def rows(ds):
        x, y = ds.tensors
        return Counter((xi.numpy().tobytes(), int(yi)) for xi, yi in zip(x, y))

    # train + test is exactly "all" as a multiset: disjoint and complete.
    assert rows(train) + rows(test) == rows(full)


def test_digits_deterministic_and_seeded():
    a, b = data.digits("train"), data.digits("train")
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    c = data.digits("train", seed=1)
    assert not torch.equal(a.tensors[0], c.tensors[0])


def test_digits_stratified():
    full = torch.bincount(data.digits("all").tensors[1], minlength=10).double()
    for split, frac in (("train", 0.75), ("test", 0.25)):
        counts = torch.bincount(data.digits(split).tensors[1], minlength=10).double()
        assert (counts > 0).all(), f"a class is missing from {split}"
        assert torch.allclose(counts, full * frac, atol=1.0)


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="train.*test.*all"):
        data.digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.5)


# ----------------------------------------------------------------- read_idx


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_uint8_raw_and_gzip(tmp_path, name):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    t = data.read_idx(write_idx(tmp_path / name, arr))
    assert t.dtype == torch.uint8 and t.shape == (2, 3, 4)
    assert np.array_equal(t.numpy(), arr)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_float32(tmp_path, compress):
    arr = np.linspace(-1.5, 2.5, 12, dtype=np.float32).reshape(3, 4)
    t = data.read_idx(write_idx(tmp_path / "f.idx", arr, compress=compress))
    assert t.dtype == torch.float32 and np.array_equal(t.numpy(), arr)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float64])
def test_read_idx_other_dtypes(tmp_path, dtype):
    arr = np.array([-3, 0, 7, 100], dtype=dtype)
    t = data.read_idx(write_idx(tmp_path / "v.idx", arr))
    assert np.array_equal(t.numpy(), arr) and t.numpy().dtype == np.dtype(dtype)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    arr = np.arange(5, dtype=np.uint8)
    assert torch.equal(data.read_idx(write_idx(tmp_path / "plain", arr, compress=True)),
                       torch.from_numpy(arr))
    assert torch.equal(data.read_idx(write_idx(tmp_path / "fake.gz", arr, compress=False)),
                       torch.from_numpy(arr))


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated(tmp_path, compress):
    path = write_idx(tmp_path / "t.idx", np.zeros((4, 5), np.uint8), compress=False)
    raw = path.read_bytes()[:-3]
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(ValueError, match=r"t\.idx.*truncated"):
        data.read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.zeros((40, 50), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"t\.gz.*gzip"):
        data.read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "h.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 5))
    with pytest.raises(ValueError, match=r"h\.idx.*header"):
        data.read_idx(path)


def test_read_idx_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "x.idx", np.zeros(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="trailing"):
        data.read_idx(path)


def test_read_idx_bad_magic(tmp_path):
    path = write_idx(tmp_path / "m.idx", np.zeros(4, np.uint8))
    raw = bytearray(path.read_bytes())
    raw[0] = 0x42
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"m\.idx.*magic"):
        data.read_idx(path)


def test_read_idx_bad_dtype_code(tmp_path):
    path = tmp_path / "d.idx"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\0")
    with pytest.raises(ValueError, match=r"d\.idx.*dtype code 0x07"):
        data.read_idx(path)


# ----------------------------------------------------------------- Fashion-MNIST (real files)


@pytest.fixture(scope="module")
def real_dir():
    if not (REAL_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"Fashion-MNIST not found in {REAL_DIR}; install it with "
            "`apt-get install dataset-fashion-mnist`"
        )
    return REAL_DIR


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_real(real_dir, split, n):
    ds = data.fashion_mnist(split, root=real_dir)
    x, y = ds.tensors
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(y.unique().tolist()) == set(range(10))
    assert torch.bincount(y).tolist() == [n // 10] * 10


def test_fashion_mnist_real_cached(real_dir):
    a = data.fashion_mnist("test", root=real_dir)
    b = data.load("fashion_mnist", "test", root=real_dir)
    assert a.tensors[0] is b.tensors[0] and a.tensors[1] is b.tensors[1]


def test_fashion_mnist_default_finds_system_dir(real_dir, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.SYSTEM_DIR == REAL_DIR
    assert len(data.fashion_mnist("test")) == 10000


# ----------------------------------------------------------------- search order


def test_root_beats_env(isolated, monkeypatch):
    root = write_fashion(isolated / "root", n=3)
    env = write_fashion(isolated / "env", n=5)
    monkeypatch.setenv(data.ENV_VAR, str(env))
    assert len(data.fashion_mnist(root=root)) == 3
    assert len(data.fashion_mnist()) == 5


def test_env_beats_system_dir(isolated, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIR", write_fashion(isolated / "sys", n=7))
    assert len(data.fashion_mnist()) == 7
    monkeypatch.setenv(data.ENV_VAR, str(write_fashion(isolated / "env", n=4)))
    assert len(data.fashion_mnist()) == 4


def test_uncompressed_files_and_test_split(isolated):
    root = write_fashion(isolated / "plain", n=6, split="test", gz=False)
    x, y = data.fashion_mnist("test", root=root).tensors
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y.tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(data.DatasetNotFoundError):
        data.fashion_mnist("train", root=root)


@pytest.mark.parametrize("via_env", [False, True])
def test_torchvision_raw_layout(isolated, monkeypatch, via_env):
    base = isolated / "tv"
    write_fashion(base / "FashionMNIST" / "raw", n=2, gz=False)
    if via_env:
        monkeypatch.setenv(data.ENV_VAR, str(base))
        assert len(data.fashion_mnist()) == 2
    else:
        assert len(data.fashion_mnist(root=base)) == 2


def test_half_present_directory_is_skipped(isolated, monkeypatch):
    half = isolated / "half"
    write_fashion(half, n=3)
    (half / "train-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv(data.ENV_VAR, str(write_fashion(isolated / "env", n=5)))
    assert len(data.fashion_mnist(root=half)) == 5


def test_mismatched_counts_rejected(isolated):
    root = isolated / "bad"
    write_fashion(root, n=4)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="4 images.*3 labels"):
        data.fashion_mnist(root=root)


def test_not_found_message(isolated, monkeypatch):
    root, env = isolated / "r", isolated / "e"
    monkeypatch.setenv(data.ENV_VAR, str(env))
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.fashion_mnist("test", root=root)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    for d in (root, root / "FashionMNIST" / "raw", env, env / "FashionMNIST" / "raw",
              isolated / "no-system-dir"):
        assert str(d) in msg
    for fix in ("apt-get install dataset-fashion-mnist", "SIGNGD_DATA=/path", "root=", "download=True"):
        assert fix in msg
    assert "t10k-images-idx3-ubyte" in msg


def test_download_failure_raises_not_found(isolated, monkeypatch):
    tv = pytest.importorskip("torchvision.datasets")

    def offline(*args, **kwargs):
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(tv, "FashionMNIST", offline)
    with pytest.raises(data.DatasetNotFoundError, match="no network in tests") as info:
        data.fashion_mnist(root=isolated / "dl", download=True)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_download_goes_to_cache_and_is_read(isolated, monkeypatch):
    """The download path, with torchvision's fetch replaced by a local writer."""
    tv = pytest.importorskip("torchvision.datasets")
    calls = []

    def fake(root, train, download):
        calls.append((root, train, download))
        write_fashion(Path(root) / "FashionMNIST" / "raw", n=8, split="train" if train else "test")

    monkeypatch.setattr(tv, "FashionMNIST", fake)
    monkeypatch.setenv("HOME", str(isolated / "home"))
    with pytest.raises(data.DatasetNotFoundError):
        data.fashion_mnist("test")  # download=False never downloads
    assert calls == []
    assert len(data.fashion_mnist("test", download=True)) == 8
    cache = isolated / "home" / ".cache" / "signgd"
    assert calls == [(str(cache), False, True)]


# ----------------------------------------------------------------- dispatch


def test_load_dispatch():
    assert torch.equal(data.load("digits", "test").tensors[1], data.digits("test").tensors[1])
    assert len(data.load("DIGITS", "all")) == 1797
    with pytest.raises(ValueError, match="digits.*fashion-mnist"):
        data.load("cifar10")


def test_load_forwards_kwargs(isolated):
    root = write_fashion(isolated / "k", n=3)
    assert len(data.load("fashion-mnist", root=root)) == 3
    assert len(data.load("digits", "test", test_fraction=0.5)) == pytest.approx(1797 / 2, abs=1)


def test_class_names():
    assert data.class_names("digits") == [str(i) for i in range(10)]
    names = data.class_names("fashion_mnist")
    assert names == data.class_names("fashion-mnist")
    assert len(names) == 10 and names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    names.append("mutated")
    assert len(data.class_names("fashion-mnist")) == 10
    with pytest.raises(ValueError, match="known"):
        data.class_names("imagenet")
