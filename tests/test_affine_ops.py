"""Affine spellings (einsum with one activation, swapaxes, repeat_interleave, reshape_as, interpolate and
Upsample in every mode, Unfold/Fold, pixel shuffles), einsum of two activations (an ``einsum`` neuron),
and maxima over dims (trees of max neurons): the ANN side equals torch, the SNN converges, save/load
round-trips and the energy count runs."""
import functools

import pytest
import torch
import torch.nn.functional as F
from model_helpers import Fn as _Fn
from model_helpers import relerr as _relerr
from torch import nn

import signgd
from signgd.costs import ann_costs, dense_synaptic_ops, neuron_work
from signgd.errors import ReportError
from signgd.graph.products import leading_ellipsis

# The schedule these tests were written for (the default tunes one across T since issue 17: slower).
_convert = functools.partial(signgd.convert, schedule="exponential")


def _converge(model, x, targets, tmp_path, bound=0.02, energy=True):
    model = model.eval()
    with torch.no_grad():
        ref = model(x)
    snn = _convert(model, x, encoding="analog")
    assert torch.allclose(snn.ann(x), ref, atol=1e-5, rtol=1e-4)
    assert sorted({n.target for n in snn.neurons.values()}) == sorted(targets)
    out = snn(x, T=[32, 256])
    assert _relerr(out[256], ref) < _relerr(out[32], ref) and _relerr(out[256], ref) < bound
    snn.save(tmp_path / "net.pt")
    assert torch.equal(signgd.load(tmp_path / "net.pt").ann(x), snn.ann(x))
    if not energy:  # an interpolation that weighs neighbours: the energy count refuses it by name
        with pytest.raises(ReportError, match="interpolation in mode"):
            ann_costs(snn)
        return snn
    ann = ann_costs(snn)  # the energy count knows every op of the graph
    assert sum(mac for _, mac in ann.values()) > 0 and dense_synaptic_ops(snn) > 0
    assert all(ac >= 0 and mac >= 0 for ac, mac in [*ann.values(), *neuron_work(snn).values()])
    return snn


@pytest.fixture(scope="module")
def images():
    from sklearn.datasets import load_digits
    return torch.tensor(load_digits().data[:48], dtype=torch.float32).view(-1, 1, 8, 8) / 16


def test_shape_spellings_are_affine(images, tmp_path):
    torch.manual_seed(0)

    def fn(m, x):
        h = torch.relu(m.mods[0](x))  # [B, 4, 6, 6]
        h = torch.swapaxes(h, 2, 3).swapdims(1, 2).movedim(1, 3)  # [B, 6, 6, 4]
        h = h.repeat_interleave(2, dim=-1) + torch.repeat_interleave(h, 2, dim=-1)  # [B, 6, 6, 8]
        h = h.reshape_as(torch.cat([h[..., :4], h[..., 4:]], -1)).permute(0, 3, 1, 2)  # [B, 8, 6, 6]
        h = F.pixel_unshuffle(h, 2)  # [B, 32, 3, 3]
        return m.mods[1](nn.functional.pixel_shuffle(h, 2).flatten(1))

    _converge(_Fn(fn, nn.Conv2d(1, 4, 3), nn.Linear(8 * 36, 3)), images, ["relu"], tmp_path)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic", "area"])
def test_interpolation_in_every_mode_is_affine(mode, images, tmp_path):
    torch.manual_seed(0)

    def fn(m, x):
        h = torch.relu(m.mods[0](x))  # [B, 3, 6, 6]
        h = F.interpolate(h, size=(9, 5), mode=mode) + m.mods[1](h)[..., :9, :5]
        return m.mods[2](torch.relu(h).flatten(1))

    up = nn.Upsample(scale_factor=2, mode=mode if mode != "area" else "nearest")
    _converge(_Fn(fn, nn.Conv2d(1, 3, 3), up, nn.Linear(3 * 45, 4)), images, ["relu"], tmp_path,
              energy=mode in ("nearest", "nearest-exact"))


def test_padding_in_every_mode_is_affine(images, tmp_path):
    torch.manual_seed(0)

    def fn(m, x):
        h = torch.relu(m.mods[0](x))  # [B, 2, 6, 6]
        h = F.pad(h, (1, 1, 1, 1), "reflect") + m.mods[1](h) + m.mods[2](h) + F.pad(h, (1, 1, 1, 1), value=0.5)
        return m.mods[3](torch.relu(h).flatten(1))

    model = _Fn(fn, nn.Conv2d(1, 2, 3), nn.ReplicationPad2d(1), nn.CircularPad2d(1), nn.Linear(2 * 64, 3))
    _converge(model, images, ["relu"], tmp_path)


def test_unfold_and_fold_are_affine(images, tmp_path):
    torch.manual_seed(0)

    def fn(m, x):
        h = torch.relu(m.mods[0](x))  # [B, 2, 8, 8]
        cols = m.mods[1](h)  # [B, 2 * 9, 16]: 3x3 patches, stride 2, padding 1
        back = F.fold(torch.relu(cols * 0.5 - 0.1), (8, 8), 3, padding=1, stride=2)  # overlaps summed
        back = back + m.mods[2](F.unfold(h, 2, stride=2))  # 2x2 patches put back: h itself
        return m.mods[3](back.flatten(1))

    model = _Fn(fn, nn.Conv2d(1, 2, 3, padding=1), nn.Unfold(3, padding=1, stride=2), nn.Fold((8, 8), 2, stride=2),
                nn.Linear(2 * 64, 3))
    _converge(model, images, ["relu"], tmp_path)


