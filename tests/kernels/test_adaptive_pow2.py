"""Power-of-two adaptive steps (``adaptive(..., pow2=True)``): the gain follows Rprop's rule, each step taken
is ``eta_t`` times the gain rounded to a power of two, so a receiver scales by it with an exponent add."""
import math

import pytest
import torch
from torch import nn

import signgd
from signgd import models, schedules
from signgd.event_driven import simulate_spikes
from signgd.kernels import adaptive_scan, pow2_step


def _is_power_of_two(v: torch.Tensor) -> bool:
    m, _ = torch.frexp(v.abs().double())
    return bool((m == 0.5).all())


def _scan(target, lr, grow, shrink, pow2):
    y, d = torch.zeros(target.shape[1:], dtype=target.dtype), torch.zeros(target.shape[1:], dtype=target.dtype)
    return adaptive_scan(target, y, d, torch.full((target.shape[0],), lr), grow, shrink, pow2=pow2), d


def test_the_gain_rounds_to_the_nearest_power_of_two_in_log_scale():
    g = torch.Generator().manual_seed(0)
    gains = torch.exp2(torch.rand(10000, generator=g, dtype=torch.float64) * 20 - 10)
    assert torch.equal(pow2_step(gains), schedules.to_power_of_two(gains))
    assert torch.equal(pow2_step(-gains), -schedules.to_power_of_two(gains))
    edge = torch.tensor([math.sqrt(2), math.nextafter(math.sqrt(2), 0), 0.0, 1.2, 0.7, 1e3, 1e-3], dtype=torch.float64)
    assert pow2_step(edge).tolist() == [2.0, 1.0, 0.0, 1.0, 0.5, 1024.0, 2.0 ** -10]
    as_float = edge.float()  # float32 rounds sqrt(2) down: it is below sqrt(2), so it rounds to 1
    assert torch.equal(pow2_step(as_float), pow2_step(as_float.double()).float())
    assert pow2_step(as_float)[0] == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_step_taken_is_a_power_of_two_and_the_gain_keeps_rprops_rule(dtype):
    g = torch.Generator().manual_seed(1)
    target = (torch.randn(60, 4, 300, generator=g) * 3).to(dtype)
    target[:, 0, :5] = 1e6  # far away: the gain grows to its ceiling
    out, d = _scan(target, 0.25, 1.2, 0.5, pow2=True)  # the schedule rounds lr; the scan takes etas as given
    steps = torch.diff(torch.cat([torch.zeros_like(out[:1]), out]), dim=0)
    assert _is_power_of_two(steps) and float(steps.abs().min()) >= 0.25 * 2.0 ** -10
    assert float(steps[:, 0, :5].max()) == 0.25 * 1024  # the gain 1e3 at its ceiling steps by 1024
    assert not torch.equal(d, pow2_step(d))  # the state keeps the exact gain, the steps round it
    assert float(d.abs().max()) == pytest.approx(schedules.MAX_GAIN)


def test_with_power_of_two_gains_the_rounding_changes_nothing_within_the_bounds():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(9, 3, 200, generator=g, dtype=torch.float64)  # 9 steps: gains within 2**-8 .. 2**8
    rounded, _ = _scan(target, 0.25, 2.0, 0.5, pow2=True)
    plain, _ = _scan(target, 0.25, 2.0, 0.5, pow2=False)
    assert torch.equal(rounded, plain)


# The C kernel against the torch loop with pow2: tests/kernels/test_adaptive.py (its "pow2" case).


def _avg_cnn():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


@pytest.mark.parametrize("build", [_avg_cnn, lambda: models.SmallResNet(widths=(4, 6, 8))], ids=["cnn", "resnet"])
def test_receivers_rebuild_the_rounded_steps_from_spikes_alone(build):
    torch.manual_seed(0)
    model = build().eval().double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    snn = signgd.convert(model, x, schedule="adaptive:lr=0.2,pow2=1")
    T = 30
    ref_out, ref_spikes, _ = simulate_spikes(snn, x, T)
    result = snn.simulate(x, list(range(1, T + 1)), stats=True)
    fast = torch.stack([result.outputs[t] for t in range(1, T + 1)])
    assert torch.allclose(fast, ref_out, atol=1e-9)
    for name, s in ref_spikes.items():
        assert torch.equal(result.spikes[name], s.flatten(1).sum(1).double()), name


