"""The sparse neuron's scan (signgd.kernels.sparse_scan, dynamics="sparse", and its graded steps,
dynamics="graded"): the C kernel equals the torch reference (reference.sparse_scan_torch) bit for bit, and
sparse_scan runs it on CPU float tensors."""
import pytest
import torch
from scan_cases import SHAPE, assert_same, bits, make_etas, make_scales, make_targets, needs_c, prologue_by_hand

from signgd import kernels
from signgd.kernels import c as c_backend
from signgd.kernels import sparse_scan
from signgd.kernels.reference import gate, sparse_scan_torch


def make_thresholds(kind, etas):
    """``tolerance * eta_t`` in float64, as the simulator passes them (the scans round them to y's dtype)."""
    if kind == "half":      # dyadic etas on targets that are multiples of 1/8: d == thr happens often
        return etas * 0.5
    if kind == "zero":      # silent only where d == 0 exactly
        return torch.zeros_like(etas)
    if kind == "odd":       # a tolerance that is not a power of two: rounding to float32 matters
        return etas * 0.3711
    if kind == "negative":  # up and down both true: the spike counts count both, as torch's do
        return etas * -0.5
    if kind == "gated":     # convert(window=): infinite outside steps 3..6, where no finite gap fires
        return gate(etas * 0.5, 1, (3, 6))
    raise ValueError(kind)


def make_state(shape, dtype, seed=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-8, 9, shape, generator=g) / 16).to(dtype)  # on the targets' grid: ties


def run(scan, target, y0, etas, thresholds, scale, out_kind="new", spikes0=None, normalize=False, graded=False):
    """``(out, y, spikes)`` of one scan on copies of the inputs. ``scan``: "c" (c.sparse_scan_c, which
    must take the inputs), "torch" (the reference) or "auto" (sparse_scan). ``out_kind``: "new",
    "target" (out is target itself) or "buffer" (a separate buffer)."""
    target, y = target.clone(), y0.clone()
    before = target.clone()
    spikes = torch.zeros(target.shape[0], dtype=torch.float64) if spikes0 is None else spikes0.clone()
    out = target if out_kind == "target" else torch.full_like(target, 7.0) if out_kind == "buffer" else None
    if scan == "c":
        res = c_backend.sparse_scan_c(target, y, etas, thresholds, scale, spikes, out, normalize, graded)
        assert res is not None, "the C kernel declined these inputs"
    elif scan == "torch":
        if normalize and scale is not None:
            target = prologue_by_hand(target, None, None, scale)
        res = sparse_scan_torch(target, y, etas, thresholds, scale, spikes, out, graded)
    else:
        res = sparse_scan(target, y, etas, thresholds, scale, spikes, out, normalize=normalize, graded=graded)
    if out is not None:
        assert res is out
    elif scan != "torch" or not normalize:
        assert bits(target, before), "the target was modified"
    return res, y, spikes


# ---------------------------------------------------------------------------------------------
# C == torch, bit for bit
# ---------------------------------------------------------------------------------------------

