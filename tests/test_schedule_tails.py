"""What a tuned schedule does past the T it was tuned for (the adaptive and exponential tails), and how the tuner
ranks candidates when the ANN's arg-max cannot separate them (one class on every tuning sample)."""
import copy

import pytest
import torch

import signgd
from signgd import schedules
from signgd.tuning import tune_schedule


def test_the_adaptive_tail_keeps_the_steps_and_decays_the_gain_floor_past_it():
    plain, tailed = schedules.adaptive(0.2), schedules.adaptive(0.2, tail=64)
    assert torch.equal(plain.etas(1, 300, dtype=torch.float64), tailed.etas(1, 300, dtype=torch.float64))
    assert tailed.rule == plain.rule._replace(tail=64) and tailed.params["tail"] == 64
    floors = schedules.gain_floors(tailed.rule, 1, 257, dtype=torch.float64)
    t = torch.arange(65, 257, dtype=torch.float64)
    assert torch.all(floors[:64] == schedules.MIN_GAIN)
    assert torch.allclose(floors[64:], schedules.MIN_GAIN * 64 / t, rtol=1e-15, atol=0)
    assert torch.all(schedules.gain_floors(plain.rule, 1, 257) == torch.tensor(schedules.MIN_GAIN))
    # Power-of-two steps keep their constant power-of-two base; the tail changes only where gains may rest.
    pow2 = schedules.adaptive(0.2, pow2=True, tail=16)
    assert torch.all(pow2.etas(1, 300, dtype=torch.float64) == 0.25) and pow2.rule == schedules.Rule(1.2, 0.5, True, 16)
    # The spec, a string and a dict rebuild the same schedule (saved networks, the CLI).
    again = schedules.make_schedule(tailed.spec())
    assert again.rule == tailed.rule and repr(again) == repr(tailed)
    assert schedules.make_schedule("adaptive:lr=0.2,tail=64").rule == tailed.rule


@pytest.mark.parametrize("kind", [schedules.adaptive, schedules.exponential])
@pytest.mark.parametrize("tail", [0.5, -1, float("inf"), True, "64"])
def test_a_bad_tail_is_refused(kind, tail):
    with pytest.raises(ValueError, match=f"{kind.__name__} schedule: tail must be 0"):
        kind(0.2, tail=tail)


def test_the_exponential_tail_keeps_the_steps_up_to_it_and_decays_harmonically_past_it():
    plain, tailed = schedules.exponential(0.35, 0.87), schedules.exponential(0.35, 0.87, tail=64)
    steps, before = tailed.etas(1, 1001, dtype=torch.float64), plain.etas(1, 1001, dtype=torch.float64)
    t = torch.arange(1, 1001, dtype=torch.float64)
    assert torch.equal(steps[:64], before[:64])
    assert torch.allclose(steps[64:], 0.35 * 0.87 ** 63 * 64 / t[64:], rtol=1e-12, atol=0)
    assert float(steps[64:].sum()) > 10 * float(before[64:].sum())  # the reach past it (unbounded as T grows)
    # A slow decay stays geometric while its steps are the larger; the floor and pow2 apply on top.
    slow = schedules.exponential(0.15, 0.99, tail=8).etas(1, 300, dtype=torch.float64)
    geometric = schedules.exponential(0.15, 0.99).etas(1, 300, dtype=torch.float64)
    assert torch.equal(slow[:60], geometric[:60]) and bool((slow >= geometric).all())
    rounded = schedules.exponential(0.3, 0.8, pow2=True, tail=4).etas(1, 50, dtype=torch.float64)
    assert bool((torch.log2(rounded) == torch.log2(rounded).round()).all())
    # The spec, a string and a dict rebuild it (saved networks, the CLI); old specs are unchanged.
    assert tailed.spec() == {"name": "exponential", "lr": 0.35, "decay": 0.87, "tail": 64}
    assert torch.equal(schedules.make_schedule(tailed.spec()).etas(1, 300), tailed.etas(1, 300))
    assert torch.equal(schedules.make_schedule("exponential:lr=0.35,decay=0.87,tail=64").etas(1, 300),
                       tailed.etas(1, 300))
    assert plain.spec() == {"name": "exponential", "lr": 0.35, "decay": 0.87}


def test_past_its_tail_an_exponential_network_keeps_moving(trained_digits_cnn, digits_train):
    """Geometric steps run out (``exponential(0.1, 0.87)`` reaches 0.77 in all): the digits CNN stops at a
    relative error of 0.33 from T=64 on. With the harmonic tail from T=16 it keeps moving (0.012 at T=256 when
    this was written) and nothing up to the tail changes."""
    x = digits_train.tensors[0][:64]
    errors, outputs = {}, {}
    for tail in (0, 16):
        snn = signgd.convert(trained_digits_cnn, x, schedule=schedules.exponential(0.1, 0.87, tail=tail),
                             encoding="analog")
        with torch.inference_mode():
            ann, out = snn.ann(x), snn(x, T=[16, 64, 256])
        outputs[tail] = out[16]
        errors[tail] = {t: float((out[t] - ann).norm() / ann.norm()) for t in out}
    assert torch.equal(outputs[0], outputs[16])
    assert errors[0][256] > 0.99 * errors[0][64] > 0.2  # stopped
    assert errors[16][256] < 0.1 * errors[0][256] and errors[16][256] < errors[16][64] < errors[16][16]


