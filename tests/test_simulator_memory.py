"""The simulator's memory-saving execution: batch slices, folded steps, neurons writing over their
inputs. Each must leave the numbers as the plain whole-batch simulation computes them."""
import pytest
import torch
from torch import nn

import signgd
from signgd import models, simulator


def _net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 2 * 2, 10))
    model[1].running_mean.uniform_(-0.2, 0.2)
    return model.eval()


def _resnet():
    torch.manual_seed(0)
    return models.SmallResNet(widths=(4, 8, 8)).eval()


class _Reuse(nn.Module):
    """A ReLU whose input is read again after it (by a second branch): it must not be overwritten."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)
        self.skip = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        a = self.conv(x)
        h = torch.relu(a)
        return self.head(h.flatten(1)) + self.skip(a.flatten(1))


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.rand(12, 1, 8, 8)


def _close(a, b, rel=1e-5):
    return (a - b).abs().max() <= rel * b.abs().max()


@pytest.mark.parametrize("encoding", ["float", "stochastic"])
@pytest.mark.parametrize("dynamics", ["signgd", "subgradient"])
@pytest.mark.parametrize("make", [_net, _resnet])
def test_batch_slices_equal_the_whole_batch(x, make, dynamics, encoding):
    snn = signgd.convert(make(), x, dynamics=dynamics, encoding=encoding)
    whole = snn.simulate(x, [5, 12], chunk=1, stats=True)
    for bc, chunk in [(5, 7), (1, 12), (7, None), (None, None)]:
        got = snn.simulate(x, [5, 12], chunk=chunk, batch_chunk=bc, stats=True)
        for t in (5, 12):
            assert got.outputs[t].shape == whole.outputs[t].shape
            assert _close(got.outputs[t], whole.outputs[t]), (bc, chunk, t)
        assert set(got.spikes) == set(whole.spikes) and got.neurons == whole.neurons
        assert got.batch_size == whole.batch_size


def test_spike_counts_of_slices_add_up_exactly(x):
    # float64: no rounding differences between batch shapes can flip a spike
    snn = signgd.convert(_resnet().double(), x.double())
    whole = snn.simulate(x.double(), 20, chunk=1, stats=True)
    sliced = snn.simulate(x.double(), 20, chunk=4, batch_chunk=5, stats=True)
    for name in whole.spikes:
        assert torch.equal(sliced.spikes[name], whole.spikes[name]), name
    assert sliced.firing_rates() == whole.firing_rates()


def _spy_ownership(monkeypatch):
    """Record each neuron's ownership decision; return the log."""
    decisions = []
    real = simulator._ChunkInterpreter._owned

    def spy(self, n, args):
        owned = real(self, n, args)
        decisions.append((n.target, owned))
        return owned

    monkeypatch.setattr(simulator._ChunkInterpreter, "_owned", spy)
    return decisions


@pytest.mark.parametrize("make", [_net, _resnet, _Reuse])
def test_overwriting_inputs_changes_nothing(x, make, monkeypatch):
    snn = signgd.convert(make().eval(), x, normalize="all")
    decisions = _spy_ownership(monkeypatch)
    fast = snn(x, T=[3, 16], chunk=4)
    if make is not _Reuse:
        assert any(owned for _, owned in decisions), "no neuron was allowed to overwrite its input"
    monkeypatch.setattr(simulator._ChunkInterpreter, "_owned", lambda self, n, args: False)
    plain = snn(x, T=[3, 16], chunk=4)
    for t in (3, 16):
        assert torch.equal(fast[t], plain[t])


def test_an_input_read_later_is_not_overwritten(x, monkeypatch):
    snn = signgd.convert(_Reuse().eval(), x)
    decisions = _spy_ownership(monkeypatch)
    snn(x, T=4, chunk=2)
    assert decisions and not any(owned for _, owned in decisions)


def test_the_caller_input_is_never_written(x):
    for encoding in ("float", "analog", "spike"):
        snn = signgd.convert(nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval(), x - 0.5,
                             encoding=encoding)
        xin = x - 0.5
        before = xin.clone()
        snn(xin, T=8, chunk=4, batch_chunk=5)
        assert torch.equal(xin, before)


def test_plan_folds_steps_into_slices_of_the_batch(x):
    snn = signgd.convert(_net(), x)
    big = torch.zeros(256, 1, 8, 8)
    assert snn.plan(big, 64) == (16, 16)       # 256 inputs per call: 16 samples x 16 steps
    assert snn.plan(big[:1], 64) == (1, 64)    # one sample: every step at once
    assert snn.plan(big[:4], 8) == (4, 8)      # small batch and T: everything at once
    assert snn.plan(big, 4) == (64, 4)         # few steps: more samples per call
    assert snn.plan(big, 64, batch_chunk=128) == (128, 2)
    # a memory budget below 256 inputs' activations shrinks the calls
    tight = signgd.convert(_net(), x, memory_budget=snn.values_per_sample * 4 * 32)
    bc, chunk = tight.plan(big, 64)
    assert bc * chunk <= 32 and chunk >= 1
    # the planned run and the whole-batch time-major run agree
    assert _close(snn(big[:40] + x[0], T=20), snn(big[:40] + x[0], T=20, chunk=1))
