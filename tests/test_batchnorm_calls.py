"""Functional batch norm (timm's BatchNormAct2d calls F.batch_norm): in eval mode it becomes a BatchNorm
module, folded into the conv before it or kept as an affine op; in training form it is refused by name.
Also the LayerNorm-after-LayerNorm decomposition and the check's message naming modules."""
import functools

import pytest
import torch
import torch.nn.functional as F
from model_helpers import relerr as _relerr
from torch import nn

import signgd

# The schedule these tests were written for (the default tunes one across T since issue 17: slower).
_convert = functools.partial(signgd.convert, schedule="exponential")


def _random_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their init (1, 0), so that every BN matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            with torch.no_grad():
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.affine:
                    m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


class _ConvBnAct(nn.Module):
    """conv -> BatchNormAct2d (folded), then a residual add -> BatchNormAct2d (kept: nothing to fold into)."""

    def __init__(self):
        super().__init__()
        from timm.layers import BatchNormAct2d
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = BatchNormAct2d(4, act_layer=nn.ReLU)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = BatchNormAct2d(4, act_layer=nn.ReLU)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = self.bn1(self.conv(x))
        h = self.bn2(self.conv2(h) + h)
        return self.head(h.flatten(1))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().data[:64], dtype=torch.float32).view(-1, 1, 8, 8) / 16
    return x


def test_batchnormact_is_folded_or_kept_affine_and_the_snn_converges(digits, tmp_path):
    torch.manual_seed(0)
    model = _random_bn_statistics(_ConvBnAct())
    snn = _convert(model, digits)
    log = " ".join(snn.conversion_log)
    assert "made 2 eval-mode F.batch_norm calls BatchNorm modules" in log
    assert "folded 1 BatchNorm layers" in log  # bn2 reads an add: it stays as an affine module
    assert any(isinstance(m, nn.BatchNorm2d) for m in snn.graph_module.modules())
    with torch.no_grad():
        ref = model(digits)
    assert torch.allclose(snn.ann(digits), ref, atol=1e-5, rtol=1e-4)
    out = snn(digits, T=[32, 256])
    assert _relerr(out[256], ref) < _relerr(out[32], ref) and _relerr(out[256], ref) < 0.05
    snn.save(tmp_path / "bn.pt")
    assert torch.equal(signgd.load(tmp_path / "bn.pt").ann(digits), snn.ann(digits))


def test_functional_batch_norm_spellings_and_a_1d_input():
    torch.manual_seed(0)
    mean, var, w, b = torch.randn(5) * 0.2, torch.rand(5) + 0.5, torch.randn(5), torch.randn(5)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 5)
            self.register_buffer("mean", mean)
            self.register_buffer("var", var)
            self.w, self.b = nn.Parameter(w), nn.Parameter(b)

        def forward(self, x):
            h = F.batch_norm(self.fc(x), self.mean, self.var, self.w, self.b, False, 0.1, 1e-3)
            h = torch.batch_norm(torch.relu(h), None, None, self.mean, self.var, False, 0.1, 1e-5, False)
            return h

    model = Net().eval()
    x = torch.randn(16, 3)
    snn = _convert(model, x)
    assert torch.allclose(snn.ann(x), model(x), atol=1e-5)


def test_timm_mobilenetv3_with_batchnormact_converts_and_its_ann_equals_the_model():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = _random_bn_statistics(timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10))
    x = torch.randn(8, 3, 32, 32)
    snn = _convert(model, x)
    with torch.no_grad():
        ref = model(x)
    assert float((snn.ann(x) - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in snn.graph_module.modules())


def test_batch_norm_over_the_batch_is_refused_naming_the_module():
    from timm.layers import BatchNormAct2d
    model = nn.Sequential(nn.Conv2d(1, 3, 3), BatchNormAct2d(3, track_running_stats=False), nn.Flatten(),
                          nn.Linear(3 * 36, 2)).eval()
    with pytest.raises(signgd.UnsupportedOperationError) as info:
        _convert(model, torch.randn(4, 1, 8, 8))
    msg = str(info.value)
    assert "batch_norm (it normalizes over the batch" in msg and "1 (BatchNormAct2d)" in msg
    assert "\n" not in msg


def test_layernorm_fed_by_a_layernorm_is_decomposed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.LayerNorm(16), nn.Linear(16, 4)).eval()
    for ln in (model[1], model[2]):
        nn.init.normal_(ln.weight)
        nn.init.normal_(ln.bias)
    x = torch.randn(16, 8)
    snn = _convert(model, x)
    assert "decomposed 2 LayerNorm/RMSNorm" in " ".join(snn.conversion_log)
    assert sorted(n.target for n in snn.neurons.values()) == ["divide_sqrt"] * 2 + ["square"] * 2
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(snn.ann(x), ref, atol=1e-5)
    out = snn(x, T=[32, 256])
    assert _relerr(out[256], ref) < _relerr(out[32], ref)


def test_softmax_of_a_softmax_is_decomposed_twice():
    model = nn.Sequential(nn.Linear(4, 5), nn.Softmax(-1), nn.Softmax(-1)).eval()
    x = torch.randn(8, 4)
    snn = _convert(model, x)
    assert sorted(n.target for n in snn.neurons.values()) == ["divide", "divide", "exp", "exp"]
    assert torch.allclose(snn.ann(x), model(x), atol=1e-6)


def test_recurrent_layers_are_refused_in_one_line():
    class Seq(nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(self.fc(x))[0]

    for rnn in (nn.LSTM(4, 4, batch_first=True), nn.GRU(4, 4, batch_first=True), nn.RNN(4, 4, batch_first=True)):
        with pytest.raises(signgd.UnsupportedOperationError, match="recurrent layer has no spiking equivalent") as info:
            _convert(Seq(rnn).eval(), torch.randn(2, 5, 3))
        assert f"{type(rnn).__name__}: a recurrent layer" in str(info.value) and "\n" not in str(info.value)
