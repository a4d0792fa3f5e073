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
@pytest.mark.parametrize("dynamics", ["signgd", "subgradient", "if"])
@pytest.mark.parametrize("make", [_net, _resnet])
def test_batch_slices_equal_the_whole_batch(x, make, dynamics, encoding):
    snn = signgd.convert(make(), x, dynamics=dynamics, encoding=encoding,
        schedule=None if dynamics in ("subgradient", "if") else "exponential")
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
    snn = signgd.convert(_resnet().double(), x.double(), schedule="exponential")
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
        if n.op == "call_module":  # the neurons' decisions (element-wise ops ask too)
            decisions.append((n.target, owned))
        return owned

    monkeypatch.setattr(simulator._ChunkInterpreter, "_owned", spy)
    return decisions


@pytest.mark.parametrize("make", [_net, _resnet, _Reuse])
def test_overwriting_inputs_changes_nothing(x, make, monkeypatch):
    snn = signgd.convert(make().eval(), x, normalize="all", schedule="exponential")
    decisions = _spy_ownership(monkeypatch)
    fast = snn(x, T=[3, 16], chunk=4)
    if make is not _Reuse:
        assert any(owned for _, owned in decisions), "no neuron was allowed to overwrite its input"
    monkeypatch.setattr(simulator._ChunkInterpreter, "_owned", lambda self, n, args: False)
    plain = snn(x, T=[3, 16], chunk=4)
    for t in (3, 16):
        assert torch.equal(fast[t], plain[t])


def test_an_input_read_later_is_not_overwritten(x, monkeypatch):
    snn = signgd.convert(_Reuse().eval(), x, schedule="exponential")
    decisions = _spy_ownership(monkeypatch)
    snn(x, T=4, chunk=2)
    assert decisions and not any(owned for _, owned in decisions)


def test_the_caller_input_is_never_written(x):
    for encoding in ("float", "analog", "spike"):
        snn = signgd.convert(nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval(), x - 0.5,
                             encoding=encoding, schedule="exponential")
        xin = x - 0.5
        before = xin.clone()
        snn(xin, T=8, chunk=4, batch_chunk=5)
        assert torch.equal(xin, before)


def test_plan_folds_steps_into_slices_of_the_batch(x):
    snn = signgd.convert(_net(), x, schedule="exponential")
    big = torch.zeros(256, 1, 8, 8)
    assert snn.plan(big, 64) == (8, 16)        # 128 inputs per call: 8 samples x 16 steps
    assert snn.plan(big[:1], 64) == (1, 64)    # one sample: every step at once
    assert snn.plan(big[:4], 8) == (4, 8)      # small batch and T: everything at once
    assert snn.plan(big, 4) == (32, 4)         # few steps: more samples per call
    assert snn.plan(big, 64, batch_chunk=64) == (64, 2)
    # a memory budget below 128 inputs' activations shrinks the calls
    tight = signgd.convert(_net(), x, memory_budget=snn.values_per_sample * 4 * 32, schedule="exponential")
    bc, chunk = tight.plan(big, 64)
    assert bc * chunk <= 32 and chunk >= 1
    # the planned run and the whole-batch time-major run agree
    assert _close(snn(big[:40] + x[0], T=20), snn(big[:40] + x[0], T=20, chunk=1))


class _TokenMixer(nn.Module):
    """A residual stream in a transposed layout (as timm's MLP-Mixer keeps it), LayerNorms over it,
    token mixing through transposes, GELU, residual adds: the element-wise ops the simulator runs
    in place or writes contiguous."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 2, stride=2)
        self.norm1, self.norm2 = nn.LayerNorm(6), nn.LayerNorm(6)
        self.tok = nn.Sequential(nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 16))
        self.ch = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)                # [B, 16 tokens, 6], channels strided
        x = x + self.tok(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.ch(self.norm2(x)) * 0.5
        return self.head(x.mean(1))


@pytest.mark.parametrize("make", [_TokenMixer, _resnet])
def test_element_wise_ops_in_place_change_nothing(x, make, monkeypatch):
    torch.manual_seed(0)
    snn = signgd.convert(make().eval(), x, schedule="exponential")
    calls = []
    real = simulator._fits_in_place

    def spy(op, a, b):
        fits = real(op, a, b)
        calls.append(fits)
        return fits

    monkeypatch.setattr(simulator, "_fits_in_place", spy)
    fast = snn.simulate(x, [3, 16], chunk=4, batch_chunk=5, stats=True)
    assert any(calls), "no element-wise op ran in place"
    monkeypatch.setattr(simulator, "_fits_in_place", lambda op, a, b: False)
    monkeypatch.setattr(simulator._ChunkInterpreter, "_elementwise_neuron", lambda self, n: False)
    plain = snn.simulate(x, [3, 16], chunk=4, batch_chunk=5, stats=True)
    for t in (3, 16):
        assert torch.equal(fast.outputs[t], plain.outputs[t])
    for name in plain.spikes:
        assert torch.equal(fast.spikes[name], plain.spikes[name])


class _PostNormMixer(nn.Module):
    """The post-norm layout (benchmarks/speed.py's postnorm-mixer): a LayerNorm straight on the
    transposed patch embedding (its input is strided and read by nothing else), the residual
    stream contiguous after each LayerNorm, token mixing through transposes added back onto it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 2, stride=2)
        self.ln0, self.ln1, self.ln2 = nn.LayerNorm(6), nn.LayerNorm(6), nn.LayerNorm(6)
        self.tok = nn.Sequential(nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 16))
        self.ch = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        x = self.ln0(self.stem(x).flatten(2).transpose(1, 2))      # [B, 16 tokens, 6], channels strided
        x = self.ln1(x + self.tok(x.transpose(1, 2)).transpose(1, 2))
        x = self.ln2(x + self.ch(x))
        return self.head(x.mean(1))


