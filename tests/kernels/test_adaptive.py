"""Adaptive steps (signgd.schedules.adaptive; the scan: signgd.kernels.adaptive_scan): each neuron grows
its step while its spikes repeat and shrinks it when they alternate."""
import pytest
import torch
from torch import nn

import signgd
from signgd import schedules
from signgd.event_driven import simulate_spikes
from signgd.kernels import adaptive_scan, signgd_scan
from signgd.schedules import MAX_GAIN, MIN_GAIN


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.GELU(), nn.Flatten(), nn.LayerNorm(8 * 4 * 4), nn.Linear(8 * 4 * 4, 10)).eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.rand(6, 1, 8, 8)


def _scan(target, lr, grow, shrink):
    y, d = torch.zeros(target.shape[1:]), torch.zeros(target.shape[1:])
    out = adaptive_scan(target, y, d, torch.full((target.shape[0],), lr), grow, shrink)
    return out, y, d


def test_without_growth_or_shrinkage_it_is_the_plain_signgd_neuron_bit_for_bit():
    torch.manual_seed(0)
    target = torch.randn(40, 3, 50)
    out, y, _ = _scan(target, 0.1, 1.0, 1.0)
    ref, y_ref = signgd_scan(target, torch.zeros(3, 50), torch.full((40,), 0.1), backend="torch")
    assert torch.equal(out, ref) and torch.equal(y, y_ref)


def test_the_step_grows_while_spikes_repeat_and_halves_when_they_alternate():
    target = torch.full((6, 1), 10.0)  # far above: every step moves up, growing by 1.2
    out, _, d = _scan(target, 0.5, 1.2, 0.5)
    steps = torch.diff(torch.cat([torch.zeros(1), out[:, 0]]))
    assert torch.allclose(steps, 0.5 * 1.2 ** torch.arange(6.0))
    assert float(d) == pytest.approx(1.2 ** 5)
    # Bracketing a target: alternate spikes halve the step, so the error shrinks geometrically.
    out, _, _ = _scan(torch.full((40, 1), 0.7), 0.2, 1.2, 0.5)
    assert abs(float(out[-1, 0]) - 0.7) < 1e-3


def test_it_reaches_targets_no_fixed_schedule_of_the_same_start_can(x):
    target = torch.full((40, 2), 40.0)
    target[:, 1] = -25.0
    out, _, _ = _scan(target, 0.2, 1.2, 0.5)
    assert torch.allclose(out[-1], target[-1], rtol=0.02)
    assert schedules.exponential(0.2, 0.95).total(40) < 4  # what the exponential schedule can travel


def test_the_gain_stays_within_its_bounds():
    target = torch.full((200, 2), 1e9)
    target[:, 1] = 0.3
    _, _, d = _scan(target, 0.1, 1.5, 0.5)
    assert float(d[0]) == pytest.approx(MAX_GAIN)
    assert abs(float(d[1])) >= MIN_GAIN


@pytest.mark.parametrize("encoding", ["float", "analog"])
def test_chunks_and_batch_slices_give_the_same_numbers(x, encoding):
    snn = signgd.convert(_net(), x, schedule="adaptive:lr=0.2", encoding=encoding)
    whole = snn(x, T=[7, 30], chunk=30, batch_chunk=6)
    for chunk, batch_chunk in ((1, 6), (4, 2), (11, 1)):
        parts = snn(x, T=[7, 30], chunk=chunk, batch_chunk=batch_chunk)
        for t in (7, 30):
            assert torch.allclose(parts[t], whole[t], atol=1e-5 * float(whole[t].abs().max()))


def test_receivers_rebuild_the_steps_from_spikes_alone(x):
    # The reference integrates signed spikes and rebuilds each sender's gain from its spike train.
    snn = signgd.convert(_net().double(), x.double(), schedule=schedules.adaptive(0.2, 1.2, 0.5))
    T = 30
    ref_out, ref_spikes, _ = simulate_spikes(snn, x.double(), T)
    result = snn.simulate(x.double(), list(range(1, T + 1)), stats=True)
    fast = torch.stack([result.outputs[t] for t in range(1, T + 1)])
    assert torch.allclose(fast, ref_out, atol=1e-9)
    for name, s in ref_spikes.items():
        assert torch.equal(result.spikes[name], s.flatten(1).sum(1).double()), name


