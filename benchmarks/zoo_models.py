"""The model zoo of ``benchmarks/zoo.py``: which torchvision and timm models, how each is built, and
its input.

Every torchvision classification family in its smallest variant (``--torchvision all``: every
builder), and a list of timm families in their smallest variant. Random init (no weights can be
downloaded), 10 classes; weights that are all zero at init (zero-initialised heads, last BN of a
residual branch, layer scales) get random values, or the ANN's output would be constant or a branch
dead. ``realistic`` re-estimates every BatchNorm's running statistics on random inputs, so that
activations have the scales of a trained network rather than those of random init.
"""
from __future__ import annotations

import torch
from torch import nn

#: torchvision: every classification family, its smallest variant (mnasnet: the three the issue lists).
TORCHVISION = ("alexnet convnext_tiny densenet121 efficientnet_b0 efficientnet_v2_s googlenet inception_v3 "
               "maxvit_t mnasnet0_5 mnasnet0_75 mnasnet1_0 mobilenet_v2 mobilenet_v3_large mobilenet_v3_small "
               "regnet_x_400mf regnet_y_400mf resnet18 resnext50_32x4d shufflenet_v2_x0_5 shufflenet_v2_x1_0 "
               "squeezenet1_0 squeezenet1_1 swin_t swin_v2_t vgg11 vgg11_bn vit_b_32 wide_resnet50_2").split()

#: timm: one model per family, its smallest variant.
TIMM = """resnet18 resnetv2_50 seresnet18 res2net50_26w_4s resnest14d skresnet18 efficientnet_b0 efficientnet_lite0
mobilenetv1_100 mobilenetv2_050 mobilenetv3_small_050 mobilenetv4_conv_small mnasnet_050 lcnet_050 mixnet_s
ghostnet_100 ghostnetv2_100 repghostnet_050 rexnet_100 regnetx_002 regnety_002 regnetz_b16 densenet121 dpn48b dla34
cspresnet50 cs3darknet_s repvgg_a0 mobileone_s0 ese_vovnet19b_slim selecsls42b gernet_s nf_resnet26 tresnet_m
inception_v3 xception41 hrnet_w18_small botnet26t_256 vgg11 convnext_atto convnextv2_atto inception_next_atto
poolformer_s12 caformer_s18 hgnet_tiny hgnetv2_b0 mambaout_femto starnet_s050 repvit_m0_9 fastvit_t8
efficientformer_l1 efficientformerv2_s0 edgenext_xx_small swiftformer_xs shvit_s1 vit_tiny_patch16_224
eva02_tiny_patch14_224 cait_xxs24_224 xcit_nano_12_p16_224 convit_tiny crossvit_tiny_240 levit_128s pit_ti_224
tnt_s_patch16_224 twins_pcpvt_small twins_svt_small pvt_v2_b0 coat_lite_tiny visformer_tiny
swin_tiny_patch4_window7_224 swinv2_tiny_window8_256 davit_tiny gcvit_xxtiny focalnet_tiny_srf nest_tiny
volo_d1_224 hiera_tiny_224 mvitv2_tiny tiny_vit_5m_224 efficientvit_b0 efficientvit_m0 mobilevit_xxs
mobilevitv2_050 coatnet_nano_rw_224 maxvit_nano_rw_256 nextvit_small mixer_s32_224 resmlp_12_224 gmlp_ti16_224
convmixer_768_32 sequencer2d_s vitamin_small_224 rdnet_tiny fasternet_t0""".split()

#: Input side per model where the default (32 for torchvision, 64 for timm) does not fit it.
SIDE = {
    "torchvision:alexnet": 64, "torchvision:inception_v3": 80, "torchvision:maxvit_t": 64,
    "timm:inception_v3": 80, "timm:tresnet_m": 64, "timm:crossvit_tiny_240": 240, "timm:levit_128s": 224,
    "timm:efficientformer_l1": 224, "timm:tnt_s_patch16_224": 64, "timm:hiera_tiny_224": 224,
    "timm:mvitv2_tiny": 224, "timm:volo_d1_224": 224, "timm:davit_tiny": 224, "timm:gcvit_xxtiny": 224,
    "timm:nest_tiny": 224, "timm:coatnet_nano_rw_224": 224, "timm:maxvit_nano_rw_256": 256,
    "timm:swinv2_tiny_window8_256": 256, "timm:swin_tiny_patch4_window7_224": 224, "timm:tiny_vit_5m_224": 224,
    "timm:efficientvit_m0": 224, "timm:sequencer2d_s": 224, "timm:vitamin_small_224": 224,
    "timm:twins_svt_small": 224, "timm:focalnet_tiny_srf": 224, "timm:xcit_nano_12_p16_224": 224,
    "timm:convit_tiny": 224, "timm:mobilevit_xxs": 256, "timm:mobilevitv2_050": 256,
    "timm:efficientformerv2_s0": 224, "timm:eva02_tiny_patch14_224": 224, "timm:cait_xxs24_224": 224,
    "timm:pit_ti_224": 224, "timm:coat_lite_tiny": 224, "timm:shvit_s1": 224, "timm:swiftformer_xs": 224,
    "timm:nextvit_small": 224,
}
#: The side a timm model with a larger native side is tried at first (``sides``): most ViT-like and windowed
#: models build for it with ``img_size=`` or run on it as they are, and simulate about 12x faster than at 224.
#: Where the model does not build or run at it (a position or attention bias tied to its native grid),
#: the native side is used.
SMALL_SIDE = 64
#: Extra builder arguments (torchvision: sizes its defaults tie to 224; aux heads off).
KWARGS = {
    "torchvision:inception_v3": {"aux_logits": False, "init_weights": True},
    "torchvision:googlenet": {"aux_logits": False, "init_weights": True},
    "torchvision:vit_b_32": {"image_size": 32},
}


