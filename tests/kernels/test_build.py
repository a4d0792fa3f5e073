"""Building the C library (signgd.kernels.build): built once into the cache and reused; without a
compiler, auto falls back to torch with one warning."""
import logging
import os

import pytest
import torch
from scan_cases import (
    SHAPE,
    assert_same,
    make_etas,
    make_targets,
    needs_c,
    run_scan,
)

from signgd import kernels
from signgd.kernels import KernelUnavailableError, build, signgd_scan
from signgd.kernels import c as c_backend


@pytest.fixture
def fresh_kernels(monkeypatch, tmp_path):
    """A fresh cache directory and no loaded library; restored afterwards."""
    monkeypatch.setenv("SIGNGD_CACHE", str(tmp_path / "cache"))
    c_backend.reset()
    yield tmp_path / "cache"
    monkeypatch.undo()
    c_backend.reset()


def test_without_a_compiler_auto_falls_back_to_torch(fresh_kernels, monkeypatch, caplog):
    monkeypatch.setattr(build, "COMPILER", "/nonexistent/signgd-test-cc")
    with caplog.at_level(logging.INFO, logger="signgd"):
        assert "c" not in kernels.available_backends()
        info = kernels.kernel_info()
        assert info["auto_cpu"] == "torch" and not info["c"]["available"]
        assert "signgd-test-cc" in info["c"]["reason"]
        target = make_targets("ties", 7, SHAPE, torch.float32)
        y0 = torch.zeros(SHAPE)
        assert kernels.resolve_backend(target) == "torch"
        got = run_scan(None, target, y0, make_etas(7), 1.5)
        got2 = run_scan(None, target, y0, make_etas(7), 1.5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "C backend is unavailable" in r.message]
    assert len(warnings) == 1
    # the right numbers: those of the reference loop, written out here
    y, outs, spikes = y0, [], []
    etas = make_etas(7)
    for t in range(7):
        s = y >= target[t]
        y = torch.where(s, y - etas[t], y + etas[t])
        outs.append(y * 1.5)
        spikes.append(float(s.sum()))
    assert_same(got, (torch.stack(outs), y, torch.tensor(spikes, dtype=torch.float64)))
    assert_same(got2, got)
    with pytest.raises(KernelUnavailableError, match="C library is unavailable"):
        signgd_scan(target, y0, make_etas(7), backend="c")
    assert not list(fresh_kernels.glob("*.so"))


@needs_c
def test_library_is_built_once_into_the_cache(fresh_kernels):
    info = kernels.kernel_info()["c"]
    assert info["available"], info["reason"]
    path = info["path"]
    assert os.path.dirname(path) == str(fresh_kernels)
    assert [p.name for p in fresh_kernels.iterdir()] == [os.path.basename(path)]  # no temporary left
    mtime = os.stat(path).st_mtime_ns
    c_backend.reset()
    assert kernels.kernel_info()["c"]["path"] == path
    assert os.stat(path).st_mtime_ns == mtime                                     # reused, not rebuilt
    target = make_targets("ties", 7, SHAPE, torch.float64)
    assert_same(run_scan("c", target, torch.zeros(SHAPE, dtype=torch.float64), make_etas(7), None),
                 run_scan("torch", target, torch.zeros(SHAPE, dtype=torch.float64), make_etas(7), None))
