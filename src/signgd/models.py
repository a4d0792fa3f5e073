"""Small reference models used by the demo, the tests and the benchmarks.

They are ordinary PyTorch modules with the layers conversion must handle (conv, BN, ReLU, max and
average pooling, residual adds), sized to train in seconds to minutes on a CPU.
"""
from __future__ import annotations

from torch import nn


def vgg(in_channels: int = 1, num_classes: int = 10, widths=(16, "M", 32, 32, "M", 64, "M"),
        hidden: int = 128, image_size: int = 28) -> nn.Sequential:
    """A VGG-style CNN: 3x3 conv + BN + ReLU blocks, 2x2 max pooling at each "M" (2x2 average pooling at
    each "A": what an integrate-and-fire network exported to NIR can pool), then an MLP head."""
    layers: list[nn.Module] = []
    c, size = in_channels, image_size
    for w in widths:
        if w in ("M", "A"):
            layers.append(nn.MaxPool2d(2) if w == "M" else nn.AvgPool2d(2))
            size //= 2
        else:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
    layers += [nn.Flatten(), nn.Linear(c * size * size, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def digits_cnn(num_classes: int = 10) -> nn.Sequential:
    """The demo and test model for scikit-learn's 8x8 digits: BN, max pooling, a linear readout."""
    return vgg(1, num_classes, widths=(16, 32, "M", 32, "M"), hidden=64, image_size=8)


class BasicBlock(nn.Module):
    """A ResNet basic block (two 3x3 convs with BN, identity or 1x1 shortcut, residual add)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet with one basic block per stage and global average pooling."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


# ---- beyond ReLU: timm's own classes in tiny configurations (timm is imported only when used) -----

def tiny_convnext(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """timm's ConvNeXt (depthwise 7x7 conv, channels-first LayerNorm2d and channels-last LayerNorm,
    GELU MLP, layer scale, residual adds) with four stages of widths 16 to 128 after a 4x4 patch stem,
    for 32x32 inputs (8, 4, 2, 1 pixels per side)."""
    from timm.models.convnext import ConvNeXt

    return ConvNeXt(in_chans=in_channels, num_classes=num_classes, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128),
                    patch_size=4, drop_path_rate=0.0)


def tiny_mixer(in_channels: int = 1, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """timm's MLP-Mixer (token and channel MLPs with GELU, LayerNorm) on 4x4 patches: 64 tokens of 64
    channels, 4 blocks."""
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(num_classes=num_classes, img_size=image_size, in_chans=in_channels, patch_size=4,
                    num_blocks=4, embed_dim=64, mlp_ratio=(0.5, 2.0))


def tiny_resmlp(in_channels: int = 1, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """timm's ResMLP (affine "Aff" normalization, token mixing by a linear layer, GELU channel MLP,
    layer scale) on 4x4 patches: 64 tokens of 64 channels, 4 blocks."""
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    return MlpMixer(num_classes=num_classes, img_size=image_size, in_chans=in_channels, patch_size=4,
                    num_blocks=4, embed_dim=64, mlp_ratio=2, block_layer=ResBlock, norm_layer=Affine,
                    stem_norm=False)


def tiny_vit(in_channels: int = 1, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """timm's VisionTransformer (class token, softmax attention, LayerNorm, GELU MLP) on 4x4 patches:
    64 tokens of 64 channels, 4 blocks of 4 heads."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=image_size, patch_size=4, in_chans=in_channels, num_classes=num_classes,
                             embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise conv, optional squeeze-excitation, 1x1
    linear bottleneck (no activation after the projection), residual when the shape allows."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type, se: bool = False,
                 gate: type = nn.Sigmoid):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act())
        self.depthwise = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                                       nn.BatchNorm2d(mid), act())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, max(4, mid // 4), 1), act(),
                                nn.Conv2d(max(4, mid // 4), mid, 1), gate()) if se else None
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.depthwise(self.expand(x))
        if self.se is not None:
            h = h * self.se(h)  # the squeeze-excitation product: a product of two activations
        h = self.project(h)
        return x + h if self.residual else h


def tiny_mobilenet(in_channels: int = 1, num_classes: int = 10, kind: str = "v2") -> nn.Module:
    """A small mobile network for 32x32 inputs. ``"v2"``: MobileNetV2 (ReLU6, linear bottlenecks,
    depthwise convs); ``"efficientnet"``: EfficientNet's MBConv (SiLU, squeeze-excitation with a
    sigmoid gate); ``"v3"``: MobileNetV3 (hardswish, squeeze-excitation with a hardsigmoid gate)."""
    act, gate, se = {"v2": (nn.ReLU6, nn.Sigmoid, False), "efficientnet": (nn.SiLU, nn.Sigmoid, True),
                     "v3": (nn.Hardswish, nn.Hardsigmoid, True)}[kind]
    blocks = [(16, 1), (24, 2), (24, 1), (32, 2), (32, 1), (48, 1)]  # (channels, stride): 16 -> 8 -> 4
    layers = [nn.Conv2d(in_channels, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), act()]  # 32 -> 16
    cin = 16
    for cout, stride in blocks:
        layers.append(InvertedResidual(cin, cout, stride, 4, act, se, gate))
        cin = cout
    layers += [nn.Conv2d(cin, 96, 1, bias=False), nn.BatchNorm2d(96), act(), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(96, num_classes)]
    return nn.Sequential(*layers)
