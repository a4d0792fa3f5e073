"""What a tuned schedule does past the T it was tuned for (the adaptive tail), and how the tuner ranks
candidates when the ANN's arg-max cannot separate them (one class on every tuning sample)."""
import copy

import pytest
import torch

import signgd
from signgd import schedules
from signgd.tuning import tune_schedule


def test_the_adaptive_tail_keeps_the_steps_and_decays_the_gain_floor_past_it():
    plain, tailed = schedules.adaptive(0.2), schedules.adaptive(0.2, tail=64)
    assert torch.equal(plain.etas(1, 300, dtype=torch.float64), tailed.etas(1, 300, dtype=torch.float64))
    assert tailed.rule == (*plain.rule[:3], 64) and tailed.params["tail"] == 64
    floors = schedules.gain_floors(tailed.rule, 1, 257, dtype=torch.float64)
    t = torch.arange(65, 257, dtype=torch.float64)
    assert torch.all(floors[:64] == schedules.MIN_GAIN)
    assert torch.allclose(floors[64:], schedules.MIN_GAIN * 64 / t, rtol=1e-15, atol=0)
    assert torch.all(schedules.gain_floors(plain.rule, 1, 257) == torch.tensor(schedules.MIN_GAIN))
    # Power-of-two steps keep their constant power-of-two base; the tail changes only where gains may rest.
    pow2 = schedules.adaptive(0.2, pow2=True, tail=16)
    assert torch.all(pow2.etas(1, 300, dtype=torch.float64) == 0.25) and pow2.rule == (1.2, 0.5, True, 16)
    # The spec, a string and a dict rebuild the same schedule (saved networks, the CLI).
    again = schedules.make_schedule(tailed.spec())
    assert again.rule == tailed.rule and repr(again) == repr(tailed)
    assert schedules.make_schedule("adaptive:lr=0.2,tail=64").rule == tailed.rule


@pytest.mark.parametrize("tail", [0.5, -1, float("inf"), True, "64"])
def test_a_bad_tail_is_refused(tail):
    with pytest.raises(ValueError, match="tail must be 0"):
        schedules.adaptive(0.2, tail=tail)


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


def test_tuned_adaptive_candidates_carry_twice_the_longest_T_as_their_tail(trained_digits_cnn, digits_train):
    x = digits_train.tensors[0][:40]
    snn = signgd.convert(trained_digits_cnn, x, schedule="exponential", encoding="analog")
    result = tune_schedule(snn, x, T=[4, 8], screen=False)
    tails = {c.schedule.params.get("tail") for c in result.candidates if c.schedule.name == "adaptive"}
    assert tails == {2 * 8}


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
