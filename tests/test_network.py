"""The SpikingNetwork: simulation semantics, equivalence of execution orders, input checking."""
import pytest
import torch
from model_helpers import small_cnn as _net
from torch import nn

import signgd
from signgd import models
from signgd.event_driven import simulate_spikes


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.rand(12, 1, 8, 8)


@pytest.mark.parametrize("encoding", ["float", "spike", "stochastic", "analog"])
@pytest.mark.parametrize("dynamics", ["signgd", "subgradient", "if"])
def test_layer_major_equals_time_major(x, dynamics, encoding):
    snn = signgd.convert(_net(), x, dynamics=dynamics, encoding=encoding,
        schedule=None if dynamics in ("subgradient", "if") else "exponential")
    time_major = snn(x, T=[5, 24], chunk=1)
    layer_major = snn(x, T=[5, 24], chunk=24)
    mixed = snn(x, T=[5, 24], chunk=7)
    for t in (5, 24):
        scale = time_major[t].abs().max()
        assert (layer_major[t] - time_major[t]).abs().max() <= 1e-5 * scale
        assert (mixed[t] - time_major[t]).abs().max() <= 1e-5 * scale


def test_outputs_at_several_T_come_from_one_run_and_equal_separate_runs(x):
    snn = signgd.convert(_net(), x, schedule="exponential")
    outs = snn(x, T=[64, 8, 16, 8])
    assert sorted(outs) == [8, 16, 64]
    for t in (8, 16, 64):
        assert torch.allclose(outs[t], snn(x, T=t), atol=1e-6)


def test_state_resets_and_samples_do_not_depend_on_batch_mates(x):
    snn = signgd.convert(_net().double(), x.double(), schedule="exponential")
    xd = x.double()
    first = snn(xd, T=32)
    assert torch.equal(first, snn(xd, T=32))  # no state leaks from call to call
    alone = torch.cat([snn(xd[i:i + 1], T=32) for i in range(len(xd))])
    assert torch.allclose(alone, first, atol=1e-12)
    assert torch.allclose(snn(xd.flip(0), T=32).flip(0), first, atol=1e-12)


@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_spike_propagation_view_equals_estimate_propagation(x, arch):
    # The engine propagates estimates (x_t = A(y_t^up)); the reference integrates signed spikes
    # (x_t = x_{t-1} - eta_t L(2 s_t^up - 1)). Same spikes at every step, same outputs; the ResNet
    # has residual adds, where one neuron integrates the spikes of two upstream layers.
    torch.manual_seed(3)
    model = _net() if arch == "cnn" else models.SmallResNet(widths=(4, 6, 8)).eval()
    snn = signgd.convert(model.double(), x.double(), normalize="all", schedule="exponential")
    xd = x.double()
    T = 40
    ref_out, ref_spikes, _ = simulate_spikes(snn, xd, T)
    result = snn.simulate(xd, list(range(1, T + 1)), stats=True)
    fast_out = torch.stack([result.outputs[t] for t in range(1, T + 1)])
    assert torch.allclose(fast_out, ref_out, atol=1e-9)
    assert set(result.spikes) == set(ref_spikes)
    for name, s in ref_spikes.items():
        per_step = s.flatten(1).sum(1).double()
        assert torch.equal(result.spikes[name], per_step), name


def test_snn_output_approaches_the_ann_as_T_grows(x):
    model = _net()
    snn = signgd.convert(model, x, encoding="analog", normalize="all", schedule="exponential")
    with torch.no_grad():
        ann = model(x)
    outs = snn(x, T=[8, 32, 128])
    err = {t: float((outs[t] - ann).norm() / ann.norm()) for t in outs}
    assert err[128] < err[32] < err[8] and err[128] < 0.05


def test_float64_and_float32_agree(x):
    model = _net()
    s32 = signgd.convert(model, x, schedule="exponential")
    s64 = signgd.convert(copy_double(model), x.double(), schedule="exponential")
    assert torch.allclose(s32(x, T=16).double(), s64(x.double(), T=16), atol=1e-4)


def copy_double(model):
    import copy
    return copy.deepcopy(model).double()


def test_residual_network_converts_and_tracks_the_ann():
    torch.manual_seed(0)
    model = models.SmallResNet(widths=(4, 8, 8)).eval()
    x = torch.rand(6, 1, 8, 8)
    snn = signgd.convert(model, x, encoding="analog", normalize="all", schedule="exponential")
    assert torch.allclose(snn.ann(x), model(x), atol=1e-5)
    with torch.no_grad():
        ann = model(x)
    outs = snn(x, T=[16, 256])
    assert (outs[256] - ann).norm() < (outs[16] - ann).norm()


def test_statistics_are_recorded_only_when_asked(x):
    snn = signgd.convert(_net(), x, schedule="exponential")
    plain = snn.simulate(x, 10)
    assert plain.spikes == {}
    stats = snn.simulate(x, 10, stats=True)
    assert set(stats.spikes) == set(snn.neurons)
    rates = stats.firing_rates()
    assert all(0 <= r <= 1 for r in rates.values())
    assert torch.equal(stats.outputs[10], plain.outputs[10])


def test_snn_is_a_module_that_moves_with_to(x):
    snn = signgd.convert(_net(), x, schedule="exponential")
    assert isinstance(snn, nn.Module)
    snn64 = snn.to(torch.float64)
    assert all(m.scale.dtype == torch.float64 for m in snn64.neurons.values() if m.normalized)
    assert snn64(x.double(), T=4).dtype == torch.float64