def test_it_converges_to_the_ann_and_faster_than_the_plain_neuron_of_the_same_start(x):
    model = _net()
    with torch.no_grad():
        ann = model(x)
    snn = signgd.convert(model, x, schedule="adaptive:lr=0.2", encoding="analog")
    plain = signgd.convert(model, x, schedule="constant:lr=0.2", encoding="analog")
    err = {t: float((out - ann).norm() / ann.norm()) for t, out in snn(x, T=[8, 32, 128]).items()}
    assert err[128] < err[32] < err[8] and err[128] < 0.01
    assert err[32] < float((plain(x, T=32) - ann).norm() / ann.norm()) / 3


def test_saved_networks_keep_the_rule(x, tmp_path):
    snn = signgd.convert(_net(), x, schedule=schedules.adaptive(0.3, 1.1, 0.6))
    loaded = signgd.load(snn.save(tmp_path / "a.pt"))
    assert loaded.schedule.rule == schedules.Rule(1.1, 0.6) and loaded.settings["schedule"]["name"] == "adaptive"
    assert torch.equal(loaded(x, T=12), snn(x, T=12))


@pytest.mark.parametrize("kwargs, message", [
    ({"grow": 0.9}, "grow must be >= 1"),
    ({"shrink": 0.0}, "shrink must be in (0, 1]"),
    ({"shrink": 1.5}, "shrink must be in (0, 1]"),
    ({"grow": float("nan")}, "grow must be a finite number"),
    ({"lr": -1.0}, "lr must be a positive number"),
])
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        schedules.adaptive(**kwargs)


def test_the_subgradient_dynamics_refuses_an_adaptive_schedule(x):
    with pytest.raises(ValueError, match="adaptive schedule steps signGD neurons"):
        signgd.convert(_net()[:3], x, dynamics="subgradient", schedule="adaptive")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("steps,eta,grow,shrink,pow2", [(25, 0.3, 1.3, 0.45, False), (40, 0.25, 1.2, 0.5, True)],
                         ids=["exact", "pow2"])
@pytest.mark.parametrize("tail", [0, 6])
def test_the_c_kernel_matches_the_torch_loop_bit_for_bit(dtype, in_place, steps, eta, grow, shrink, pow2, tail):
    """Also with power-of-two steps (``adaptive(pow2=True)``), run long enough for gains at their ceiling, and
    with a gain floor that decays from step 6 (``adaptive(tail=6)``; the ties alternate down to the floor)."""
    from signgd.kernels import available_backends
    from signgd.kernels.c import adaptive_scan_c
    from signgd.kernels.reference import adaptive_scan_torch

    if "c" not in available_backends():
        pytest.skip("the C kernel did not build here")
    g = torch.Generator().manual_seed(0)
    target = (torch.randint(-4, 5, (steps, 3, 4100), generator=g) / 4).to(dtype)  # ties included
    if pow2:
        target[:, 0, :7] = 1e5  # gains at their ceiling
    scale = torch.rand(4100, generator=g, dtype=dtype) + 0.5
    runs = []
    for scan in (adaptive_scan_c, adaptive_scan_torch):
        y, d = torch.zeros(3, 4100, dtype=dtype), torch.zeros(3, 4100, dtype=dtype)
        spikes = torch.zeros(steps, dtype=torch.float64)
        t = target.clone()
        floors = schedules.gain_floors(schedules.Rule(grow, shrink, pow2, tail), 1, steps + 1, dtype=torch.float64)
        out = scan(t, y, d, torch.full((steps,), eta, dtype=torch.float64), grow, shrink, scale, spikes,
                   out=t if in_place else None, pow2=pow2, floors=floors)
        runs.append((out, y, d, spikes))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    if tail:  # the floor was reached and decayed: some gain sits below MIN_GAIN
        assert float(runs[0][2].abs().min()) < MIN_GAIN


def test_reports_cover_an_adaptive_network(x):
    from signgd.report import collect

    snn = signgd.convert(_net(), x, schedule="adaptive")
    stats = collect(snn, (x, torch.arange(6) % 10), T=[4, 8], progress=False)
    assert stats.evaluation.n == 6
    assert sum(layer.spikes_per_sample(8) for layer in stats.layers.values()) > 0
    assert all(layer.relative_error[8] < layer.relative_error[4] * 2 for layer in stats.layers.values())