@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", ["none", "float", "0d", "per_element", "channel", "full"])
@pytest.mark.parametrize("out_kind", ["new", "target", "buffer"])
@pytest.mark.parametrize("graded", [False, True])
def test_c_equals_torch(dtype, scale, out_kind, graded):
    Tc = 9
    sc = make_scales(scale, SHAPE, dtype)
    for kind in ("ties", "relu", "special"):
        target = make_targets(kind, Tc, SHAPE, dtype)
        y0 = make_state(SHAPE, dtype)
        for eta_kind, thr_kind in (("dyadic", "half"), ("dyadic", "zero"), ("decay", "odd"), ("decay", "negative"),
                                 ("dyadic", "gated")):
            etas = make_etas(Tc, eta_kind)
            thresholds = make_thresholds(thr_kind, etas)
            spikes0 = torch.arange(Tc, dtype=torch.float64) * 1000
            ref = run("torch", target, y0, etas, thresholds, sc, out_kind, spikes0, graded=graded)
            assert_same(run("c", target, y0, etas, thresholds, sc, out_kind, spikes0, graded=graded), ref)
            assert_same(run("auto", target, y0, etas, thresholds, sc, out_kind, spikes0, graded=graded), ref)
            assert 0 < float((ref[2] - spikes0).sum()) < Tc * target[0].numel() or thr_kind == "negative"


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_ties_at_the_threshold_are_silent_and_just_above_fires(dtype):
    # threshold 0.25, and d = target - y exact (y = 0, or Sterbenz): d == +-thr is silent, one ulp beyond fires
    def step(x, to):
        return float(torch.nextafter(torch.tensor(x, dtype=dtype), torch.tensor(to, dtype=dtype)))

    target = torch.tensor([[0.75, step(0.75, 2.0), -0.25, step(-0.25, -2.0), 0.5, float("nan"), float("inf"),
                            -float("inf")]], dtype=dtype)
    y0 = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5], dtype=dtype)
    etas, thr = torch.tensor([0.125], dtype=torch.float64), torch.tensor([0.25], dtype=torch.float64)
    for scan in ("torch", "c"):
        out, y, spikes = run(scan, target, y0, etas, thr, None)
        assert y.tolist() == [0.5, 0.625, 0.0, -0.125, 0.5, 0.5, 0.625, 0.375], scan
        assert torch.equal(out[0], y) and spikes.tolist() == [4.0], scan


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_threshold_zero_is_silent_only_on_the_target(dtype):
    tiny = float(torch.finfo(dtype).tiny)
    target = torch.tensor([[0.0, tiny, -tiny, -0.0], [0.25, 0.25, 0.25, 0.25]], dtype=dtype)
    etas = torch.tensor([0.25, 0.25], dtype=torch.float64)
    for scan in ("torch", "c"):
        out, y, spikes = run(scan, target, torch.zeros(4, dtype=dtype), etas, torch.zeros(2, dtype=torch.float64), 2.0)
        assert out[0].tolist() == [0.0, 0.5, -0.5, 0.0] and y.tolist() == [0.25, 0.25, 0.0, 0.25], scan
        assert spikes.tolist() == [2.0, 3.0], scan
    ref = run("torch", target, torch.zeros(4, dtype=dtype), etas, torch.zeros(2, dtype=torch.float64), 2.0)
    assert_same(run("c", target, torch.zeros(4, dtype=dtype), etas, torch.zeros(2, dtype=torch.float64), 2.0), ref)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_chunked_calls_equal_one_call(dtype):
    Tc = 40
    target = make_targets("ties", Tc, SHAPE, dtype, seed=5)
    etas = make_etas(Tc, "decay")
    thresholds = make_thresholds("odd", etas)
    scale = make_scales("per_element", SHAPE, dtype)
    y0 = make_state(SHAPE, dtype)
    whole = run("c", target, y0, etas, thresholds, scale)
    y, outs, spikes = y0.clone(), [], torch.zeros(Tc, dtype=torch.float64)
    for a, b in [(0, 5), (5, 6), (6, 26), (26, 40)]:
        outs.append(c_backend.sparse_scan_c(target[a:b], y, etas[a:b], thresholds[a:b], scale, spikes[a:b]))
    assert_same((torch.cat(outs), y, spikes), whole)
    assert_same(whole, run("torch", target, y0, etas, thresholds, scale))


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_multithreaded_equals_one_thread_and_torch(dtype):
    # 16 x 40004 element-steps: work for several threads, ten blocks of 4096 with a partial last one
    shape = (4, 73, 137)
    target = make_targets("relu", 16, shape, dtype)
    y0 = make_state(shape, dtype)
    etas = make_etas(16, "decay")
    thresholds, scale = make_thresholds("odd", etas), make_scales("channel", (1, *shape), dtype)  # [4, 1, 1]
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run("c", target, y0, etas, thresholds, scale)
    finally:
        torch.set_num_threads(n)
    many = run("c", target, y0, etas, thresholds, scale)
    assert_same(many, one)
    assert_same(many, run("torch", target, y0, etas, thresholds, scale))


