"""The graded neuron (``dynamics="graded"``): the sparse neuron whose spike also carries a power of two.

By hand on one neuron; it settles in a few spikes and falls silent; on the trained digits CNN it reaches the
ANN at a few steps for less energy than the sparse neuron; save/load and the command line keep it; the
one-line errors. (The event-driven equality, the C kernel and the energy count's literal check are the
sparse neuron's tests, run for both: tests/test_sparse.py, tests/kernels/test_sparse_kernel.py,
tests/test_energy.py.)"""
from __future__ import annotations

import json

import pytest
import torch
from model_helpers import small_cnn as _cnn

import signgd
from signgd.cli import main
from signgd.costs import event_costs, op_costs
from signgd.kernels import graded_step, sparse_scan
from signgd.report import make_report


def test_one_neuron_by_hand():
    """Target 0.7 from 0, band 1/32: steps 0.5 (gap 0.7), 0.125 (gap 0.2), 0.0625 (gap 0.075), then the gap
    0.0125 would take 2**-7 < 1/32: silent for ever."""
    target = torch.full((6, 1), 0.7, dtype=torch.float64)
    etas = torch.full((6,), 1 / 16, dtype=torch.float64)
    y, spikes = torch.zeros(1, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    out = sparse_scan(target, y, etas, etas * 0.5, spikes=spikes, graded=True)
    assert out.flatten().tolist() == [0.5, 0.625, 0.6875, 0.6875, 0.6875, 0.6875]
    assert spikes.tolist() == [1, 1, 1, 0, 0, 0]


def test_the_step_is_a_power_of_two_near_the_gap_and_at_least_halves_it():
    d = torch.cat([torch.logspace(-6, 3, 2001, dtype=torch.float64), torch.tensor([1.0, 0.25, 3.0, 0.995])])
    for sign in (1, -1):
        step = graded_step(sign * d)
        mantissa, _ = torch.frexp(step.abs())
        assert (mantissa == 0.5).all() and (torch.sign(step) == sign).all()
        assert (step.abs() <= 2 ** (1 / 64) * d).all() and ((d - step.abs()).abs() <= 0.5 * d).all()
    assert graded_step(torch.tensor([1.0, 1.02, 0.0, 0.995, 0.98])).tolist() == [1.0, 1.0, 0.0, 1.0, 0.5]


def test_on_the_trained_cnn_it_reaches_the_ann_in_a_few_steps_and_falls_silent(trained_digits_cnn, digits_train,
                                                                                digits_test):
    x = digits_train.tensors[0][:300]
    graded = signgd.convert(trained_digits_cnn, x, dynamics="graded")
    sparse = signgd.convert(trained_digits_cnn, x, dynamics="sparse", schedule="exponential:lr=0.3,decay=0.87")
    assert graded.settings["schedule"] == {"name": "exponential", "lr": 1 / 64, "decay": 1.0}
    assert "tuned_for" not in graded.settings
    steps = [4, 8, 16, 32]
    g = make_report(graded, digits_test, steps, batch_size=256, progress=False)
    s = make_report(sparse, digits_test, steps, batch_size=256, progress=False)
    ann = g["accuracy"]["ann"]
    assert g["accuracy"]["snn"][1] >= ann - 0.01  # T=8
    energy = g["energy"]["energy_ratio_to_ann"]
    assert energy[3] == energy[2]  # settled: nothing sent from T=16 to T=32
    assert energy[1] < s["energy"]["energy_ratio_to_ann"][1] and energy[3] < 1.0


def test_the_spike_costs_what_it_does():
    snn = signgd.convert(_cnn(), torch.rand(6, 1, 8, 8), dynamics="graded")
    unit = event_costs(snn)
    layer = next(iter(snn.neurons))
    assert unit[layer]["spike"] == op_costs.GRADED_SPIKE and unit[layer]["received"] == op_costs.RECEIVE_GRADED
    assert unit["readout"]["received"] == op_costs.RECEIVE_GRADED


def test_save_load_and_the_command_line(weights, tmp_path, capsys):
    x = torch.rand(6, 1, 8, 8)
    snn = signgd.convert(_cnn(), x, dynamics="graded", tolerance=0.75)
    snn.save(tmp_path / "snn.pt")
    back = signgd.load(tmp_path / "snn.pt")
    assert back.settings["dynamics"] == "graded" and back.settings["tolerance"] == 0.75
    assert torch.equal(back(x, T=6), snn(x, T=6))
    out = tmp_path / "graded"
    rc = main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--T", "4,8",
               "--limit", "60", "--calibration", "100", "--out", str(out), "--dynamics", "graded", "--quiet"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["conversion"]["dynamics"] == "graded"
    capsys.readouterr()


@pytest.mark.parametrize("kwargs,match", [
    ({"dynamics": "graded", "T": 8}, "not tuned for T"),
    ({"dynamics": "graded", "preset": "paper"}, "paper"),
    ({"dynamics": "graded", "schedule": "adaptive"}, "adaptive schedule steps signGD"),
    ({"dynamics": "graded", "tolerance": -0.5}, "tolerance must be"),
])
def test_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        signgd.convert(_cnn(), torch.rand(4, 1, 8, 8), **kwargs)
