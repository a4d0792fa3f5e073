"""torchvision Swin's fx-wrapped shifted_window_attention and _patch_merging_pad, written out as plain ops:
the ANN equals torchvision's model (shifted windows with their mask, padding, V2's cosine attention),
the SNN converges, any batch size runs, and the network saves (position biases folded to buffers)."""
import functools

import pytest
import torch
from model_helpers import relerr as _relerr

import signgd

# The schedule these tests were written for (the default tunes one across T since issue 17: slower).
_convert = functools.partial(signgd.convert, schedule="exponential")

swin = pytest.importorskip("torchvision.models.swin_transformer")


@pytest.fixture(scope="module")
def digits_rgb():
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().data[:32], dtype=torch.float32).view(-1, 1, 8, 8) / 16
    return x.expand(-1, 3, -1, -1).contiguous()


def _tiny(v2: bool):
    torch.manual_seed(0)
    kw = dict(block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2) if v2 else {}
    # 8x8 input, patches of 2: a 4x4 map, windows of 3 -> padded to 6x6 with a shift of 1 (the mask);
    # then a 2x2 map that one window covers (no shift)
    return swin.SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[2, 1], num_heads=[2, 2],
                                window_size=[3, 3], num_classes=4, **kw).eval()


@pytest.mark.parametrize("v2", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["v1", "v2"])
def test_tiny_swin_converts_equals_torchvision_and_saves(v2, digits_rgb, tmp_path):
    model = _tiny(v2)
    x = digits_rgb
    snn = _convert(model, x, encoding="analog")
    assert "decomposed 4 torchvision Swin window attentions and patch merges" in " ".join(snn.conversion_log)
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(snn.ann(x), ref, atol=1e-5, rtol=1e-4)
    assert any(name.endswith("shift_mask") for name, _ in snn.graph_module.named_buffers())
    out = snn(x, T=[32, 256])
    assert _relerr(out[256], ref) < _relerr(out[32], ref)
    if not v2:  # V2's cosine logits (x 10) make its exp neurons slow: 0.12 at T=256 on this model
        assert _relerr(out[256], ref) < 1e-3
    assert torch.allclose(snn(x[:3], T=16), snn(x, T=16)[:3], atol=1e-6)
    snn.save(tmp_path / "swin.pt")
    assert torch.equal(signgd.load(tmp_path / "swin.pt").ann(x), snn.ann(x))


def test_shift_mask_is_torchvisions():
    from signgd.graph.swin import shift_mask
    mask = shift_mask(6, 6, (3, 3), (1, 1), torch.float32)
    assert mask.shape == (4, 9, 9)
    assert torch.equal(mask[0], torch.zeros(9, 9))  # the top-left window holds one region only
    assert set(mask.unique().tolist()) == {-100.0, 0.0} and torch.equal(mask, mask.transpose(1, 2))