def test_past_its_tail_an_adaptive_network_keeps_settling(trained_digits_cnn, digits_train):
    """Without the tail a settled neuron's gain rests at MIN_GAIN and the error stays at the floor from T=64 on;
    with it the error keeps falling, and nothing before the tail changes (the engine's C scan and torch loop
    alike: SIGNGD_KERNEL picks either, tests/kernels)."""
    x = digits_train.tensors[0][:64]
    errors, outputs = {}, {}
    for tail in (0, 32):
        snn = signgd.convert(trained_digits_cnn, x, schedule=schedules.adaptive(0.2, tail=tail), encoding="analog")
        with torch.inference_mode():
            ann, out = snn.ann(x), snn(x, T=[32, 64, 256])
        outputs[tail] = out[32]
        errors[tail] = {t: float((out[t] - ann).norm() / ann.norm()) for t in out}
    assert torch.equal(outputs[0], outputs[32])
    assert errors[0][256] > 0.5 * errors[0][64]  # the floor: no better past T=64
    assert errors[32][256] < 0.3 * errors[0][256] and errors[32][256] < 0.3 * errors[32][32]


def test_receivers_rebuild_the_decaying_floor_from_the_step_alone(digits_train, trained_digits_cnn):
    """The event-driven reference (each receiver rebuilds its senders' gains from their spikes and the step
    number) gives the engine's spikes and outputs past the tail."""
    from signgd.event_driven import simulate_spikes
    x = digits_train.tensors[0][:8].double()
    snn = signgd.convert(copy.deepcopy(trained_digits_cnn).double(), x, schedule=schedules.adaptive(0.2, tail=6),
                         encoding="analog")
    T = 30
    ref_out, ref_spikes, _ = simulate_spikes(snn, x, T)
    result = snn.simulate(x, list(range(1, T + 1)), stats=True)
    assert torch.allclose(torch.stack([result.outputs[t] for t in range(1, T + 1)]), ref_out, atol=1e-9)
    for name, s in ref_spikes.items():
        assert torch.equal(result.spikes[name], s.flatten(1).sum(1).double()), name


def test_tuned_candidates_carry_their_tails(trained_digits_cnn, digits_train):
    """Adaptive candidates: the gain floor decays from twice the longest T; exponential ones are continued by gains
    from the longest T on (``tuning.continued``), their floor decaying from twice it: the scored steps stay."""
    x = digits_train.tensors[0][:40]
    snn = signgd.convert(trained_digits_cnn, x, schedule="exponential", encoding="analog")
    result = tune_schedule(snn, x, T=[4, 8], screen=False)
    schedules_ = [c.schedule for c in result.candidates]
    assert {s.name for s in schedules_} == {"adaptive"}
    assert {(s.params["start"], s.params["tail"], s.params["pow2"], s.params["grow"], s.params["shrink"])
            for s in schedules_} == {(8, 16, True, 1.2, 0.5)}
    assert sum("decay" in s.params for s in schedules_) == 17 and sum("early_grow" in s.params for s in schedules_) == 5
    assert result.paper.schedule.params == {"lr": 0.15, "grow": 1.2, "shrink": 0.5, "pow2": True, "tail": 16,
                                            "start": 8, "decay": 0.95}


def test_one_class_on_every_sample_ranks_the_candidates_by_error(trained_digits_cnn, digits_train):
    """When the ANN puts every tuning sample in one class, a network that barely moves agrees as well as one
    that tracks; the relative error ranks them instead (and the table says so)."""
    images, labels = digits_train.tensors
    x = images[labels == 3][:24]
    snn = signgd.convert(trained_digits_cnn, images[:64], schedule="exponential", encoding="analog")
    with torch.inference_mode():
        assert snn.ann(x).argmax(-1).unique().numel() == 1
    result = tune_schedule(snn, x, T=[4, 8], screen=False)
    errors = [c.error for c in result.candidates]
    assert result.by_error and errors == sorted(errors) and "ranked by the relative error" in result.table()
    assert result.best.error == min(errors)
    # Samples of several classes: the arg-max agreement ranks first, as before.
    mixed = tune_schedule(snn, images[:24], T=[4, 8], screen=False)
    assert not mixed.by_error and [c.key for c in mixed.candidates] == sorted(c.key for c in mixed.candidates)
