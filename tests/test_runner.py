"""The one run loop (``signgd.runner``) and the data forms it reads (``signgd.batches``)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import signgd
from signgd import batches, runner
from signgd.errors import CalibrationError


@pytest.fixture(scope="module")
def snn(trained_digits_cnn, digits_train):
    return signgd.convert(trained_digits_cnn, digits_train.tensors[0][:200], schedule="exponential")


class _Recorder(runner.Probe):
    """Records what a probe is shown: batches, every layer's chunks, spike counts."""

    stats = True

    def __init__(self):
        self.batches, self.layers, self.spikes = [], {}, 0.0

    def layer(self, name, t0, out):
        self.layers.setdefault(name, []).append((t0, out.shape[0], out.shape[1]))

    def after_batch(self, snn, x, result):
        self.batches.append(x.shape[0])
        self.spikes += sum(float(v.sum()) for v in result.spikes.values())

    def totals(self):
        return {"spikes": torch.tensor([self.spikes], dtype=torch.float64)}, {}

    def finish(self, totals):
        self.total_spikes = float(totals["spikes"][0])


def test_a_probe_sees_every_batch_and_every_step_of_every_layer_and_counts_stay_those_of_evaluate(snn, digits_test):
    x, y = digits_test.tensors
    probe = _Recorder()
    counts = runner.run(snn, (x, y), [4, 16], batch_size=64, limit=150, probe=probe)
    assert probe.batches == [64, 64, 22] and counts.n == 150
    for name in snn.neurons:  # each batch whole, its steps 1..16 covered once, in order
        per_batch = []
        for t0, tc, b in probe.layers[name]:
            if t0 == 1:
                per_batch.append([])
            per_batch[-1].append((t0, tc, b))
        assert [chunks[0][2] for chunks in per_batch] == probe.batches
        for chunks in per_batch:
            assert [t0 for t0, _, _ in chunks] == [1 + sum(tc for _, tc, _ in chunks[:i]) for i in range(len(chunks))]
            assert sum(tc for _, tc, _ in chunks) == 16 and {b for _, _, b in chunks} == {chunks[0][2]}
    assert probe.total_spikes == probe.spikes > 0
    report = signgd.evaluate(snn, (x, y), [4, 16], batch_size=64, limit=150)
    assert signgd.EvaluationReport.from_counts(*counts) == report


def test_every_labelled_form_gives_the_same_batches(digits_test):
    x, y = digits_test.tensors[0][:70], digits_test.tensors[1][:70]
    forms = [(x, y), [x, y], TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=32),
             [(x[:32], y[:32]), (x[32:64], y[32:64]), (x[64:], y[64:])]]
    for data in forms:
        got = list(batches.labelled(data, 32))
        assert [len(b) for b, _ in got] == [32, 32, 6]
        assert torch.equal(torch.cat([b for b, _ in got]), x) and torch.equal(torch.cat([c for _, c in got]), y)
        assert batches.count(data, None) in (70, 3) and batches.count(data, 50) in (50, 3)
    assert [len(b) for b, _ in batches.take(batches.labelled((x, y), 32), 40)] == [32, 8]


def test_unlabelled_forms_and_their_refusals(digits_test):
    x = digits_test.tensors[0][:70]
    assert [len(b) for b in batches.items(x, 32)] == [32, 32, 6]
    assert [len(b) for b in batches.items([x[:10], x[10:20]], 32)] == [10, 10]  # two batches, not (x, y)
    with pytest.raises(CalibrationError, match="calibration tensor of shape \\(5,\\) has no batch dimension"):
        list(batches.items(torch.zeros(5), 4, CalibrationError, "calibration"))
    with pytest.raises(CalibrationError, match="calibration data must be a tensor, Dataset or iterable"):
        list(batches.items(3, 4, CalibrationError, "calibration"))
    with pytest.raises(ValueError, match="inputs and labels differ in length: 70 vs 69"):
        list(batches.labelled((x, digits_test.tensors[1][:69]), 32))
    with pytest.raises(ValueError, match="needs labelled data"):
        list(batches.labelled(x, 32))