@needs_c
def test_c_odd_shapes_and_empty_inputs():
    for Tc, shape in [(3, (1,)), (4, (3, 4097)), (0, (3, 4)), (5, (0, 4))]:
        target = make_targets("ties", Tc, shape, torch.float32) if Tc * shape[0] else torch.zeros((Tc, *shape))
        etas = make_etas(Tc)
        y0 = make_state(shape, torch.float32)
        assert_same(run("c", target, y0, etas, etas * 0.5, 1.5), run("torch", target, y0, etas, etas * 0.5, 1.5))


# ---------------------------------------------------------------------------------------------
# The target divided by the scale in the pass (normalize=True)
# ---------------------------------------------------------------------------------------------

@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", ["float", "0d", "per_element", "channel", "full"])
@pytest.mark.parametrize("out_kind", ["new", "target"])
def test_c_normalize_equals_torch_dividing_first(dtype, scale, out_kind):
    Tc = 7
    sc = make_scales(scale, SHAPE, dtype)
    y0 = make_state(SHAPE, dtype)
    # ties of the grid times the scale: the quotient lands on the thresholds or one ulp off, so a division
    # done any other way (a multiply by the reciprocal) changes spikes
    grid = make_targets("ties", Tc, SHAPE, dtype) * torch.as_tensor(sc, dtype=dtype)
    relu = make_targets("relu", Tc, SHAPE, dtype)
    for target, eta_kind, thr_kind in ((grid, "dyadic", "half"), (relu, "decay", "odd")):
        etas = make_etas(Tc, eta_kind)
        thresholds = make_thresholds(thr_kind, etas)
        ref = run("torch", target, y0, etas, thresholds, sc, out_kind, normalize=True)
        assert_same(run("c", target, y0, etas, thresholds, sc, out_kind, normalize=True), ref)
        assert_same(run("auto", target, y0, etas, thresholds, sc, out_kind, normalize=True), ref)


@needs_c
def test_normalize_with_a_scale_the_kernel_cannot_fuse_divides_with_torch_first():
    # a float64 scale on float32 targets promotes: torch divides and multiplies, and the numbers are torch's
    target = make_targets("relu", 5, SHAPE, torch.float32)
    y0, etas = make_state(SHAPE, torch.float32), make_etas(5)
    sc = make_scales("per_element", SHAPE, torch.float64)
    assert c_backend.sparse_scan_c(target, y0.clone(), etas, etas * 0.5, sc, normalize=True) is None
    ref = run("torch", target, y0, etas, etas * 0.5, sc, normalize=True)
    got = run("auto", target, y0, etas, etas * 0.5, sc, normalize=True)
    assert got[0].dtype == torch.float64
    assert_same(got, ref)


# ---------------------------------------------------------------------------------------------
# sparse_scan's backend choice
# ---------------------------------------------------------------------------------------------

@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_scan_runs_the_c_kernel_on_cpu_float_tensors(dtype, monkeypatch):
    target = make_targets("ties", 6, SHAPE, dtype)
    y0, etas = make_state(SHAPE, dtype), make_etas(6)
    ref = run("torch", target, y0, etas, etas * 0.5, 2.0)

    def no_torch(*args, **kwargs):
        raise AssertionError("the torch loop ran")

    monkeypatch.setattr(kernels, "sparse_scan_torch", no_torch)
    assert_same(run("auto", target, y0, etas, etas * 0.5, 2.0), ref)
    monkeypatch.setenv("SIGNGD_KERNEL", "torch")  # a named backend is obeyed
    with pytest.raises(AssertionError, match="the torch loop ran"):
        run("auto", target, y0, etas, etas * 0.5, 2.0)


