"""The architectures beyond ReLU networks convert, and their SNN approaches the ANN as T grows.

Random weights (no downloads): heads that torchvision and timm initialize to zero are re-drawn, so
the output is not identically zero. ``analog`` encoding and every neuron normalized, so the SNN's
fixed point is the ANN itself and the error must fall from T=32 to T=256.
"""
import pytest
import torch
import torchvision
from torch import nn

import signgd
from signgd import models


def _redraw_zero_heads(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Linear) and float(mod.weight.abs().max()) == 0.0:
                nn.init.normal_(mod.weight, std=0.1)
    return model.eval()


def _converges(model: nn.Module, x: torch.Tensor, expected_targets: set[str], final: float = 0.05):
    torch.manual_seed(0)
    model = _redraw_zero_heads(model)
    with torch.no_grad():
        ann = model(x)
    snn = signgd.convert(model, x, encoding="analog", normalize="all", schedule="exponential")
    assert torch.allclose(snn.ann(x), ann, atol=1e-4 * float(ann.abs().max()))
    outs = snn(x, T=[32, 256])
    err = {t: float((outs[t] - ann).norm() / ann.norm()) for t in outs}
    assert err[256] < err[32], err
    assert err[256] < final, err
    assert {m.target for m in snn.neurons.values()} == expected_targets
    return snn


_TRANSFORMER = {"matmul", "exp", "divide", "square", "divide_sqrt", "gelu"}


@pytest.mark.parametrize("name,build,targets", [
    ("timm-convnext", models.tiny_convnext, {"square", "divide_sqrt", "gelu"}),
    ("timm-mixer", models.tiny_mixer, {"square", "divide_sqrt", "gelu"}),
    ("timm-resmlp", models.tiny_resmlp, {"gelu"}),
    ("timm-vit", models.tiny_vit, _TRANSFORMER),
])
def test_tiny_timm_architectures(name, build, targets, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 32, 32)
    snn = _converges(build(), x, targets)
    snn.save(tmp_path / "snn.pt")  # the decompositions' ops and neurons survive a save/load round trip
    assert torch.equal(signgd.load(tmp_path / "snn.pt")(x, T=8), snn(x, T=8))


def test_timm_convnext_atto():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    _converges(model, torch.randn(2, 3, 32, 32), {"square", "divide_sqrt", "gelu"})


def test_torchvision_vit_with_multihead_attention():
    torch.manual_seed(0)
    model = torchvision.models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    snn = _converges(model, torch.randn(4, 3, 32, 32), _TRANSFORMER)
    assert any("swapped" in n or "attention" in n for n in snn.conversion_log)


@pytest.mark.slow
def test_torchvision_convnext_tiny():
    torch.manual_seed(0)
    _converges(torchvision.models.convnext_tiny(weights=None, num_classes=10), torch.randn(2, 3, 32, 32),
               {"square", "divide_sqrt", "gelu"})


@pytest.mark.slow
def test_torchvision_vit_b_16():
    torch.manual_seed(0)
    _converges(torchvision.models.vit_b_16(weights=None, image_size=32, num_classes=10), torch.randn(2, 3, 32, 32),
               _TRANSFORMER)
