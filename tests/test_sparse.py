"""The sparse neuron (``dynamics="sparse"``): signed spikes, silent within ``tolerance * eta_t`` of its target.

By hand on one neuron; the event-driven exchange of signed spikes gives the engine's spikes and outputs
exactly; save/load and the command line keep it; the schedule's floor and powers of two; the cost
rules that go with them; ``preset="low-energy"`` and the energy tuning, checked against the report's
count; and the one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
from model_helpers import small_cnn as _cnn

import signgd
from signgd import energy_tuning, models
from signgd.cli import main
from signgd.costs import StepCounter, energy_per_sample, event_costs, neuron_work, op_costs
from signgd.event_driven import simulate_spikes
from signgd.kernels import sparse_scan
from signgd.report import make_report
from signgd.schedules import exponential, is_power_of_two


def test_one_neuron_by_hand():
    """Target 0.7, steps 0.5, 0.25, 0.125, 0.0625, tolerance 0.5: up (0.5), silent (gap 0.2 < 0.125? no:
    0.2 > 0.125 -> up to 0.75), then |0.7 - 0.75| = 0.05 < 0.0625 silent, < 0.03125 no -> down."""
    target = torch.full((4, 1), 0.7, dtype=torch.float64)
    etas = torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float64)
    y, spikes = torch.zeros(1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    out = sparse_scan(target, y, etas, etas * 0.5, spikes=spikes)
    assert out.flatten().tolist() == [0.5, 0.75, 0.75, 0.6875]
    assert spikes.tolist() == [1, 1, 0, 1]


def test_a_relu_that_is_off_never_fires_and_a_settled_neuron_falls_silent():
    target = torch.zeros(50, 3)
    target[:, 1] = 0.4  # on, constant
    y, spikes = torch.zeros(3), torch.zeros(50, dtype=torch.float64)
    etas = exponential(0.3, 0.8, floor=1 / 64, pow2=True).etas(1, 51)
    out = sparse_scan(target, y, etas, etas * 0.5, spikes=spikes)
    assert out[:, 0].abs().max() == 0 and out[:, 2].abs().max() == 0  # off: never moved, never fired
    assert abs(float(out[-1, 1]) - 0.4) <= 0.5 / 64  # settled within tolerance * floor
    assert spikes[20:].sum() == 0  # and silent ever after


@pytest.mark.parametrize("arch,start,dynamics", [
    ("cnn", None, "sparse"), ("resnet", None, "sparse"), ("vit", None, "sparse"), ("vit", "mean", "sparse"),
    ("cnn", "mean", "sparse"), ("resnet", "active", "sparse"),
    ("cnn", None, "graded"), ("resnet", None, "graded"), ("vit", None, "graded"), ("mixer", "mean", "graded")])
def test_the_event_driven_exchange_of_signed_spikes_gives_the_engines_spikes_and_outputs(arch, start, dynamics):
    """Also where estimates start at their calibration mean (by default the variance neurons and the mostly
    positive ReLU/max elements; every neuron with ``start="mean"``): the receivers then start from
    ``x_0 = A(y_0)``. The graded neuron's spikes carry powers of two: each receiver adds them (max pooling
    included: its step's boundaries sit at no short binary number, ``kernels.reference.graded_step``)."""
    torch.manual_seed(1)
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    model = {"cnn": _cnn, "resnet": lambda: models.SmallResNet(widths=(4, 6, 8)).eval(),
             "vit": lambda: models.tiny_vit(image_size=8).eval(),
             "mixer": lambda: models.tiny_mixer(image_size=8).eval()}[arch]().double()
    schedule = ("exponential:lr=0.3,decay=0.87,floor=0.02,pow2=1" if dynamics == "sparse"
                else "exponential:lr=0.0078125,decay=1.0")
    snn = signgd.convert(model, x, dynamics=dynamics, schedule=schedule, tolerance=0.75, start=start)
    started = [n for n, m in snn.neurons.items() if not m.starts_at_zero]
    assert started
    if start is None and arch == "vit":  # "active": the variance neurons (no ReLU here)
        assert {snn.neurons[n].target for n in started} == {"square"}
    T = 30
    ref_out, ref_spikes, _ = simulate_spikes(snn, x, T)
    result = snn.simulate(x, list(range(1, T + 1)), stats=True)
    fast_out = torch.stack([result.outputs[t] for t in range(1, T + 1)])
    assert torch.allclose(fast_out, ref_out, atol=1e-9)
    assert set(result.spikes) == set(ref_spikes)
    for name, s in ref_spikes.items():
        assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert torch.equal(result.spikes[name], (s != 0).flatten(1).sum(1).double()), name
    assert sum(float(v.abs().sum()) for v in ref_spikes.values()) > 0


