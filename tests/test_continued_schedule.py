"""``adaptive(start=, decay=)``: an exponential schedule up to ``start``, per-neuron gains after it (what the tuner
gives its exponential candidates, ``tuning.continued``). The steps up to ``start`` are the exponential's bit for bit;
past it the network keeps converging; the engine (C scan and torch loop), the event-driven reference and the energy
count agree, and each step is priced as what it is (binary up to ``start``, adaptive after)."""
import pytest
import torch
import torch.nn as nn
from model_helpers import fast_count

import signgd
from signgd import schedules
from signgd.costs import neuron_work, neuron_work_steps
from signgd.event_driven import simulate_spikes
from signgd.report.event_count import count_operations
from signgd.tuning import continued


def test_the_steps_up_to_start_are_the_exponentials_and_the_base_step_after_it_is_the_last_one():
    hybrid, plain = schedules.adaptive(0.35, decay=0.87, start=16), schedules.exponential(0.35, 0.87)
    steps, before = hybrid.etas(1, 101, dtype=torch.float64), plain.etas(1, 101, dtype=torch.float64)
    assert torch.equal(steps[:16], before[:16]) and torch.all(steps[16:] == before[15])
    assert schedules.phases(hybrid, 20) == [(False, False, 1.0, 1.0)] * 16 + [(True, False, 1.2, 0.5)] * 4
    assert schedules.phases(plain, 3) == [(False, False, 1.0, 1.0)] * 3
    assert hybrid.rule == (1.2, 0.5, False, 0, 16, (1.0, 1.0))
    # With pow2 only the base step after start is rounded: the scored steps stay the exponential's.
    rounded = schedules.adaptive(0.35, decay=0.87, start=16, pow2=True).etas(1, 40, dtype=torch.float64)
    assert torch.equal(rounded[:16], before[:16]) and torch.all(rounded[16:] == 2.0 ** -5)  # 0.35*0.87**15 = 2**-4.53
    # Saved networks and the CLI rebuild it from its spec or a string.
    again = schedules.make_schedule(hybrid.spec())
    assert again.rule == hybrid.rule and torch.equal(again.etas(1, 50), hybrid.etas(1, 50))
    assert schedules.make_schedule("adaptive:lr=0.35,decay=0.87,start=16").rule == hybrid.rule
    assert hybrid.spec() == {"name": "adaptive", "lr": 0.35, "grow": 1.2, "shrink": 0.5, "start": 16, "decay": 0.87}
    # An adaptive early phase: its own gains, unrounded, then the rule's in powers of two.
    gentle = schedules.adaptive(0.35, pow2=True, start=16, early_grow=1.1, early_shrink=0.6)
    assert torch.all(gentle.etas(1, 17) == 0.35) and torch.all(gentle.etas(17, 40) == 0.25)
    assert schedules.phases(gentle, 17)[15:] == [(True, False, 1.1, 0.6), (True, True, 1.2, 0.5)]
    assert schedules.make_schedule(gentle.spec()).rule == gentle.rule == (1.2, 0.5, True, 0, 16, (1.1, 0.6))
    assert schedules.adaptive(0.2).spec() == {"name": "adaptive", "lr": 0.2, "grow": 1.2, "shrink": 0.5}


@pytest.mark.parametrize("kwargs,message", [
    ({"decay": 0.9}, "shape the steps up to start, and start is 0"),
    ({"early_grow": 1.1}, "shape the steps up to start, and start is 0"),
    ({"start": 4, "early_shrink": 2}, "shrink must be in"),
    ({"decay": 1.5, "start": 4}, "0 < decay <= 1"),
    ({"start": -1}, "start must be a whole number"),
    ({"start": 2.5}, "start must be a whole number"),
    ({"start": True}, "start must be a whole number"),
])
def test_bad_starts_and_decays_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        schedules.adaptive(0.2, **kwargs)


def test_up_to_start_the_network_is_the_exponential_one_and_past_it_keeps_converging(trained_digits_cnn,
                                                                                       digits_train):
    """``exponential(0.1, 0.87)`` reaches 0.77 in all: the digits CNN stops at a relative error of ~0.33 from T=64
    on. Continued by gains from T=16 it keeps converging, and nothing up to T=16 changes."""
    x = digits_train.tensors[0][:64]
    runs = {}
    for name, schedule in (("plain", schedules.exponential(0.1, 0.87)), ("continued", continued(16, 0.1, 0.87))):
        snn = signgd.convert(trained_digits_cnn, x, schedule=schedule, encoding="analog")
        with torch.inference_mode():
            ann, out = snn.ann(x), snn(x, T=list(range(1, 17)) + [64, 256])
        runs[name] = ({t: float((out[t] - ann).norm() / ann.norm()) for t in out}, out)
    (plain, plain_out), (cont, cont_out) = runs["plain"], runs["continued"]
    assert all(torch.equal(plain_out[t], cont_out[t]) for t in range(1, 17))
    assert plain[256] > 0.99 * plain[64] > 0.2  # stopped
    assert cont[256] < 0.02 * plain[256] and cont[256] < cont[64] < cont[16]


def _avg_cnn():
    """No max pooling: power-of-two steps put estimates on a dyadic grid, where a max neuron's ties are decided by
    the last bit of sums the engine and the reference round differently (``schedules``' docstring)."""
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