def test_it_converges_to_the_ann(digits_train):
    torch.manual_seed(0)
    model = models.digits_cnn().eval()
    x = digits_train.tensors[0][:64]
    with torch.no_grad():
        ann = model(x)
    snn = signgd.convert(model, x, schedule="adaptive:lr=0.25,pow2=1")
    err = {t: float((out - ann).norm() / ann.norm()) for t, out in snn(x, T=[8, 64]).items()}
    assert err[64] < err[8] and err[64] < 0.05


def test_the_spelling_repr_and_a_saved_network_keep_it(tmp_path):
    schedule = schedules.make_schedule("adaptive:lr=0.2,grow=1.2,shrink=0.5,pow2=1")
    assert repr(schedule) == "adaptive(lr=0.2, grow=1.2, shrink=0.5, pow2=True)"
    assert schedule.rule == (1.2, 0.5, True, 0, 0, (1.0, 1.0)) and schedules.is_power_of_two(schedule)
    assert schedule.etas(1, 4).tolist() == [0.25] * 3
    assert not schedules.is_power_of_two(schedules.adaptive(0.25))
    assert repr(schedules.make_schedule(schedule.spec())) == repr(schedule)
    torch.manual_seed(3)
    x = torch.rand(5, 1, 8, 8)
    snn = signgd.convert(_avg_cnn().eval(), x, schedule=schedule)
    loaded = signgd.load(snn.save(tmp_path / "p.pt"))
    assert loaded.schedule.rule == (1.2, 0.5, True, 0, 0, (1.0, 1.0)) and loaded.settings["schedule"]["pow2"] is True
    assert torch.equal(loaded(x, T=12), snn(x, T=12))


def test_a_bad_pow2_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^adaptive schedule: pow2 must be true or false \(1 or 0\), got 2.0$"):
        schedules.make_schedule("adaptive:pow2=2")


def test_the_c_scan_rounds_float32_gains_on_their_own_bits_as_torch_does(monkeypatch):
    """The C scan rounds a float32 gain to its power of two on the float32 bits (``signgd_pow2_f32``), not through
    float64: gains of every exponent between the floor and the ceiling, with the fractions either side of sqrt(2)'s
    (float32 sqrt(2) itself rounds down), set as the last step ``d`` with ``grow = shrink = 1`` so the step is
    ``P(|d|)``; the torch loop rounds on float64 bits. Both give the same estimates, bit for bit."""
    from signgd.kernels import c as c_kernels
    from signgd.schedules import MAX_GAIN, MIN_GAIN

    exponents = torch.arange(-10, 10, dtype=torch.int32)  # 2**-10 < MIN_GAIN .. 2**9 < MAX_GAIN
    fractions = torch.tensor([0, 1, 0x3504F2, 0x3504F3, 0x3504F4, 0x3504F5, 0x400000, 0x7FFFFF], dtype=torch.int32)
    bits = ((exponents[:, None] + 127) << 23) | fractions[None, :]
    gains = bits.flatten().view(torch.float32)
    gains = gains[(gains >= MIN_GAIN) & (gains <= MAX_GAIN)]
    n = gains.numel()
    sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    target = torch.randn(1, n)
    results = []
    for backend in ("c", "torch"):
        y, d = torch.zeros(n), (gains * sign).clone()
        if backend == "c":
            out = c_kernels.adaptive_scan_c(target, y, d, torch.ones(1), 1.0, 1.0, pow2=True)
            assert out is not None  # the C kernel ran
        else:
            from signgd.kernels.reference import adaptive_scan_torch
            out = adaptive_scan_torch(target, y, d, torch.ones(1), 1.0, 1.0, pow2=True)
        results.append((out.clone(), y.clone(), d.clone()))
    (c_out, c_y, c_d), (t_out, t_y, t_d) = results
    assert torch.equal(c_out, t_out) and torch.equal(c_y, t_y) and torch.equal(c_d, t_d)
    assert torch.equal(c_y.abs(), pow2_step(gains))  # every step a power of two, sqrt(2)'s boundary included