def _maxvit_t_small(num_classes: int = 10) -> nn.Module:
    """torchvision's maxvit_t (its builder's configuration) with windows of 2x2 instead of 7x7, so that
    it takes 64x64 inputs (its builder fixes the partition size at 7, hence 224x224)."""
    from torchvision.models.maxvit import MaxVit

    return MaxVit(input_size=(64, 64), stem_channels=64, partition_size=2, block_channels=[64, 128, 256, 512],
                  block_layers=[2, 2, 5, 2], head_dim=32, stochastic_depth_prob=0.2, num_classes=num_classes)


#: Builders that replace the library's own where it cannot make a small-input model.
BUILDERS = {"torchvision:maxvit_t": _maxvit_t_small}


def keys(torchvision: str = "families", timm_models: bool = True) -> list[str]:
    """``source:name`` of every model in the zoo (``torchvision="all"``: every torchvision builder)."""
    if torchvision == "all":
        import torchvision as tv

        tv_names = tv.models.list_models(module=tv.models)
    else:
        tv_names = TORCHVISION
    return [f"torchvision:{n}" for n in tv_names] + ([f"timm:{n}" for n in TIMM] if timm_models else [])


def side(key: str) -> int:
    """The model's native input side: the one it is built for (``SIDE``, else 32 or 64)."""
    return SIDE.get(key, 32 if key.startswith("torchvision:") else 64)


def sides(key: str) -> tuple[int, ...]:
    """The input sides to try, in order: a timm model whose native side is above ``SMALL_SIDE`` is tried at
    ``SMALL_SIDE`` first, then at its native side."""
    native = side(key)
    return (SMALL_SIDE, native) if key.startswith("timm:") and native > SMALL_SIDE else (native,)


def build_sized(key: str, seed: int = 0) -> tuple[nn.Module, int, dict[int, str]]:
    """``build`` at the first side of ``sides(key)`` where the model builds and runs on one input of that
    side (the last side is not checked: the caller's own run reports its error). Returns the model, its
    side, and the error at each smaller side that failed."""
    *smaller, last = sides(key)
    failed: dict[int, str] = {}
    for s in smaller:
        try:
            model = build(key, seed, s)
            with torch.no_grad():
                model(torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(seed)))
            return model, s, failed
        except Exception as exc:  # noqa: BLE001 - this side does not fit the model: try the next
            failed[s] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return build(key, seed, last), last, failed


def build(key: str, seed: int = 0, side_: int | None = None) -> nn.Module:
    """The model ``key`` (``torchvision:resnet18``, ``timm:convit_tiny``) with 10 classes, random
    init (seeded), all-zero weights re-initialised, in eval mode; timm models that take ``img_size``
    are built for ``side_`` (default: the native side)."""
    source, name = key.split(":", 1)
    torch.manual_seed(seed)
    kwargs = dict(KWARGS.get(key, {}), num_classes=10)
    if key in BUILDERS:
        model = BUILDERS[key](**kwargs)
    elif source == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None, **kwargs)
    elif source == "timm":
        import timm

        try:  # ViT-like models take the input size; CNNs refuse the argument
            model = timm.create_model(name, pretrained=False, img_size=side_ or side(key), **kwargs)
        except TypeError:
            model = timm.create_model(name, pretrained=False, **kwargs)
    else:
        raise ValueError(f"unknown model source {source!r} in {key!r}; use torchvision:NAME or timm:NAME")
    reinit_zero_weights(model, seed)
    return model.eval()


def reinit_zero_weights(model: nn.Module, seed: int = 0) -> int:
    """Give random values to every weight that is all zero (heads, layer scales, the last BN of a
    residual branch): scale-like vectors around 1, matrices and kernels ``N(0, 1/fan_in)``.
    Biases stay. Returns how many tensors changed."""
    gen = torch.Generator().manual_seed(seed + 1)
    changed = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or p.numel() == 0 or bool(p.any()):
                continue
            if p.dim() <= 1 or p.shape.numel() == p.shape[0] or "gamma" in name or "scale" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            changed += 1
    return changed


def reestimate_batchnorm(model: nn.Module, x: torch.Tensor) -> int:
    """Re-estimate every BatchNorm's running statistics on ``x`` (a cumulative average over one pass,
    the other modules in eval mode): activation scales like a trained network's. Returns the count."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for chunk in x.split(16):
            model(chunk)
    model.eval()
    return len(norms)
