"""The C backend (signgd.kernels.c): bit for bit equal to the torch reference, in every case the
simulator uses, on any number of threads."""
import pytest
import torch
from scan_cases import (
    SHAPE,
    assert_same,
    make_etas,
    make_scales,
    make_targets,
    needs_c,
    prologue_by_hand,
    run_scan,
)

from signgd import kernels
from signgd.kernels import c as c_backend
from signgd.kernels import signgd_scan

# ---------------------------------------------------------------------------------------------
# C == torch, bit for bit
# ---------------------------------------------------------------------------------------------

@needs_c
def test_c_backend_builds_where_a_compiler_is_present():
    info = kernels.kernel_info()["c"]
    assert info["available"], info["reason"]
    assert "c" in kernels.available_backends()


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("Tc", [1, 7, 64])
@pytest.mark.parametrize("scale", ["none", "float", "0d", "per_element", "channel", "full"])
def test_c_equals_torch(dtype, Tc, scale):
    for kind in ("ties", "zeros", "relu"):
        target = make_targets(kind, Tc, SHAPE, dtype)
        for eta_kind in ("dyadic", "decay"):
            etas = make_etas(Tc, eta_kind)
            sc = make_scales(scale, SHAPE, dtype)
            y0 = torch.zeros(SHAPE, dtype=dtype)
            ref = run_scan("torch", target, y0, etas, sc)
            got = run_scan("c", target, y0, etas, sc)
            assert_same(got, ref)
            assert ref[2].sum() > 0  # the case has spikes


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_equals_torch_special_values_and_odd_shapes(dtype):
    etas = make_etas(9, "decay").to(dtype)                      # etas already in the tensor's dtype
    for shape in [(1,), (5,), (3, 2047), (4, 1, 2049), (2, 3, 4, 5)]:
        target = make_targets("special", 9, shape, dtype)
        y0 = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
        assert_same(run_scan("c", target, y0, etas, None), run_scan("torch", target, y0, etas, None))


@needs_c
def test_c_spikes_are_added_and_non_contiguous_inputs_work():
    dtype = torch.float32
    base = make_targets("ties", 5, (12, 3, 8, 7), dtype)        # [B, T, C, W, H]
    target = base.permute(1, 0, 2, 4, 3)[::2]               # [6, 5, 3, 7, 8], no stride is 1 in order
    assert not target.is_contiguous()
    y0 = torch.linspace(-1, 1, 5 * 3 * 7 * 8).reshape(5, 8, 3, 7).permute(0, 2, 3, 1)  # non-contiguous
    scale = (torch.rand(8, 7, 3) + 0.5).permute(2, 1, 0)                                # [3, 7, 8] too
    spikes0 = torch.arange(6, dtype=torch.float64) * 1000
    etas = make_etas(6)
    ref = run_scan("torch", target, y0, etas, scale, spikes0=spikes0)
    got = run_scan("c", target, y0, etas, scale, spikes0=spikes0)
    assert_same(got, ref)
    assert torch.all(got[2] >= spikes0) and not torch.equal(got[2], spikes0)
    assert got[0].is_contiguous()


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_chunked_calls_equal_one_call(dtype):
    Tc = 64
    target = make_targets("ties", Tc, SHAPE, dtype, seed=5)
    etas = make_etas(Tc, "decay")
    scale = make_scales("per_element", SHAPE, dtype)
    y0 = torch.zeros(SHAPE, dtype=dtype)
    whole = run_scan("c", target, y0, etas, scale)
    y, outs, spikes = y0, [], torch.zeros(Tc, dtype=torch.float64)
    for a, b in [(0, 5), (5, 6), (6, 26), (26, 64)]:
        out, y = signgd_scan(target[a:b], y, etas[a:b], scale, spikes[a:b], backend="c")
        outs.append(out)
    assert_same((torch.cat(outs), y, spikes), whole)
    assert_same(whole, run_scan("torch", target, y0, etas, scale))


@needs_c
def test_c_scale_that_changes_the_dtype():
    # a float64 per-element scale promotes float32 outputs to float64, as torch does
    target = make_targets("relu", 7, SHAPE, torch.float32)
    y0 = torch.zeros(SHAPE)
    scale = make_scales("per_element", SHAPE, torch.float64)
    got = run_scan("c", target, y0, make_etas(7), scale)
    assert got[0].dtype == torch.float64
    assert_same(got, run_scan("torch", target, y0, make_etas(7), scale))


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_multithreaded_equals_one_thread_and_torch(dtype):
    # 16 x 80008 element-steps: enough work for the kernel to use several threads and blocks
    shape = (8, 73, 137)
    target = make_targets("ties", 16, shape, dtype)
    y0 = torch.zeros(shape, dtype=dtype)
    scale = make_scales("per_element", shape, dtype)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_scan("c", target, y0, make_etas(16), scale)
    finally:
        torch.set_num_threads(n)
    many = run_scan("c", target, y0, make_etas(16), scale)
    assert_same(many, one)
    assert_same(many, run_scan("torch", target, y0, make_etas(16), scale))


@needs_c
def test_c_empty_inputs():
    for Tc, shape in [(0, (3, 4)), (5, (0, 4))]:
        target = torch.zeros((Tc, *shape))
        y0 = torch.zeros(shape)
        assert_same(run_scan("c", target, y0, torch.ones(Tc), 2.0), run_scan("torch", target, y0, torch.ones(Tc), 2.0))


# ---------------------------------------------------------------------------------------------
# Targets computed inside the C kernel's pass (pre="mul", normalize=True)
# ---------------------------------------------------------------------------------------------

@needs_c
def test_prologue_runs_in_the_c_kernel_and_threads_agree():
    # [Tc, B, tokens, channels] with a factor per token row: the LayerNorm case, large enough for
    # several threads and blocks whose boundaries fall inside rows
    Tc, shape = 9, (6, 50, 70)
    g = torch.Generator().manual_seed(0)
    c = torch.randn((Tc, *shape), generator=g)
    factor = torch.rand((Tc, 6, 50, 1), generator=g) + 0.5
    scale = torch.rand(shape[1:], generator=g) + 0.5
    assert c_backend.c_prologue(c, c[0], scale, "mul", factor, True) is not None
    assert c_backend.c_prologue(c, c[0], scale, "mul", factor[:, :1], True) is None  # broadcast along B
    ref = run_scan("torch", prologue_by_hand(c, "mul", factor, scale), torch.zeros(shape), make_etas(Tc), scale)
    n = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            spikes = torch.zeros(Tc, dtype=torch.float64)
            got = signgd_scan(c, torch.zeros(shape), make_etas(Tc), scale, spikes, backend="c", pre="mul",
                              factor=factor, normalize=True)
            assert_same((*got, spikes), ref)
    finally:
        torch.set_num_threads(n)