def test_einsum_with_one_activation_is_affine_and_with_two_an_einsum_neuron(tmp_path):
    torch.manual_seed(0)
    rel = torch.randn(4, 3, 2)

    def fn(m, x):  # x [B, 4, 6]: torchvision MaxViT's spelling (spaces, capitals), then a constant operand
        q = m.mods[0](x).view(-1, 4, 2, 3)
        k = m.mods[1](x).view(-1, 4, 2, 3)
        a = torch.einsum("B I H D, B J H D -> B H I J", q, k)  # two activations: a neuron
        r = torch.einsum("bihd,idk->bihk", q, rel)  # one activation: affine
        return a.flatten(1) + r.flatten(1).sum(-1, keepdim=True) + torch.einsum("bij->bi", [a.flatten(2)]).sum(-1, True)

    snn = _converge(_Fn(fn, nn.Linear(6, 6), nn.Linear(6, 6)), torch.randn(16, 4, 6), ["einsum"], tmp_path)
    (neuron,) = snn.neurons.values()
    assert neuron.params == {"equation": "...BIHD,...BJHD->...BHIJ"}


def test_leading_ellipsis():
    assert leading_ellipsis("bij, bjk -> bik") == "...bij,...bjk->...bik"
    assert leading_ellipsis("ij,jk") == "...ij,...jk"
    assert leading_ellipsis("...ij,...jk->...ik") == "...ij,...jk->...ik"
    assert leading_ellipsis("i...j,jk->ik") is None


def test_einsum_of_three_activations_is_refused_by_name():
    model = _Fn(lambda m, x: torch.einsum("bi,bi,bi->b", m.mods[0](x), m.mods[0](x), x), nn.Linear(3, 3))
    with pytest.raises(signgd.UnsupportedOperationError, match="einsum"):
        _convert(model.eval(), torch.randn(4, 3))


def test_maxima_over_dims_become_max_trees(tmp_path):
    torch.manual_seed(0)

    def fn(m, x):  # x [B, 7, 3]
        h = m.mods[0](x)  # [B, 7, 5]
        out = h.amax(dim=1) + h.max(dim=-1, keepdim=True).values.mean(1) + torch.max(h, 1)[0]
        out = out + torch.amax(h, (1, 2), keepdim=True).squeeze(1)
        return out + torch.maximum(h, m.mods[1](x)).mean(1) + torch.max(h, m.mods[1](x)).sum(1)

    snn = _converge(_Fn(fn, nn.Linear(3, 5), nn.Linear(3, 5)), torch.randn(16, 7, 3), ["max"], tmp_path, 1e-3)
    # 7 -> 4 -> 2 -> 1 for each max over 7, 5 -> 3 -> 2 -> 1 over 5, one neuron per element-wise max
    assert len(snn.neurons) == 3 + 3 + 3 + (3 + 3) + 2


@pytest.mark.parametrize("fn,match", [
    (lambda h: h.max(), "over every dim"),
    (lambda h: h.amax(0), "batch dim"),
    (lambda h: h.max(1).indices.float(), "indices"),
    (lambda h: h.max(1)[1].float(), "indices"),
    (lambda h: torch.maximum(h, torch.zeros(5)), r"c \+ relu\(x - c\)"),
])
def test_maxima_without_a_spiking_form_are_refused_naming_the_module(fn, match):
    class Head(nn.Module):
        def forward(self, h):
            return fn(h)

    model = nn.Sequential(nn.Linear(3, 5), Head()).eval()
    with pytest.raises(signgd.UnsupportedOperationError, match=match) as info:
        _convert(model, torch.randn(4, 3))
    assert "in 1 (Head)" in str(info.value)


def test_a_max_over_dims_of_a_max_pooling_output():
    class GlobalMax(nn.Module):
        def forward(self, h):
            return h.amax(dim=(2, 3))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), GlobalMax(), nn.Linear(3, 2)).eval()
    x = torch.randn(8, 1, 9, 9)
    snn = _convert(model, x)
    assert torch.allclose(snn.ann(x), model(x), atol=1e-6)
    assert len(snn.neurons) == 2 + 2 + 2  # the 2x2 pool: rows, columns; the 3x3 map: two levels each


def test_a_constant_built_with_bitwise_ops_saves(tmp_path):
    class PositionFromMask(nn.Module):  # timm EdgeNeXt's positional encoding builds ~mask for the batch
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            mask = torch.zeros((x.shape[0], 4)).to(dtype=torch.bool)
            keep = (~mask | mask) & ~(mask ^ mask)
            return torch.relu(self.fc(x)) + keep.float().cumsum(1)

    torch.manual_seed(0)
    x = torch.randn(8, 4)
    snn = _converge(PositionFromMask(), x, ["relu"], tmp_path)
    assert torch.equal(signgd.load(tmp_path / "net.pt").ann(x[:3]), snn.ann(x[:3]))