_EARLY = {"binary": {"decay": 0.8}, "adaptive": {"early_grow": 1.1, "early_shrink": 0.6}}


@pytest.mark.parametrize("kernel", ["torch", "auto"])
@pytest.mark.parametrize("pow2", [False, True])
@pytest.mark.parametrize("early", sorted(_EARLY))
def test_the_engine_gives_the_event_driven_spikes_and_outputs_across_start(kernel, pow2, early, monkeypatch):
    """The C scan and the torch loop (SIGNGD_KERNEL), in chunks that straddle start, against the reference in
    which each receiver rebuilds its senders' gains from their spikes and the step number; an early phase of
    binary neurons (exponential steps) or of gentle gains."""
    monkeypatch.setenv("SIGNGD_KERNEL", kernel)
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    snn = signgd.convert(_avg_cnn().eval().double(), x, encoding="analog",
                         schedule=schedules.adaptive(0.2, start=7, pow2=pow2, tail=20, **_EARLY[early]))
    T = 30
    ref_out, ref_spikes, _ = simulate_spikes(snn, x, T)
    result = snn.simulate(x, list(range(1, T + 1)), stats=True, chunk=5)
    assert torch.allclose(torch.stack([result.outputs[t] for t in range(1, T + 1)]), ref_out, atol=1e-9)
    for name, s in ref_spikes.items():
        assert torch.equal(result.spikes[name], s.flatten(1).sum(1).double()), name
    assert float(sum(s.sum() for s in result.spikes.values())) > 0


def _mlp():
    return nn.Sequential(nn.Linear(16, 12), nn.GELU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4))


@pytest.mark.parametrize("early", sorted(_EARLY))
def test_the_literal_count_equals_the_fast_one_across_start(early):
    torch.manual_seed(0)
    x = torch.rand(3, 16, dtype=torch.float64)
    snn = signgd.convert(_mlp().double().eval(), x, encoding="float",
                         schedule=schedules.adaptive(0.3, start=4, pow2=True, **_EARLY[early]))
    literal, fast = count_operations(snn, x, 10), fast_count(snn, x, 10)
    assert set(literal) == set(fast)
    for node in literal:
        assert torch.equal(literal[node], fast[node]), node
    # an adaptive early phase sends every move, unrounded: real changes, multiplies; after start only ACs
    ops = sum(fast.values())
    assert (float(ops[:4, 1].sum()) > float(ops[4:, 1].sum())) == (early == "adaptive")


@pytest.mark.parametrize("pow2", [False, True])
def test_the_energy_count_equals_the_literal_one_and_prices_each_step_as_what_it_is(pow2):
    torch.manual_seed(0)
    model = _mlp().double().eval()
    x = torch.rand(3, 16, dtype=torch.float64)
    T, start = 10, 4
    snn = signgd.convert(model, x, schedule=schedules.adaptive(0.3, decay=0.8, start=start, pow2=pow2),
                         encoding="float")
    literal, fast = count_operations(snn, x, T), fast_count(snn, x, T)
    assert set(literal) == set(fast)
    for node in literal:
        assert torch.equal(literal[node], fast[node]), node
    # Synapses: up to start only spikes reach them, priced as ACs; after it every move, a MAC unless a power of two.
    ops = sum(fast.values())  # [T, 2]
    binary = signgd.convert(model, x, schedule=schedules.exponential(0.3, 0.8), encoding="float")
    binary_ops = sum(fast_count(binary, x, T).values())
    assert torch.equal(ops[:start], binary_ops[:start])
    assert (float(ops[start:, 1].sum()) > float(binary_ops[start:, 1].sum())) != pow2
    # Neuron work: the binary neuron's up to start, the adaptive one's after it.
    steps = neuron_work_steps(snn, T)
    before, after = neuron_work(binary), neuron_work(snn)
    for name, rows in steps.items():
        assert rows[:start].tolist() == [list(before[name])] * start, name
        assert rows[start:].tolist() == [list(after[name])] * (T - start), name
    assert neuron_work(snn, phase=schedules.phases(snn.schedule, 1)[0]) == before


def test_a_saved_network_keeps_it_and_the_cli_takes_it(tmp_path, trained_digits_cnn, digits_train):
    from signgd.cli import main

    x = digits_train.tensors[0][:16]
    spec = "adaptive:lr=0.2,decay=0.9,start=8,pow2=1,tail=16"
    snn = signgd.convert(trained_digits_cnn, x, schedule=spec, encoding="analog")
    loaded = signgd.load(snn.save(tmp_path / "c.pt"))
    assert loaded.schedule.rule == snn.schedule.rule == (1.2, 0.5, True, 16, 8, (1.0, 1.0))
    with torch.inference_mode():
        assert torch.equal(loaded(x, T=20), snn(x, T=20))
    weights = tmp_path / "digits_cnn.pt"
    torch.save(trained_digits_cnn.state_dict(), weights)
    assert main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--T", "12",
                 "--limit", "20", "--calibration", "50", "--schedule", spec, "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert signgd.load(tmp_path / "r" / "snn.pt").schedule.rule == snn.schedule.rule
