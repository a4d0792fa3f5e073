"""A converted network runs on any batch size, or conversion refuses the model with a clear message.

The simulator folds time steps into dim 0, so a neuron input must keep each sample's rows together
there (``graph/batchdim.py``). timm's DaViT (window attention: one row per window of each sample)
converted and then failed on a batch of 4 after calibrating on 16 (issue 19); these small models
reproduce its window partition, and the two ways a model can break the rule.
"""
import pytest
import torch
from torch import nn

import signgd
from signgd.errors import ConversionError


class WindowAttention(nn.Module):
    """Self-attention inside 2x2 windows: the windows of a sample are consecutive rows of dim 0."""

    def __init__(self, c: int = 8, windows_first: bool = False, batch: int | None = None):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.head = nn.Linear(c * 16, 10)
        self.windows_first, self.batch = windows_first, batch

    def forward(self, x):
        x = torch.relu(self.stem(x))  # [B, C, 4, 4]
        B, C, H, W = x.shape
        if self.batch is not None:
            B = self.batch  # a batch size kept from __init__
        w = x.view(B, C, H // 2, 2, W // 2, 2)
        order = (2, 4, 0, 3, 5, 1) if self.windows_first else (0, 2, 4, 3, 5, 1)
        w = w.permute(*order).reshape(-1, 4, C)  # [windows, 4 positions, C]
        q, k, v = self.qkv(w).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-2, -1) * C ** -0.5, dim=-1)
        y = self.proj(a @ v)
        if self.windows_first:  # back to the batch first: the output is right, the neurons' rows are not
            y = y.reshape(H // 2, W // 2, B, 4 * C).permute(2, 0, 1, 3)
        return self.head(y.reshape(B, -1))


def _digits(n: int, seed: int = 0) -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None, ::2, ::2] / 16  # 4x4 images
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


@pytest.mark.parametrize("batch", [1, 3, 4, 40])
def test_window_attention_runs_on_any_batch_after_calibrating_on_16(batch):
    torch.manual_seed(0)
    model = WindowAttention().eval()
    snn = signgd.convert(model, _digits(16))
    x = _digits(batch, seed=1)
    with torch.no_grad():
        ann = model(x)
    assert torch.allclose(snn.ann(x), ann, atol=1e-5)
    outs = snn(x, T=[32, 256])
    err = {t: float((outs[t] - ann).norm() / ann.norm()) for t in outs}
    assert err[256] < err[32] and err[256] < 0.1, err
    # the batch in slices of 1 and 2 samples and 1 or 5 steps per chunk give the same outputs
    for batch_chunk, chunk in ((1, 5), (2, 1)):
        got = snn.simulate(x, T=[32], batch_chunk=batch_chunk, chunk=chunk).outputs[32]
        assert torch.allclose(got, outs[32], atol=1e-4)


def test_window_attention_spike_counts_cover_every_window():
    torch.manual_seed(0)
    snn = signgd.convert(WindowAttention().eval(), _digits(16))
    result = snn.simulate(_digits(3), T=4, stats=True)
    # the qkv matmul neuron holds 4 windows x 4 x 4 scores per sample
    sizes = set(result.neurons.values())
    assert 4 * 4 * 4 in sizes, sizes


def test_windows_ordered_before_the_batch_are_refused():
    torch.manual_seed(0)
    with pytest.raises(ConversionError, match="keep each sample's rows together in dim 0"):
        signgd.convert(WindowAttention(windows_first=True).eval(), _digits(16))


@pytest.mark.parametrize("kept", [16, 8])  # the calibration batch; the first 8 samples conversion checks on
def test_a_batch_size_kept_from_init_is_refused(kept):
    torch.manual_seed(0)
    model = WindowAttention(batch=kept).eval()
    with pytest.raises(ConversionError, match="fixes its batch size"):
        signgd.convert(model, _digits(16), batch_size=16)
