"""torchvision's ResNet-18 and VGG-11-BN convert (random weights; no downloads)."""
import pytest
import torch
import torchvision

import signgd


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn"])
def test_torchvision_models_convert_and_track_the_ann(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    snn = signgd.convert(model, x, encoding="analog", normalize="all", schedule="exponential")
    with torch.no_grad():
        ann = model(x)
    assert torch.allclose(snn.ann(x), ann, atol=1e-4 * ann.abs().max())
    outs = snn(x, T=[16, 128])
    err = {t: float((outs[t] - ann).norm() / ann.norm()) for t in outs}
    assert err[128] < err[16]
    targets = {m.target for m in snn.neurons.values()}
    assert targets == {"relu", "max"}
