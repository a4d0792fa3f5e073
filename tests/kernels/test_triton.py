"""The triton backend (signgd.kernels.triton, CUDA): runs where a GPU is present."""
import pytest
import torch
from scan_cases import (
    assert_same,
    make_etas,
    make_scales,
    make_targets,
    needs_triton,
    run_scan,
)

from signgd import kernels
from signgd.kernels import signgd_scan


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", ["none", "float", "0d", "per_element", "channel"])
def test_triton_equals_torch(dtype, scale):
    dev = "cuda"
    shape = (3, 8, 13, 11)
    for Tc in (1, 7, 64):
        for kind in ("ties", "zeros", "relu", "special"):
            target = make_targets(kind, Tc, shape, dtype).to(dev)
            etas = make_etas(Tc, "decay").to(dev)
            sc = make_scales(scale, shape, dtype)
            sc = sc.to(dev) if isinstance(sc, torch.Tensor) and sc.dim() > 0 else sc
            y0 = torch.zeros(shape, dtype=dtype, device=dev)
            assert kernels.resolve_backend(target, y0, sc) == "triton"
            assert_same(run_scan("triton", target, y0, etas, sc), run_scan("torch", target, y0, etas, sc))
    # chunked == whole, non-contiguous input
    target = make_targets("ties", 40, (9, 5, 300), dtype).to(dev).transpose(2, 3)
    y0 = torch.zeros(target.shape[1:], dtype=dtype, device=dev)
    whole = run_scan("triton", target, y0, make_etas(40).to(dev), None)
    y, outs, spikes = y0, [], torch.zeros(40, dtype=torch.float64, device=dev)
    for a, b in [(0, 3), (3, 40)]:
        out, y = signgd_scan(target[a:b], y, make_etas(40).to(dev)[a:b], None, spikes[a:b], backend="triton")
        outs.append(out)
    assert_same((torch.cat(outs), y, spikes), whole)
    assert_same(whole, run_scan("torch", target, y0, make_etas(40).to(dev), None))
    # out= and inplace=
    buf = torch.empty(target.shape, dtype=dtype, device=dev)
    y1 = y0.clone()
    spikes = torch.zeros(40, dtype=torch.float64, device=dev)
    out, y = signgd_scan(target, y1, make_etas(40).to(dev), None, spikes, backend="triton", out=buf, inplace=True)
    assert out is buf and y is y1
    assert_same((out, y, spikes), whole)
