"""signgd.kernels' public entry point: every backend gives the torch reference's numbers through
signgd_scan's options (out=, inplace=, pre=, normalize=); backend selection and its errors."""
import os

import pytest
import torch
from scan_cases import (
    _BACKENDS_HERE,
    HAVE_C,
    SHAPE,
    assert_same,
    bits,
    make_etas,
    make_factors,
    make_scales,
    make_targets,
    needs_c,
    prologue_by_hand,
    run_scan,
)

from signgd import kernels
from signgd.kernels import KernelUnavailableError, signgd_scan

# ---------------------------------------------------------------------------------------------
# signgd_scan's buffers: out=, out=target, inplace=
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("scale", ["none", "per_element", "promoting"])
def test_out_buffer(backend, scale):
    target = make_targets("ties", 7, SHAPE, torch.float32)
    y0 = torch.zeros(SHAPE)
    sc = make_scales("per_element", SHAPE, torch.float64 if scale == "promoting" else torch.float32)
    sc = None if scale == "none" else sc
    ref = run_scan("torch", target, y0, make_etas(7), sc)
    buf = torch.full(target.shape, 7.0, dtype=ref[0].dtype)
    spikes = torch.zeros(7, dtype=torch.float64)
    out, y = signgd_scan(target, y0, make_etas(7), sc, spikes, backend=backend, out=buf)
    assert out is buf
    assert_same((out, y, spikes), ref)
    with pytest.raises(ValueError, match="out must be"):
        signgd_scan(target, y0, make_etas(7), sc, backend=backend, out=buf[:, :1])
    with pytest.raises(ValueError, match="out must be"):
        signgd_scan(target, y0, make_etas(7), sc, backend=backend, out=buf.to(torch.float16))


@pytest.mark.parametrize("backend", _BACKENDS_HERE)
@pytest.mark.parametrize("scale", ["none", "per_element", "promoting"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_out_may_be_the_target_itself(backend, scale, dtype):
    """Scanning in place (out=target) overwrites the targets with exactly the outputs a separate
    buffer would get; a buffer that only partly overlaps the target is refused."""
    dev = "cuda" if backend == "triton" else "cpu"
    for Tc, shape in [(7, SHAPE), (16, (8, 73, 137))]:  # the second is large enough for threads
        target = make_targets("ties", Tc, shape, dtype).to(dev)
        y0 = torch.zeros(shape, dtype=dtype, device=dev)
        sc = None if scale == "none" else make_scales(
            "per_element", shape, torch.float64 if scale == "promoting" else dtype).to(dev)
        ref = run_scan("torch", target, y0, make_etas(Tc).to(dev), sc)
        if ref[0].dtype != dtype:  # a promoting scale: the result cannot live in the target
            with pytest.raises(ValueError, match="out must be"):
                signgd_scan(target, y0, make_etas(Tc), sc, backend=backend, out=target)
            continue
        buf = target.clone()
        spikes = torch.zeros(Tc, dtype=torch.float64, device=dev)
        out, y = signgd_scan(buf, y0, make_etas(Tc).to(dev), sc, spikes, backend=backend, out=buf)
        assert out is buf
        assert_same((out, y, spikes), ref)
    n = target.numel()
    shifted = torch.empty(n + 1, dtype=dtype, device=dev)
    with pytest.raises(ValueError, match="overlaps"):
        signgd_scan(shifted[1:].view(target.shape), y0, make_etas(Tc).to(dev), None, backend=backend,
                    out=shifted[:n].view(target.shape))


@pytest.mark.parametrize("backend", ["torch", pytest.param("c", marks=needs_c)])
def test_inplace_updates_y(backend):
    target = make_targets("ties", 7, SHAPE, torch.float64)
    ref = run_scan("torch", target, torch.zeros(SHAPE, dtype=torch.float64), make_etas(7), 2.0)
    for y0 in (torch.zeros(SHAPE, dtype=torch.float64),                     # contiguous
               torch.zeros(SHAPE[::-1], dtype=torch.float64).permute(3, 2, 1, 0)):  # not
        spikes = torch.zeros(7, dtype=torch.float64)
        out, y = signgd_scan(target, y0, make_etas(7), 2.0, spikes, backend=backend, inplace=True)
        assert y is y0
        assert_same((out, y, spikes), ref)


# ---------------------------------------------------------------------------------------------
# Choosing a backend
# ---------------------------------------------------------------------------------------------

@needs_c
def test_auto_picks_c_on_cpu(monkeypatch):
    x = torch.zeros(3, 4)
    assert kernels.resolve_backend(x) == "c"
    assert kernels.resolve_backend(x.double()) == "c"
    assert kernels.kernel_info()["auto_cpu"] == "c"
    assert os.path.exists(kernels.kernel_info()["c"]["path"])
    monkeypatch.setenv("SIGNGD_KERNEL", "auto")
    assert kernels.resolve_backend(x) == "c"
    target = make_targets("ties", 7, SHAPE, torch.float32)
    assert_same(run_scan(None, target, torch.zeros(SHAPE), make_etas(7), 2.0),
                 run_scan("torch", target, torch.zeros(SHAPE), make_etas(7), 2.0))


def test_auto_uses_torch_where_no_kernel_fits():
    assert kernels.resolve_backend(torch.zeros(3, 4, dtype=torch.float16)) == "torch"
    assert kernels.resolve_backend(torch.zeros(3, 4, dtype=torch.bfloat16)) == "torch"
    x = torch.zeros(3, 4, requires_grad=True)
    assert kernels.resolve_backend(x) == "torch"
    with torch.no_grad():
        assert kernels.resolve_backend(x) == ("c" if HAVE_C else "torch")
    # float16 runs (on torch) and gives torch's numbers
    target = make_targets("ties", 5, (3, 4), torch.float16)
    assert_same(run_scan(None, target, torch.zeros(3, 4, dtype=torch.float16), make_etas(5), None),
                 run_scan("torch", target, torch.zeros(3, 4, dtype=torch.float16), make_etas(5), None))


def test_env_var_forces_torch(monkeypatch):
    monkeypatch.setenv("SIGNGD_KERNEL", "torch")
    assert kernels.resolve_backend(torch.zeros(3, 4)) == "torch"
    monkeypatch.setenv("SIGNGD_KERNEL", "fortran")
    with pytest.raises(ValueError, match="SIGNGD_KERNEL"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(2))


def test_explicit_backend_that_cannot_run_raises(monkeypatch):
    half = torch.zeros(2, 3, dtype=torch.float16)
    with pytest.raises(KernelUnavailableError, match="needs a CPU float32/float64 tensor; got cpu float16"):
        signgd_scan(half, half[0], torch.ones(2), backend="c")
    with pytest.raises(KernelUnavailableError, match="'triton' backend needs a CUDA"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(2), backend="triton")
    with pytest.raises(KernelUnavailableError, match="must have target's device and dtype"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3, dtype=torch.float64), torch.ones(2), backend="c")
    monkeypatch.setenv("SIGNGD_KERNEL", "c")
    with pytest.raises(KernelUnavailableError, match=r"\$SIGNGD_KERNEL='c'"):
        signgd_scan(half, half[0], torch.ones(2))
    with pytest.raises(ValueError, match="unknown backend"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(2), backend="cuda")
    with pytest.raises(ValueError, match="etas"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(3), backend="torch")
    with pytest.raises(ValueError, match="y has shape"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(4), torch.ones(2), backend="torch")


# ---------------------------------------------------------------------------------------------
# Targets computed inside the scan (pre="square" / "mul", normalize=True)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pre,factor_kind", [(None, None), ("square", None), ("mul", "row"), ("mul", "last"),
                                             ("mul", "scalar_per_step"), ("mul", "other")])
