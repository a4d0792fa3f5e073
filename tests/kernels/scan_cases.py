"""Shared by the signGD scan tests (tests/kernels/test_*.py): inputs that exercise the kernels, and a
bit-for-bit comparison (from tests/test_kernels.py, which became tests/kernels/ with the kernels
package)."""
import pytest
import torch

from signgd import kernels
from signgd.kernels import build, signgd_scan

HAVE_C = "c" in kernels.available_backends()
HAVE_COMPILER = build.find_compiler() is not None
# Skipped only where there is no C compiler: with one, a C backend that fails to build (or fails
# its self-check) makes these tests fail.
needs_c = pytest.mark.skipif(not HAVE_COMPILER, reason="no C compiler")
needs_triton = pytest.mark.skipif(not torch.cuda.is_available() or "triton" not in kernels.available_backends(),
                                  reason="needs a CUDA device and triton")

# [Tc, B, C, H, W]; N = 2 * 8 * 13 * 11 = 2288 elements spans two of the C kernel's blocks (2048),
# the second one partial.
SHAPE = (2, 8, 13, 11)




def make_targets(kind, Tc, shape, dtype, seed=0):
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


def make_etas(Tc, kind="dyadic"):
    if kind == "dyadic":
        return torch.tensor([2.0 ** -(1 + t % 4) for t in range(Tc)], dtype=torch.float64)
    return 0.37 * torch.pow(torch.tensor(0.93, dtype=torch.float64), torch.arange(Tc, dtype=torch.float64))


def make_scales(kind, shape, dtype):
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


def run_scan(backend, target, y, etas, scale, with_spikes=True, spikes0=None):
    spikes = None
    if with_spikes:
        spikes = torch.zeros(target.shape[0], dtype=torch.float64) if spikes0 is None else spikes0.clone()
        spikes = spikes.to(target.device)
    t_before, y_before = target.clone(), y.clone()
    out, y_final = signgd_scan(target, y, etas, scale, spikes, backend=backend)
    assert bits(target, t_before) and bits(y, y_before), "inputs were modified"
    return out, y_final, spikes


def bits(a, b):
    """Bit-identical (NaN payloads and the sign of zero included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(ints), b.contiguous().view(ints))
    return torch.equal(a, b)


def assert_same(a, b):
    for x, z in zip(a, b):
        if x is None:
            assert z is None
            continue
        assert x.dtype == z.dtype and x.shape == z.shape
        assert bits(x, z), f"max |diff| = {(x.double() - z.double()).abs().max().item()}"


_BACKENDS_HERE = ["torch", pytest.param("c", marks=needs_c), pytest.param("triton", marks=needs_triton)]


def make_factors(kind, Tc, shape, dtype):
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


def prologue_by_hand(target, pre, factor, scale):
    """The target by plain torch ops, as the neuron computed it before the fused prologue."""
    t = torch.square(target) if pre == "square" else target * factor if pre == "mul" else target.clone()
    return t if scale is None else t / scale