@needs_c
def test_inputs_the_c_kernel_does_not_take_run_the_torch_loop():
    target = make_targets("relu", 6, SHAPE, torch.float32)
    y0, etas = make_state(SHAPE, torch.float32), make_etas(6)
    thresholds = etas * 0.5
    ref = run("torch", target, y0, etas, thresholds, None)
    # a non-contiguous state is updated in place all the same
    y = y0.transpose(0, 3).contiguous().transpose(0, 3)
    assert not y.is_contiguous()
    assert c_backend.sparse_scan_c(target, y, etas, thresholds) is None
    out = sparse_scan(target, y, etas, thresholds)
    assert_same((out, y), ref[:2])
    # a scale that promotes float32 to float64, and bfloat16
    sc = make_scales("per_element", SHAPE, torch.float64)
    assert c_backend.sparse_scan_c(target, y0.clone(), etas, thresholds, sc) is None
    assert_same(run("auto", target, y0, etas, thresholds, sc), run("torch", target, y0, etas, thresholds, sc))
    half = target.to(torch.bfloat16)
    assert c_backend.sparse_scan_c(half, y0.to(torch.bfloat16), etas, thresholds) is None
    assert_same(run("auto", half, y0.to(torch.bfloat16), etas, thresholds, None),
                run("torch", half, y0.to(torch.bfloat16), etas, thresholds, None))
    # an out buffer of another dtype or overlapping target partly
    assert c_backend.sparse_scan_c(target, y0.clone(), etas, thresholds, out=torch.empty_like(target).double()) is None
    wide = torch.empty((7, *SHAPE))
    assert c_backend.sparse_scan_c(wide[1:], y0.clone(), etas, thresholds, out=wide[:6]) is None


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_graded_steps_by_hand(dtype):
    """The graded neuron moves by the largest power of two not above ``2**(1/64)`` times its gap (sign kept):
    a gap of exactly a power of two takes exactly that step, one just below it too (0.995 -> 1); it fires only
    when that step is at least the threshold (and not 0). A subnormal gap (threshold 0) and NaN give the torch
    reference's values in C."""
    tiny = float(torch.finfo(dtype).tiny)
    row = [0.7, -0.7, 3.0, 0.2, 1.0, 0.995, 0.98, tiny / 8, float("nan")]
    target = torch.tensor([row, row], dtype=dtype)
    etas, thr = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([0.25, 0.0], dtype=torch.float64)
    outs = {}
    for scan in ("torch", "c"):
        out, y, spikes = run(scan, target, torch.zeros(9, dtype=dtype), etas, thr, None, graded=True)
        assert out[0, :7].tolist() == [0.5, -0.5, 2.0, 0.0, 1.0, 1.0, 0.5], scan  # 0.2: a step 0.125 < 0.25
        assert out[1, :7].tolist() == [0.625, -0.625, 3.0, 0.125, 1.0, 0.99609375, 0.75], scan  # 1.0: on it
        # a subnormal gap: float32's is a normal float64 (2**-129, exact); float64's is below 2**(-1/64) of
        # the smallest normal: a step 0, silent
        assert out[1, 7] == (tiny / 8 if dtype == torch.float32 else 0.0), scan
        assert spikes.tolist() == [6.0, 7.0 if dtype == torch.float32 else 6.0], scan
        outs[scan] = (out, y, spikes)
    assert_same(outs["c"], outs["torch"])


@needs_c
def test_c_graded_float32_steps_on_its_own_bits_equal_torch():
    """The C kernel takes a float32 gap's graded step on its float32 bits (twice as fast as through float64) at
    steps whose threshold is above FLT_MIN, and through float64 below it: both equal the torch reference bit for bit,
    on gaps of every exponent (subnormal ones included), at the rounding boundary's neighbours, infinities and NaN."""
    g = torch.Generator().manual_seed(0)
    bits32 = torch.randint(-2**31, 2**31, (4096,), generator=g, dtype=torch.int64).to(torch.int32)
    gaps = bits32.view(torch.float32)
    near = torch.tensor([0x3F7D3E0C, 0x3F7D3E0D, 0x3F7D3E0E, 0xBF7D3E0D - 2**32, 0x007D3E0D, 0x00000001],
                        dtype=torch.int32).view(torch.float32)
    gaps = torch.cat([gaps, near, torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0, -0.0])])
    target = torch.stack([gaps, gaps, gaps])
    etas = torch.ones(3, dtype=torch.float64)
    thresholds = torch.tensor([1e-30, 0.0, float(torch.finfo(torch.float32).tiny) / 4], dtype=torch.float64)
    y0 = torch.zeros(gaps.shape, dtype=torch.float32)
    ref = run("torch", target, y0, etas, thresholds, None, graded=True)
    assert_same(run("c", target, y0, etas, thresholds, None, graded=True), ref)
    assert float(ref[2].sum()) > 0
