"""The simulator on a CUDA device (runs where a GPU is present; CI has none)."""
import copy

import pytest
import torch
from torch import nn

import signgd

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10)).eval()


@cuda
@pytest.mark.parametrize("dynamics,encoding", [("signgd", "float"), ("signgd", "stochastic"),
                                               ("subgradient", "analog")])
def test_cuda_simulation_matches_cpu(dynamics, encoding):
    x = torch.rand(10, 1, 8, 8, dtype=torch.float64)
    cpu = signgd.convert(_model().double(), x, dynamics=dynamics, encoding=encoding,
        schedule=None if dynamics == "subgradient" else "exponential")
    gpu = signgd.convert(copy.deepcopy(_model()).double().cuda(), x.cuda(), dynamics=dynamics, encoding=encoding,
        schedule=None if dynamics == "subgradient" else "exponential")
    out_cpu = cpu(x, T=[8, 32])
    out_gpu = gpu(x.cuda(), T=[8, 32], chunk=5)
    for t in (8, 32):
        assert out_gpu[t].device.type == "cuda"
        assert torch.allclose(out_gpu[t].cpu(), out_cpu[t], atol=1e-9)
    stats = gpu.simulate(x.cuda(), 8, stats=True)
    assert set(stats.spikes) == set(gpu.neurons)


@cuda
def test_moving_a_converted_network_to_cuda():
    x = torch.rand(4, 1, 8, 8)
    snn = signgd.convert(_model(), x, schedule="exponential")
    ref = snn(x, T=16)
    snn.cuda()
    assert torch.allclose(snn(x.cuda(), T=16).cpu(), ref, atol=1e-5)
    with pytest.raises(signgd.InputError, match="is on cpu but the network is on cuda"):
        snn(x, T=4)


@cuda
def test_float16_on_cuda_reaches_its_documented_accuracy():
    """float16 works on CUDA (docs/reliability.md); its 5-bit exponent makes overflow the risk."""
    torch.manual_seed(1)
    x = torch.rand(10, 1, 8, 8)
    snn = signgd.convert(_model().half().cuda(), x.half(), encoding="analog",
                         schedule="exponential")  # calibration moved to the model
    with torch.no_grad():
        ann = _model().double()(x.double())
    outs = snn(x.half().cuda(), T=[16, 256])
    err = {t: float((o.double().cpu() - ann).abs().max() / ann.abs().max()) for t, o in outs.items()}
    assert all(o.dtype == torch.float16 for o in outs.values())
    assert err[256] < 5e-3 and err[256] <= err[16], err
    with pytest.raises(signgd.InputError, match="dtype torch.float32 but the network has torch.float16"):
        snn(x.cuda(), T=4)
