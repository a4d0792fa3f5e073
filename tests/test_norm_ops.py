"""GroupNorm, F.normalize and .norm() decompositions: the ANN side equals torch, the neurons are the
ones the design says (square, divide_sqrt, sqrt), the SNN converges, save/load and the energy count
take them; p != 2 and a norm over the batch are refused by name."""
import functools

import pytest
import torch
import torch.nn.functional as F
from model_helpers import Fn as _Fn
from model_helpers import relerr as _relerr
from torch import nn

import signgd
from signgd.costs import ann_costs, dense_synaptic_ops, neuron_work

# The schedule these tests were written for (the default tunes one across T since issue 17: slower).
_convert = functools.partial(signgd.convert, schedule="exponential")


def _converge(model, x, targets, tmp_path=None, atol=1e-5):
    """Converts, checks the ANN side and the neuron targets, the SNN's convergence, save/load and energy."""
    model = model.eval()
    with torch.no_grad():
        ref = model(x)
    snn = _convert(model, x, encoding="analog")  # "float" reaches 0.956 of the input: a 4% floor
    assert torch.allclose(snn.ann(x), ref, atol=atol, rtol=1e-4)
    assert sorted({n.target for n in snn.neurons.values()}) == sorted(targets)
    out = snn(x, T=[32, 256])
    assert _relerr(out[256], ref) < _relerr(out[32], ref) and _relerr(out[256], ref) < 0.02
    ann = ann_costs(snn)  # the energy count knows every op of the graph
    assert sum(mac for _, mac in ann.values()) > 0 and dense_synaptic_ops(snn) > 0
    assert all(ac >= 0 and mac >= 0 for ac, mac in [*ann.values(), *neuron_work(snn).values()])
    if tmp_path is not None:
        snn.save(tmp_path / "net.pt")
        assert torch.equal(signgd.load(tmp_path / "net.pt").ann(x), snn.ann(x))
    return snn


@pytest.fixture(scope="module")
def images():
    from sklearn.datasets import load_digits
    return torch.tensor(load_digits().data[:48], dtype=torch.float32).view(-1, 1, 8, 8) / 16


def test_group_norm_module_and_function_decompose_over_groups(images, tmp_path):
    torch.manual_seed(0)
    gn = nn.GroupNorm(2, 6)
    nn.init.normal_(gn.weight)
    nn.init.normal_(gn.bias)
    w = torch.randn(6)
    model = _Fn(lambda m, x: m.mods[2](F.group_norm(m.mods[1](m.mods[0](x)), 3, w, None, 1e-4).flatten(1)),
                nn.Conv2d(1, 6, 3), gn, nn.Linear(6 * 36, 4))
    snn = _converge(model, images, ["square", "divide_sqrt"], tmp_path)
    assert "decomposed 2 LayerNorm/RMSNorm/GroupNorm" in " ".join(snn.conversion_log)


def test_timm_groupnorm1_of_poolformer_on_a_1d_sequence():
    from timm.layers import GroupNorm1
    torch.manual_seed(0)
    model = _Fn(lambda m, x: m.mods[1](m.mods[0](x.transpose(1, 2))).mean(-1), nn.Identity(), GroupNorm1(5))
    model = nn.Sequential(nn.Linear(3, 5), model)
    _converge(model, torch.randn(12, 7, 3), ["square", "divide_sqrt"])


@pytest.mark.parametrize("dim", [1, -1])
def test_normalize_is_x_over_its_2_norm(dim, tmp_path):
    torch.manual_seed(0)
    model = _Fn(lambda m, x: m.mods[1](F.normalize(m.mods[0](x), dim=dim)), nn.Linear(4, 6), nn.Linear(6, 3))
    _converge(model, torch.randn(16, 4), ["square", "divide_sqrt"], tmp_path)


def test_a_zero_vector_normalizes_to_zero_as_in_torch():
    model = _Fn(lambda m, x: F.normalize(torch.relu(x) * 1.0, dim=1, eps=1e-6)).eval()
    x = torch.randn(8, 5)
    x[0] = -1.0  # relu: an all-zero row, divided by eps rather than by 0
    snn = _convert(model, x)
    assert torch.equal(snn.ann(x)[0], torch.zeros(5))
    assert torch.allclose(snn.ann(x), model(x), atol=1e-6)


@pytest.mark.parametrize("spelling", [
    lambda h: h.norm(p=2, dim=(2, 3), keepdim=True),
    lambda h: torch.norm(h, dim=(2, 3), keepdim=True),
    lambda h: torch.linalg.vector_norm(h, 2, dim=(2, 3), keepdim=True),
    lambda h: torch.linalg.norm(h, dim=(2, 3), keepdim=True),
])
def test_norm_spellings_are_sqrt_of_a_sum_of_squares(spelling, images):
    torch.manual_seed(0)
    model = _Fn(lambda m, x: m.mods[1]((m.mods[0](x) * spelling(m.mods[0](x))).flatten(1)),
                nn.Conv2d(1, 4, 3), nn.Linear(4 * 36, 3))
    _converge(model, images, ["square", "sqrt", "mul"])


def test_convnextv2_global_response_norm(tmp_path):
    from timm.layers.grn import GlobalResponseNorm
    torch.manual_seed(0)
    grn = GlobalResponseNorm(6, channels_last=False)
    nn.init.normal_(grn.weight)
    nn.init.normal_(grn.bias)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), grn, nn.Flatten(), nn.Linear(6 * 36, 3))
    x = torch.randn(16, 1, 8, 8)
    _converge(model, x, ["square", "sqrt", "divide", "mul"], tmp_path)


@pytest.mark.parametrize("fn,match", [
    (lambda m, x: F.normalize(m.mods[0](x), p=1.0, dim=1), "only the 2-norm"),
    (lambda m, x: m.mods[0](x) * m.mods[0](x).norm(p=3, dim=1, keepdim=True), "only the 2-norm"),
    (lambda m, x: m.mods[0](x) / torch.linalg.norm(m.mods[0](x).view(-1, 2, 3), 2, dim=(1, 2)).view(-1, 1),
     "over a matrix"),
    (lambda m, x: m.mods[0](x) / m.mods[0](x).norm(), "mixes the samples"),
])
def test_norms_without_a_decomposition_are_refused_by_name(fn, match):
    with pytest.raises(signgd.UnsupportedOperationError, match=match):
        _convert(_Fn(fn, nn.Linear(4, 6)).eval(), torch.randn(8, 4))


def test_norm_of_constants_stays_a_constant():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.v = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return self.fc(x) * F.normalize(self.v, dim=0) * self.v.norm()

    model = Scaled().eval()
    x = torch.randn(6, 4)
    snn = _convert(model, x)
    assert not snn.neurons and torch.allclose(snn.ann(x), model(x), atol=1e-6)
