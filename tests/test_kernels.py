"""The fused signGD scan (signgd.kernels): the C (and, on a GPU, triton) backends against the torch
reference, bit for bit; backend selection; the fallback when no compiler is there."""
import logging
import os

import pytest
import torch

from signgd import kernels
from signgd.kernels import KernelUnavailableError, signgd_scan

HAVE_C = "c" in kernels.available_backends()
HAVE_COMPILER = kernels._find_compiler() is not None
# Skipped only where there is no C compiler: with one, a C backend that fails to build (or fails
# its self-check) makes these tests fail.
needs_c = pytest.mark.skipif(not HAVE_COMPILER, reason="no C compiler")
needs_triton = pytest.mark.skipif(not torch.cuda.is_available() or "triton" not in kernels.available_backends(),
                                  reason="needs a CUDA device and triton")

# [Tc, B, C, H, W]; N = 2 * 8 * 13 * 11 = 2288 elements spans two of the C kernel's blocks (2048),
# the second one partial.
SHAPE = (2, 8, 13, 11)


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv("SIGNGD_KERNEL", raising=False)


def _targets(kind, Tc, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "zeros":       # inactive ReLUs: y == target == 0 at the first step, ties after
        return torch.zeros((Tc, *shape), dtype=dtype)
    if kind == "ties":        # multiples of 1/8 with dyadic etas: y lands on the target exactly, often
        return (torch.randint(-6, 7, (Tc, *shape), generator=g).to(dtype) / 8).relu_() - 0.25
    if kind == "relu":
        return torch.randn((Tc, *shape), generator=g, dtype=dtype).relu_() * 0.7
    if kind == "special":     # NaN never fires (y >= nan is false); +-inf always / never fire
        t = torch.randn((Tc, *shape), generator=g, dtype=dtype)
        t.view(-1)[::7] = float("nan")
        t.view(-1)[1::11] = float("inf")
        t.view(-1)[2::13] = float("-inf")
        return t
    raise ValueError(kind)


def _etas(Tc, kind="dyadic"):
    if kind == "dyadic":
        return torch.tensor([2.0 ** -(1 + t % 4) for t in range(Tc)], dtype=torch.float64)
    return 0.37 * torch.pow(torch.tensor(0.93, dtype=torch.float64), torch.arange(Tc, dtype=torch.float64))


def _scales(kind, shape, dtype):
    g = torch.Generator().manual_seed(1)
    if kind == "none":
        return None
    if kind == "float":
        return 0.7310585786300049
    if kind == "0d":
        return torch.tensor(1.3183, dtype=torch.float64)
    if kind == "per_element":  # S[1:], the normalization scale without the batch dimension
        return torch.rand(shape[1:], generator=g, dtype=dtype) + 0.5
    if kind == "channel":      # [C, 1, 1]: broadcast inside each sample
        return torch.rand((shape[1], 1, 1), generator=g, dtype=dtype) + 0.5
    if kind == "full":
        return torch.rand(shape, generator=g, dtype=dtype) + 0.5
    raise ValueError(kind)


def _run(backend, target, y, etas, scale, with_spikes=True, spikes0=None):
    spikes = None
    if with_spikes:
        spikes = torch.zeros(target.shape[0], dtype=torch.float64) if spikes0 is None else spikes0.clone()
        spikes = spikes.to(target.device)
    t_before, y_before = target.clone(), y.clone()
    out, y_final = signgd_scan(target, y, etas, scale, spikes, backend=backend)
    assert _bits(target, t_before) and _bits(y, y_before), "inputs were modified"
    return out, y_final, spikes


def _bits(a, b):
    """Bit-identical (NaN payloads and the sign of zero included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(ints), b.contiguous().view(ints))
    return torch.equal(a, b)


def _assert_same(a, b):
    for x, z in zip(a, b):
        if x is None:
            assert z is None
            continue
        assert x.dtype == z.dtype and x.shape == z.shape
        assert _bits(x, z), f"max |diff| = {(x.double() - z.double()).abs().max().item()}"


# ---------------------------------------------------------------------------------------------
# The reference itself
# ---------------------------------------------------------------------------------------------

def test_torch_reference_by_hand():
    # y0 = 0 and target 0: a tie fires (y >= target), so the first step goes down.
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.5]])
    etas = torch.tensor([0.5, 0.25, 0.25, 0.5])
    spikes = torch.zeros(4, dtype=torch.float64)
    out, y = signgd_scan(target, torch.zeros(2), etas, 2.0, spikes, backend="torch")
    # element 0: 0>=0 fire -> -0.5; -0.5<0 -> -0.25; -0.25<0 -> 0.0; 0>=-1 fire -> -0.5
    # element 1: 0<1 -> 0.5; 0.5<1 -> 0.75; 0.75<1 -> 1.0; 1.0>=0.5 fire -> 0.5
    assert torch.equal(out, 2.0 * torch.tensor([[-0.5, 0.5], [-0.25, 0.75], [0.0, 1.0], [-0.5, 0.5]]))
    assert torch.equal(y, torch.tensor([-0.5, 0.5]))
    assert spikes.tolist() == [1.0, 0.0, 0.0, 2.0]


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
        target = _targets(kind, Tc, SHAPE, dtype)
        for eta_kind in ("dyadic", "decay"):
            etas = _etas(Tc, eta_kind)
            sc = _scales(scale, SHAPE, dtype)
            y0 = torch.zeros(SHAPE, dtype=dtype)
            ref = _run("torch", target, y0, etas, sc)
            got = _run("c", target, y0, etas, sc)
            _assert_same(got, ref)
            assert ref[2].sum() > 0  # the case has spikes


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_equals_torch_special_values_and_odd_shapes(dtype):
    etas = _etas(9, "decay").to(dtype)                      # etas already in the tensor's dtype
    for shape in [(1,), (5,), (3, 2047), (4, 1, 2049), (2, 3, 4, 5)]:
        target = _targets("special", 9, shape, dtype)
        y0 = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
        _assert_same(_run("c", target, y0, etas, None), _run("torch", target, y0, etas, None))


@needs_c
def test_c_spikes_are_added_and_non_contiguous_inputs_work():
    dtype = torch.float32
    base = _targets("ties", 5, (12, 3, 8, 7), dtype)        # [B, T, C, W, H]
    target = base.permute(1, 0, 2, 4, 3)[::2]               # [6, 5, 3, 7, 8], no stride is 1 in order
    assert not target.is_contiguous()
    y0 = torch.linspace(-1, 1, 5 * 3 * 7 * 8).reshape(5, 8, 3, 7).permute(0, 2, 3, 1)  # non-contiguous
    scale = (torch.rand(8, 7, 3) + 0.5).permute(2, 1, 0)                                # [3, 7, 8] too
    spikes0 = torch.arange(6, dtype=torch.float64) * 1000
    etas = _etas(6)
    ref = _run("torch", target, y0, etas, scale, spikes0=spikes0)
    got = _run("c", target, y0, etas, scale, spikes0=spikes0)
    _assert_same(got, ref)
    assert torch.all(got[2] >= spikes0) and not torch.equal(got[2], spikes0)
    assert got[0].is_contiguous()


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_chunked_calls_equal_one_call(dtype):
    Tc = 64
    target = _targets("ties", Tc, SHAPE, dtype, seed=5)
    etas = _etas(Tc, "decay")
    scale = _scales("per_element", SHAPE, dtype)
    y0 = torch.zeros(SHAPE, dtype=dtype)
    whole = _run("c", target, y0, etas, scale)
    y, outs, spikes = y0, [], torch.zeros(Tc, dtype=torch.float64)
    for a, b in [(0, 5), (5, 6), (6, 26), (26, 64)]:
        out, y = signgd_scan(target[a:b], y, etas[a:b], scale, spikes[a:b], backend="c")
        outs.append(out)
    _assert_same((torch.cat(outs), y, spikes), whole)
    _assert_same(whole, _run("torch", target, y0, etas, scale))


@needs_c
def test_c_scale_that_changes_the_dtype():
    # a float64 per-element scale promotes float32 outputs to float64, as torch does
    target = _targets("relu", 7, SHAPE, torch.float32)
    y0 = torch.zeros(SHAPE)
    scale = _scales("per_element", SHAPE, torch.float64)
    got = _run("c", target, y0, _etas(7), scale)
    assert got[0].dtype == torch.float64
    _assert_same(got, _run("torch", target, y0, _etas(7), scale))


@pytest.mark.parametrize("backend", ["torch", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("scale", ["none", "per_element", "promoting"])
def test_out_buffer(backend, scale):
    target = _targets("ties", 7, SHAPE, torch.float32)
    y0 = torch.zeros(SHAPE)
    sc = _scales("per_element", SHAPE, torch.float64 if scale == "promoting" else torch.float32)
    sc = None if scale == "none" else sc
    ref = _run("torch", target, y0, _etas(7), sc)
    buf = torch.full(target.shape, 7.0, dtype=ref[0].dtype)
    spikes = torch.zeros(7, dtype=torch.float64)
    out, y = signgd_scan(target, y0, _etas(7), sc, spikes, backend=backend, out=buf)
    assert out is buf
    _assert_same((out, y, spikes), ref)
    with pytest.raises(ValueError, match="out must be"):
        signgd_scan(target, y0, _etas(7), sc, backend=backend, out=buf[:, :1])
    with pytest.raises(ValueError, match="out must be"):
        signgd_scan(target, y0, _etas(7), sc, backend=backend, out=buf.to(torch.float16))


_BACKENDS_HERE = ["torch", pytest.param("c", marks=needs_c), pytest.param("triton", marks=needs_triton)]


@pytest.mark.parametrize("backend", _BACKENDS_HERE)
@pytest.mark.parametrize("scale", ["none", "per_element", "promoting"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_out_may_be_the_target_itself(backend, scale, dtype):
    """Scanning in place (out=target) overwrites the targets with exactly the outputs a separate
    buffer would get; a buffer that only partly overlaps the target is refused."""
    dev = "cuda" if backend == "triton" else "cpu"
    for Tc, shape in [(7, SHAPE), (16, (8, 73, 137))]:  # the second is large enough for threads
        target = _targets("ties", Tc, shape, dtype).to(dev)
        y0 = torch.zeros(shape, dtype=dtype, device=dev)
        sc = None if scale == "none" else _scales(
            "per_element", shape, torch.float64 if scale == "promoting" else dtype).to(dev)
        ref = _run("torch", target, y0, _etas(Tc).to(dev), sc)
        if ref[0].dtype != dtype:  # a promoting scale: the result cannot live in the target
            with pytest.raises(ValueError, match="out must be"):
                signgd_scan(target, y0, _etas(Tc), sc, backend=backend, out=target)
            continue
        buf = target.clone()
        spikes = torch.zeros(Tc, dtype=torch.float64, device=dev)
        out, y = signgd_scan(buf, y0, _etas(Tc).to(dev), sc, spikes, backend=backend, out=buf)
        assert out is buf
        _assert_same((out, y, spikes), ref)
    n = target.numel()
    shifted = torch.empty(n + 1, dtype=dtype, device=dev)
    with pytest.raises(ValueError, match="overlaps"):
        signgd_scan(shifted[1:].view(target.shape), y0, _etas(Tc).to(dev), None, backend=backend,
                    out=shifted[:n].view(target.shape))


@pytest.mark.parametrize("backend", ["torch", pytest.param("c", marks=needs_c)])
def test_inplace_updates_y(backend):
    target = _targets("ties", 7, SHAPE, torch.float64)
    ref = _run("torch", target, torch.zeros(SHAPE, dtype=torch.float64), _etas(7), 2.0)
    for y0 in (torch.zeros(SHAPE, dtype=torch.float64),                     # contiguous
               torch.zeros(SHAPE[::-1], dtype=torch.float64).permute(3, 2, 1, 0)):  # not
        spikes = torch.zeros(7, dtype=torch.float64)
        out, y = signgd_scan(target, y0, _etas(7), 2.0, spikes, backend=backend, inplace=True)
        assert y is y0
        _assert_same((out, y, spikes), ref)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_multithreaded_equals_one_thread_and_torch(dtype):
    # 16 x 80008 element-steps: enough work for the kernel to use several threads and blocks
    shape = (8, 73, 137)
    target = _targets("ties", 16, shape, dtype)
    y0 = torch.zeros(shape, dtype=dtype)
    scale = _scales("per_element", shape, dtype)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run("c", target, y0, _etas(16), scale)
    finally:
        torch.set_num_threads(n)
    many = _run("c", target, y0, _etas(16), scale)
    _assert_same(many, one)
    _assert_same(many, _run("torch", target, y0, _etas(16), scale))


@needs_c
def test_c_empty_inputs():
    for Tc, shape in [(0, (3, 4)), (5, (0, 4))]:
        target = torch.zeros((Tc, *shape))
        y0 = torch.zeros(shape)
        _assert_same(_run("c", target, y0, torch.ones(Tc), 2.0), _run("torch", target, y0, torch.ones(Tc), 2.0))


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
    target = _targets("ties", 7, SHAPE, torch.float32)
    _assert_same(_run(None, target, torch.zeros(SHAPE), _etas(7), 2.0),
                 _run("torch", target, torch.zeros(SHAPE), _etas(7), 2.0))


def test_auto_uses_torch_where_no_kernel_fits():
    assert kernels.resolve_backend(torch.zeros(3, 4, dtype=torch.float16)) == "torch"
    assert kernels.resolve_backend(torch.zeros(3, 4, dtype=torch.bfloat16)) == "torch"
    x = torch.zeros(3, 4, requires_grad=True)
    assert kernels.resolve_backend(x) == "torch"
    with torch.no_grad():
        assert kernels.resolve_backend(x) == ("c" if HAVE_C else "torch")
    # float16 runs (on torch) and gives torch's numbers
    target = _targets("ties", 5, (3, 4), torch.float16)
    _assert_same(_run(None, target, torch.zeros(3, 4, dtype=torch.float16), _etas(5), None),
                 _run("torch", target, torch.zeros(3, 4, dtype=torch.float16), _etas(5), None))


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
# Building the library; the fallback without a compiler
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_kernels(monkeypatch, tmp_path):
    """A fresh cache directory and no loaded library; restored afterwards."""
    monkeypatch.setenv("SIGNGD_CACHE", str(tmp_path / "cache"))
    kernels._reset()
    yield tmp_path / "cache"
    monkeypatch.undo()
    kernels._reset()


def test_without_a_compiler_auto_falls_back_to_torch(fresh_kernels, monkeypatch, caplog):
    monkeypatch.setattr(kernels, "COMPILER", "/nonexistent/signgd-test-cc")
    with caplog.at_level(logging.INFO, logger="signgd"):
        assert "c" not in kernels.available_backends()
        info = kernels.kernel_info()
        assert info["auto_cpu"] == "torch" and not info["c"]["available"]
        assert "signgd-test-cc" in info["c"]["reason"]
        target = _targets("ties", 7, SHAPE, torch.float32)
        y0 = torch.zeros(SHAPE)
        assert kernels.resolve_backend(target) == "torch"
        got = _run(None, target, y0, _etas(7), 1.5)
        got2 = _run(None, target, y0, _etas(7), 1.5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "C backend is unavailable" in r.message]
    assert len(warnings) == 1
    # the right numbers: those of the reference loop, written out here
    y, outs, spikes = y0, [], []
    etas = _etas(7)
    for t in range(7):
        s = y >= target[t]
        y = torch.where(s, y - etas[t], y + etas[t])
        outs.append(y * 1.5)
        spikes.append(float(s.sum()))
    _assert_same(got, (torch.stack(outs), y, torch.tensor(spikes, dtype=torch.float64)))
    _assert_same(got2, got)
    with pytest.raises(KernelUnavailableError, match="C library is unavailable"):
        signgd_scan(target, y0, _etas(7), backend="c")
    assert not list(fresh_kernels.glob("*.so"))


@needs_c
def test_library_is_built_once_into_the_cache(fresh_kernels):
    info = kernels.kernel_info()["c"]
    assert info["available"], info["reason"]
    path = info["path"]
    assert os.path.dirname(path) == str(fresh_kernels)
    assert [p.name for p in fresh_kernels.iterdir()] == [os.path.basename(path)]  # no temporary left
    mtime = os.stat(path).st_mtime_ns
    kernels._reset()
    assert kernels.kernel_info()["c"]["path"] == path
    assert os.stat(path).st_mtime_ns == mtime                                     # reused, not rebuilt
    target = _targets("ties", 7, SHAPE, torch.float64)
    _assert_same(_run("c", target, torch.zeros(SHAPE, dtype=torch.float64), _etas(7), None),
                 _run("torch", target, torch.zeros(SHAPE, dtype=torch.float64), _etas(7), None))


# ---------------------------------------------------------------------------------------------
# triton (CUDA): runs where a GPU is present
# ---------------------------------------------------------------------------------------------

@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", ["none", "float", "0d", "per_element", "channel"])
def test_triton_equals_torch(dtype, scale):
    dev = "cuda"
    shape = (3, 8, 13, 11)
    for Tc in (1, 7, 64):
        for kind in ("ties", "zeros", "relu", "special"):
            target = _targets(kind, Tc, shape, dtype).to(dev)
            etas = _etas(Tc, "decay").to(dev)
            sc = _scales(scale, shape, dtype)
            sc = sc.to(dev) if isinstance(sc, torch.Tensor) and sc.dim() > 0 else sc
            y0 = torch.zeros(shape, dtype=dtype, device=dev)
            assert kernels.resolve_backend(target, y0, sc) == "triton"
            _assert_same(_run("triton", target, y0, etas, sc), _run("torch", target, y0, etas, sc))
    # chunked == whole, non-contiguous input
    target = _targets("ties", 40, (9, 5, 300), dtype).to(dev).transpose(2, 3)
    y0 = torch.zeros(target.shape[1:], dtype=dtype, device=dev)
    whole = _run("triton", target, y0, _etas(40).to(dev), None)
    y, outs, spikes = y0, [], torch.zeros(40, dtype=torch.float64, device=dev)
    for a, b in [(0, 3), (3, 40)]:
        out, y = signgd_scan(target[a:b], y, _etas(40).to(dev)[a:b], None, spikes[a:b], backend="triton")
        outs.append(out)
    _assert_same((torch.cat(outs), y, spikes), whole)
    _assert_same(whole, _run("torch", target, y0, _etas(40).to(dev), None))
    # out= and inplace=
    buf = torch.empty(target.shape, dtype=dtype, device=dev)
    y1 = y0.clone()
    spikes = torch.zeros(40, dtype=torch.float64, device=dev)
    out, y = signgd_scan(target, y1, _etas(40).to(dev), None, spikes, backend="triton", out=buf, inplace=True)
    assert out is buf and y is y1
    _assert_same((out, y, spikes), whole)


# ---------------------------------------------------------------------------------------------
# Targets computed inside the scan (pre="square" / "mul", normalize=True)
# ---------------------------------------------------------------------------------------------

def _factors(kind, Tc, shape, dtype):
    """Factors for pre="mul": one per row (the C kernel's case) or broadcast in other ways."""
    g = torch.Generator().manual_seed(2)
    if kind == "row":        # one per [.., C]: LayerNorm over the last two dims
        fshape = (Tc, *shape[:-2], 1, 1)
    elif kind == "last":     # one per [..., W]: LayerNorm over the last dim
        fshape = (Tc, *shape[:-1], 1)
    elif kind == "scalar_per_step":
        fshape = (Tc,) + (1,) * len(shape)
    elif kind == "other":    # broadcasts along the batch: torch computes the product first
        fshape = (Tc, 1, *shape[1:])
    else:
        raise ValueError(kind)
    return torch.rand(fshape, generator=g, dtype=dtype) + 0.5


def _prologue_reference(target, pre, factor, scale):
    """The target by plain torch ops, as the neuron computed it before the fused prologue."""
    t = torch.square(target) if pre == "square" else target * factor if pre == "mul" else target.clone()
    return t if scale is None else t / scale


@pytest.mark.parametrize("backend", ["torch", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pre,factor_kind", [(None, None), ("square", None), ("mul", "row"), ("mul", "last"),
                                             ("mul", "scalar_per_step"), ("mul", "other")])
@pytest.mark.parametrize("scale", ["none", "float", "per_element", "channel", "full"])
def test_prologue_equals_the_target_computed_first(backend, dtype, pre, factor_kind, scale):
    Tc = 7
    target = torch.randn((Tc, *SHAPE), generator=torch.Generator().manual_seed(4), dtype=dtype)
    factor = _factors(factor_kind, Tc, SHAPE, dtype) if pre == "mul" else None
    sc = _scales(scale, SHAPE, dtype)
    y0 = torch.zeros(SHAPE, dtype=dtype)
    ref = _run("torch", _prologue_reference(target, pre, factor, sc), y0, _etas(Tc, "decay"), sc)
    spikes = torch.zeros(Tc, dtype=torch.float64)
    before = target.clone()
    out, y = signgd_scan(target, y0, _etas(Tc, "decay"), sc, spikes, backend=backend, pre=pre, factor=factor,
                         normalize=True)
    assert _bits(target, before)
    _assert_same((out, y, spikes), ref)
    assert ref[2].sum() > 0
    # in place: the output written over the input
    if ref[0].dtype == dtype:
        buf = target.clone()
        out, y = signgd_scan(buf, y0, _etas(Tc, "decay"), sc, None, backend=backend, pre=pre, factor=factor,
                             normalize=True, out=buf)
        assert out is buf
        _assert_same((out, y), ref[:2])


@needs_c
def test_prologue_runs_in_the_c_kernel_and_threads_agree():
    # [Tc, B, tokens, channels] with a factor per token row: the LayerNorm case, large enough for
    # several threads and blocks whose boundaries fall inside rows
    Tc, shape = 9, (6, 50, 70)
    g = torch.Generator().manual_seed(0)
    c = torch.randn((Tc, *shape), generator=g)
    factor = torch.rand((Tc, 6, 50, 1), generator=g) + 0.5
    scale = torch.rand(shape[1:], generator=g) + 0.5
    assert kernels._c_prologue(c, c[0], scale, "mul", factor, True) is not None
    assert kernels._c_prologue(c, c[0], scale, "mul", factor[:, :1], True) is None  # broadcast along B
    ref = _run("torch", _prologue_reference(c, "mul", factor, scale), torch.zeros(shape), _etas(Tc), scale)
    n = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            spikes = torch.zeros(Tc, dtype=torch.float64)
            got = signgd_scan(c, torch.zeros(shape), _etas(Tc), scale, spikes, backend="c", pre="mul",
                              factor=factor, normalize=True)
            _assert_same((*got, spikes), ref)
    finally:
        torch.set_num_threads(n)


def test_prologue_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown pre"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(2), pre="cube")
    with pytest.raises(ValueError, match="factor"):
        signgd_scan(torch.zeros(2, 3), torch.zeros(3), torch.ones(2), pre="mul")
    # normalize without a scale: nothing to divide by
    out, _ = signgd_scan(torch.ones(2, 3), torch.zeros(3), torch.ones(2), normalize=True)
    assert torch.equal(out, torch.tensor([[1.0] * 3, [0.0] * 3]))