def test_layer_major_equals_time_major_and_float32_follows_float64():
    torch.manual_seed(2)
    x = torch.rand(5, 1, 8, 8)
    snn = signgd.convert(_cnn(), x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.8")
    a, b = snn(x, T=[5, 20], chunk=1), snn(x, T=[5, 20], chunk=20)
    for t in (5, 20):
        assert torch.equal(a[t], b[t])


def test_save_and_load_keep_the_tolerance_and_the_schedule(tmp_path):
    torch.manual_seed(3)
    x = torch.rand(6, 1, 8, 8)
    snn = signgd.convert(_cnn(), x, dynamics="sparse", schedule=exponential(0.5, 0.87, floor=0.02, pow2=True),
                         tolerance=0.75)
    snn.save(tmp_path / "snn.pt")
    back = signgd.load(tmp_path / "snn.pt")
    assert back.settings["tolerance"] == 0.75 and back.settings["dynamics"] == "sparse"
    assert repr(back.schedule) == repr(snn.schedule) and is_power_of_two(back.schedule)
    assert torch.equal(back(x, T=12), snn(x, T=12))


def test_estimates_start_at_the_calibration_mean_and_save_and_load_keep_it(tmp_path):
    """``start``: the LayerNorm variance (square) neurons under ``"variance"``, and under the sparse default
    ``"active"`` (always positive); every neuron with ``"mean"``, none for the binary neuron unless asked; kept
    by save/load; refused where it has no meaning."""
    torch.manual_seed(5)
    x = torch.rand(6, 1, 8, 8)
    vit = models.tiny_vit(image_size=8).eval()
    sparse = signgd.convert(vit, x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.8", start="variance")
    squares = {n for n, m in sparse.neurons.items() if m.target == "square"}
    assert squares and {n for n, m in sparse.neurons.items() if not m.starts_at_zero} == squares
    assert sparse.settings["start"] == "variance"
    active = signgd.convert(vit, x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.8")
    assert active.settings["start"] == "active"  # the default; no ReLU in the ViT: the variance neurons only
    assert {n for n, m in active.neurons.items() if not m.starts_at_zero} == squares
    assert all(torch.equal(active.neurons[n].start, sparse.neurons[n].start) for n in squares)
    name = next(iter(squares))
    with torch.no_grad():
        ann_out = {}
        hook = sparse.neurons[name].register_forward_hook(lambda m, i, o: ann_out.setdefault("v", o))
        sparse.ann(x)
        hook.remove()
    assert torch.allclose(sparse.neurons[name].start, ann_out["v"].mean(0), rtol=1e-5, atol=1e-7)
    binary = signgd.convert(vit, x, schedule="exponential")
    assert all(m.starts_at_zero for m in binary.neurons.values()) and "start" not in binary.settings
    every = signgd.convert(vit, x, schedule="exponential", start="mean")
    assert not any(m.starts_at_zero for m in every.neurons.values() if m.target != "max")
    every.save(tmp_path / "snn.pt")
    back = signgd.load(tmp_path / "snn.pt")
    assert back.settings["start"] == "mean" and torch.equal(back(x, T=6), every(x, T=6))
    with pytest.raises(ValueError, match="unknown start"):
        signgd.convert(vit, x, start="median")
    with pytest.raises(ValueError, match="leave start out"):
        signgd.convert(_cnn(), x, dynamics="subgradient", start="mean")


def test_active_start_takes_the_mean_only_where_the_output_was_mostly_positive():
    """``start="active"``: each element starts at its calibration mean where its output was positive on at least
    ``ACTIVE_SHARE`` of the calibration samples, else at 0 (so a mostly-off ReLU starts exact)."""
    from signgd.options import ACTIVE_SHARE
    torch.manual_seed(6)
    x = torch.rand(40, 1, 8, 8)
    snn = signgd.convert(_cnn(), x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.8", start="active")
    assert snn.settings["start"] == "active"
    checked = 0
    for name, neuron in snn.neurons.items():
        if neuron.target != "relu":
            continue
        with torch.no_grad():
            seen = {}
            hook = neuron.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
            snn.ann(x)
            hook.remove()
        out = seen["out"]
        share = out.gt(0).double().mean(0)
        expected = torch.where(share >= ACTIVE_SHARE, out.mean(0), torch.zeros_like(out[0]))
        start = neuron.start.expand_as(expected)
        assert torch.allclose(start, expected, rtol=1e-5, atol=1e-7), name
        checked += int((share >= ACTIVE_SHARE).any()) + int((share < ACTIVE_SHARE).any())
    assert checked >= 2  # both kinds of element were seen


def test_the_schedule_floor_and_powers_of_two():
    s = exponential(0.3, 0.8, floor=0.02, pow2=True)
    etas = s.etas(1, 40, dtype=torch.float64)
    mantissa, _ = torch.frexp(etas)
    assert torch.all(mantissa == 0.5) and float(etas.min()) == 2 ** -6  # 0.02 rounds to 1/64
    assert exponential(0.3, 0.8, floor=0.05).etas(30, 31).item() == pytest.approx(0.05)
    assert exponential().spec() == {"name": "exponential", "lr": 0.15, "decay": 0.95}  # old specs unchanged
    assert signgd.schedules.make_schedule(s.spec()).spec() == s.spec()
    with pytest.raises(ValueError, match="floor"):
        exponential(0.3, 0.8, floor=0.5)


def test_power_of_two_steps_and_homogeneous_targets_make_the_neurons_multiply_free():
    torch.manual_seed(4)
    x = torch.rand(4, 1, 8, 8)
    plain = signgd.convert(_cnn(), x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.8")
    shifted = signgd.convert(_cnn(), x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.8,pow2=1")
    for name, costs in event_costs(plain).items():
        assert costs["received"] == op_costs.RECEIVE_SPARSE
        assert event_costs(shifted)[name]["received"] == (sum(op_costs.RECEIVE_SPARSE), 0)
        if name != "readout":  # relu and max: 1 / scale folds into the weights
            assert costs["evaluated"][1] == 0
    binary = signgd.convert(_cnn(), x, schedule="exponential:lr=0.3,decay=0.8,pow2=1")
    assert all(mac == 0 for name, (ac, mac) in neuron_work(binary).items() if name != "input")


def test_the_report_counts_sparse_neurons_per_event_and_matches_the_tuners_count(trained_digits_cnn, digits_test):
    x = digits_test.tensors[0][:40]
    snn = signgd.convert(trained_digits_cnn, x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.87")
    rep = make_report(snn, (x, digits_test.tensors[1][:40]), [4, 12], batch_size=40, progress=False)
    counter = StepCounter(snn, 12)
    counter.start(x)
    snn.simulate(x, 12, probe=counter.layer)
    counter.finish_batch()
    energy = energy_per_sample(snn, counter, x.shape[0])
    assert rep["energy"]["energy_pj"] == pytest.approx([float(energy[3]), float(energy[11])], rel=1e-12)
    neurons = [row for row in rep["energy"]["layers"] if row["kind"] == "neurons"]
    assert neurons and all(row["ac"][1] > row["ac"][0] for row in neurons)  # events add up over steps


@pytest.mark.parametrize("kwargs", [{}, {"dynamics": "graded"}, {"scale": "max"}, {"graded_mean": True}],
                         ids=["sparse-and-graded", "graded", "scale-max", "graded-mean"])
def test_preset_low_energy_picks_the_cheapest_network_that_agrees(trained_digits_cnn, digits_train, digits_test,
                                                                   monkeypatch, kwargs):
    """Among sparse and graded candidates (``dynamics="graded"``: graded ones only), the graded ones with the
    network's max scales and with its mean |f(x)| scales (unless a scale is given); ``graded_mean``: the mean-scaled
    graded candidates alone, so that the chosen network is one of them."""
    # a smaller grid than the preset's (16+3+3): the same code; layer windows settle past T=8 (test_windows.py)
    monkeypatch.setattr(energy_tuning, "ENERGY_DECAYS", (0.87,))
    monkeypatch.setattr(energy_tuning, "ENERGY_FLOORS", (1 / 32,))
    kwargs = dict(kwargs)
    if kwargs.pop("graded_mean", False):
        monkeypatch.setattr(energy_tuning, "ENERGY_GRADED_STEPS", ())
        monkeypatch.setattr(energy_tuning, "ENERGY_GRADED_MEAN_STEPS", (1 / 16, 1 / 32))
        kwargs["dynamics"] = "graded"
    dynamics = kwargs.get("dynamics")
    x = digits_train.tensors[0][:64]
    snn = signgd.convert(trained_digits_cnn, x, preset="low-energy", T=8, progress=False, **kwargs)
    kinds = [(c.dynamics, c.scale) for c in snn.tuning.candidates]
    n_max, n_mean = len(energy_tuning.ENERGY_GRADED_STEPS), 0 if "scale" in kwargs else \
        len(energy_tuning.ENERGY_GRADED_MEAN_STEPS)
    assert kinds == ([("sparse", "max")] * 4 if dynamics is None else []) + [("graded", "max")] * n_max \
        + [("graded", "mean")] * n_mean
    assert snn.settings["dynamics"] == snn.tuning.best.dynamics and snn.settings["encoding"] == "analog"
    assert snn.settings.get("scale", "max") == snn.tuning.best.scale
    assert snn.settings["tuned_for"] == 8
    result = snn.tuning
    best = result.best
    assert best.tolerance == snn.settings["tolerance"] and repr(best.schedule) == repr(snn.schedule)
    ok = [c for c in result.candidates if c.agreement >= result.min_agreement]
    assert ok and best.energy_ratio == min(c.energy_ratio for c in ok)
    assert "agreement" in result.table()
    # what the tuner counted is what the report counts on the same samples
    rep = make_report(snn, (x, digits_train.tensors[1][:64]), [8], batch_size=64, progress=False)
    assert rep["energy"]["energy_ratio_to_ann"][0] == pytest.approx(best.energy_ratio, rel=1e-9)
    test = make_report(snn, digits_test, [8], batch_size=256, progress=False)
    assert test["accuracy"]["snn"][0] >= test["accuracy"]["ann"] - 0.03


@pytest.mark.parametrize("kwargs,match", [
    ({"dynamics": "signgd", "tolerance": 0.5}, "tolerance is the sparse neuron"),
    ({"dynamics": "sparse", "tolerance": -1.0}, "tolerance must be"),
    ({"dynamics": "sparse", "schedule": "adaptive"}, "adaptive schedule steps signGD"),
    ({"dynamics": "if", "preset": "low-energy"}, "low-energy"),
    ({"dynamics": "sparse", "preset": "paper"}, "paper"),
])
def test_clear_errors(kwargs, match):
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match=match):
        signgd.convert(_cnn(), x, **kwargs)


def test_the_command_line_converts_sparse_and_evaluates_it(weights, tmp_path, capsys):
    out = tmp_path / "sparse"
    rc = main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--T", "8,16",
               "--limit", "60", "--calibration", "100", "--out", str(out), "--dynamics", "sparse",
               "--tolerance", "0.75", "--schedule", "exponential:lr=0.3,decay=0.87,floor=0.02,pow2=1", "--quiet"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["conversion"]["dynamics"] == "sparse"
    assert rep["settings"]["conversion"]["tolerance"] == 0.75
    assert rep["energy"]["energy_ratio_to_ann"][0] < rep["energy"]["energy_ratio_to_ann"][1]
    capsys.readouterr()
    rc = main(["evaluate", str(out / "snn.pt"), "--data", "digits", "--T", "8,16", "--limit", "60", "--quiet"])
    assert rc == 0 and "| 16 |" in capsys.readouterr().out