@pytest.mark.parametrize("bad,match", [
    (lambda x: x[:, :, :4], "does not match the network"),
    (lambda x: x[0], "does not match the network"),
    (lambda x: x.double(), "dtype"),
    (lambda x: torch.where(x > 0.5, torch.nan, x), "NaN or Inf"),
    (lambda x: x[:0], "empty"),
])
def test_bad_inputs_raise_clear_errors(x, bad, match):
    snn = signgd.convert(_net(), x, schedule="exponential")
    with pytest.raises(signgd.InputError, match=match):
        snn(bad(x), T=4)


@pytest.mark.parametrize("T,match", [(0, "at least 1"), (-3, "at least 1"), (2.5, "integer"),
                                     ([], "empty"), ([4, "x"], "integer"), (True, "integer"),
                                     (float("nan"), "integer"), (float("inf"), "integer"), (None, "positive int"),
                                     ("8", "integer"), ([8, 0], "at least 1"), (torch.tensor([[4]]), "integer")])
def test_bad_T_raises_clear_errors(x, T, match):
    snn = signgd.convert(_net(), x, schedule="exponential")
    with pytest.raises(signgd.InputError, match=match):
        snn(x, T=T)


@pytest.mark.parametrize("calibration,match", [
    (torch.empty(0, 1, 8, 8), "empty"),
    ([], "empty"),
    (torch.full((4, 1, 8, 8), float("nan")), "NaN or Inf"),
    ([torch.rand(2, 1, 8, 8), torch.rand(2, 1, 6, 6)], "sample shape"),
    (torch.rand(8), "no batch dimension"),
    ("data.pt", "must be a tensor"),
    ([("a", 1)], "not a tensor"),
])
def test_bad_calibration_raises_clear_errors(calibration, match):
    with pytest.raises(signgd.CalibrationError, match=match):
        signgd.convert(_net(), calibration, schedule="exponential")


def test_calibration_accepts_datasets_loaders_and_labelled_batches(x):
    y = torch.zeros(len(x), dtype=torch.long)
    ds = torch.utils.data.TensorDataset(x, y)
    reference = signgd.convert(_net(), x, schedule="exponential")(x, T=8)
    for calib in [ds, torch.utils.data.DataLoader(ds, batch_size=5), [(x[:6], y[:6]), (x[6:], y[6:])]]:
        assert torch.allclose(signgd.convert(_net(), calib, schedule="exponential")(x, T=8), reference)


def test_bad_settings_are_refused(x):
    for kw, match in [(dict(dynamics="lif"), "dynamics"), (dict(encoding="rate"), "encoding"),
                      (dict(normalize="p99"), "normalize")]:
        with pytest.raises(ValueError, match=match):
            signgd.convert(_net(), x, **kw)


def _mlp():
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()


def _silent_to_median(scale: torch.Tensor) -> torch.Tensor:
    """convert's fallback (graph/calibrate.neuron_scales): an element silent on the calibration data
    (range below 1e-3 of its layer's median active range) gets that median."""
    median = scale[scale > 0].median()
    return torch.where(scale < 1e-3 * median, median, scale)


def test_signgd_network_follows_the_paper_equations_by_hand():
    model, z = _mlp(), torch.rand(6, 4, dtype=torch.float64)
    snn = signgd.convert(model, z, schedule="exponential")  # paper preset: float encoding, ReLU max-normalization
    lin1, lin2 = model[0], model[2]
    scale = torch.relu(lin1(z)).amax(0)
    scale = _silent_to_median(scale)
    T = 50
    etas = [0.15 * 0.95 ** (t - 1) for t in range(1, T + 1)]
    e, y = torch.zeros_like(z), torch.zeros(6, 5, dtype=torch.float64)
    outs = snn(z, T=list(range(1, T + 1)))
    for t in range(1, T + 1):
        eta = etas[t - 1]
        e = e - eta * (e - z)                      # float encoder
        target = torch.relu(lin1(e)) / scale       # neuron sees x / s
        s = (y >= target).double()                 # fire
        y = y - eta * (2 * s - 1)                  # sign step
        out = lin2(y * scale)                      # readout of the estimates
        assert torch.allclose(outs[t], out, atol=1e-12), t


def test_subgradient_network_follows_the_paper_equations_by_hand():
    model, z = _mlp(), torch.rand(6, 4, dtype=torch.float64)
    snn = signgd.convert(model, z, dynamics="subgradient")
    lin1, lin2 = model[0], model[2]
    scale = torch.relu(lin1(z)).amax(0)
    scale = _silent_to_median(scale)
    T = 50
    x = (lin1.bias / scale).expand(6, 5).clone()   # x_0 = A(0) in normalized units
    y = torch.zeros(6, 5, dtype=torch.float64)
    o = torch.zeros(6, 3, dtype=torch.float64)
    outs = snn(z, T=list(range(1, T + 1)))
    for t in range(1, T + 1):
        eta = 1.0 / (t + 1)
        a = lin1(z) / scale                        # the input itself at every step
        x = x - eta * (x - a)                      # running average, start counts as a sample
        s = (x > y).double()
        y = y - eta * (y - s)
        o = o - eta * (o - lin2(s * scale))        # running average of the readout
        assert torch.allclose(outs[t], o, atol=1e-12), t