@pytest.mark.parametrize("scale", ["none", "float", "per_element", "channel", "full"])
def test_prologue_equals_the_target_computed_first(backend, dtype, pre, factor_kind, scale):
    Tc = 7
    target = torch.randn((Tc, *SHAPE), generator=torch.Generator().manual_seed(4), dtype=dtype)
    factor = make_factors(factor_kind, Tc, SHAPE, dtype) if pre == "mul" else None
    sc = make_scales(scale, SHAPE, dtype)
    y0 = torch.zeros(SHAPE, dtype=dtype)
    ref = run_scan("torch", prologue_by_hand(target, pre, factor, sc), y0, make_etas(Tc, "decay"), sc)
    spikes = torch.zeros(Tc, dtype=torch.float64)
    before = target.clone()
    out, y = signgd_scan(target, y0, make_etas(Tc, "decay"), sc, spikes, backend=backend, pre=pre, factor=factor,
                         normalize=True)
    assert bits(target, before)
    assert_same((out, y, spikes), ref)
    assert ref[2].sum() > 0
    # in place: the output written over the input
    if ref[0].dtype == dtype:
        buf = target.clone()
        out, y = signgd_scan(buf, y0, make_etas(Tc, "decay"), sc, None, backend=backend, pre=pre, factor=factor,
                             normalize=True, out=buf)
        assert out is buf
        assert_same((out, y), ref[:2])


def test_prologue_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown pre"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(2), pre="cube")
    with pytest.raises(ValueError, match="factor"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(2), pre="mul")
    # normalize without a scale: nothing to divide by
    out, _ = signgd_scan(torch.ones(2, 3), torch.zeros(3), torch.ones(2), normalize=True)
    assert torch.equal(out, torch.tensor([[1.0] * 3, [0.0] * 3]))
