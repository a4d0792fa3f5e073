"""The triton backend (signgd.kernels.triton, CUDA): runs where a GPU is present."""
import pytest
import torch
from scan_cases import (
    _assert_same,
    _etas,
    _no_env_backend,  # noqa: F401 (an autouse fixture)
    _run,
    _scales,
    _targets,
    needs_triton,
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