def test_post_norm_mixer_fast_paths_change_nothing(x, monkeypatch):
    torch.manual_seed(0)
    snn = signgd.convert(_PostNormMixer().eval(), x, schedule="exponential")
    strided = []
    real = simulator._contiguous_result

    def spy(op, a, b):
        strided.append(not a.is_contiguous())
        return real(op, a, b)

    monkeypatch.setattr(simulator, "_contiguous_result", spy)
    fast = snn.simulate(x, [3, 16], chunk=4, batch_chunk=5, stats=True)
    # ln0's x - mean(x) is written contiguous rather than in place over its strided input
    assert any(strided), "no strided element-wise result was written contiguous for its neurons"
    monkeypatch.setattr(simulator, "_fits_in_place", lambda op, a, b: False)
    monkeypatch.setattr(simulator._ChunkInterpreter, "_elementwise_neuron", lambda self, n: False)
    monkeypatch.setattr(simulator._ChunkInterpreter, "_owned", lambda self, n, args: False)
    plain = snn.simulate(x, [3, 16], chunk=4, batch_chunk=5, stats=True)
    for t in (3, 16):
        assert torch.equal(fast.outputs[t], plain.outputs[t])
    assert set(fast.spikes) == set(plain.spikes) and len(plain.spikes) == 8
    for name in plain.spikes:
        assert torch.equal(fast.spikes[name], plain.spikes[name]), name


def test_in_place_only_where_torch_gives_the_same_layout():
    import operator

    fits = simulator._fits_in_place
    a = torch.randn(4, 6, 8).transpose(1, 2)                  # [4, 8, 6], not contiguous
    b = torch.randn(4, 8, 6)
    assert fits(operator.add, a, b.transpose(1, 2).contiguous().transpose(1, 2))  # same strides as a
    assert fits(operator.add, b, a)                            # b + a is laid out like b
    assert fits(operator.mul, b, torch.randn(6)) and fits(operator.truediv, b, 2.0)
    assert not fits(operator.add, b, torch.randn(2, 4, 8, 6))  # the result is larger than b
    assert not fits(operator.add, b, torch.randn(6, dtype=torch.float64))  # promotes
    assert not fits(operator.add, b.expand(2, 4, 8, 6), 1.0)   # overlapping memory
    assert not fits(operator.add, b, True) and not fits(operator.add, b, "x")


def test_an_element_wise_input_read_later_is_not_overwritten(x, monkeypatch):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(64, 10)

        def forward(self, x):
            h = self.a(x.flatten(1))
            g = h * 2.0               # h is read again below: not in place
            return torch.relu(g + 1.0) + h   # g + 1.0: in place (g is not read again)

    snn = signgd.convert(Twice().eval(), x, schedule="exponential")
    decisions = []
    real = simulator._ChunkInterpreter._owned

    def spy(self, n, args):
        owned = real(self, n, args)
        decisions.append((n.name, owned))
        return owned

    monkeypatch.setattr(simulator._ChunkInterpreter, "_owned", spy)
    fast = snn(x, T=12, chunk=4)
    assert dict(decisions)["mul"] is False and dict(decisions)["add"] is True
    monkeypatch.setattr(simulator, "_fits_in_place", lambda op, a, b: False)
    assert torch.equal(fast, snn(x, T=12, chunk=4))
