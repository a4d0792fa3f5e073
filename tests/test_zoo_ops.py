"""The real models each new op was added for convert, and their converted graph run as an ANN equals
the model (random init, the zero-initialised heads given random weights). Fast ones run by default;
the rest are ``slow``. Which op each one needed is in its id."""
import functools

import pytest
import torch
from torch import nn

import signgd

# The schedule these tests were written for (the default tunes one across T since issue 17: slower).
_convert = functools.partial(signgd.convert, schedule="exponential")

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

# (builder, name, input side, the op it needed)
FAST = [
    ("timm", "convnextv2_atto", 32, "norm-grn"),
    ("timm", "edgenext_xx_small", 32, "normalize"),
    ("timm", "lcnet_050", 32, "batch_norm"),
]
SLOW = [
    ("timm", "poolformer_s12", 64, "group_norm"),
    ("timm", "hrnet_w18_small", 64, "upsample"),
    ("timm", "ghostnetv2_100", 64, "interpolate"),
    ("timm", "xcit_nano_12_p16_224", 224, "normalize"),
    ("timm", "volo_d1_224", 224, "unfold-fold"),
    ("timm", "hiera_tiny_224", 224, "amax"),
    ("timm", "swin_tiny_patch4_window7_224", 224, "layernorm-after-layernorm"),
    ("timm", "mambaout_femto", 64, "layernorm-after-layernorm"),
    ("timm", "efficientnet_b0", 64, "batch_norm"),
    ("timm", "regnetx_002", 64, "batch_norm"),
    ("torchvision", "swin_t", 64, "shifted_window_attention"),
    ("torchvision", "swin_v2_t", 64, "shifted_window_attention-v2"),
    ("torchvision", "maxvit_t", 224, "einsum-swapaxes"),
]


def _model(builder: str, name: str) -> nn.Module:
    torch.manual_seed(0)
    if builder == "timm":
        model = timm.create_model(name, pretrained=False, num_classes=10)
    else:
        model = torchvision.models.get_model(name, num_classes=10)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.normal_(head.weight, std=0.02)  # some heads start at zero: the output would be constant
    return model.eval()


def _check(builder, name, side):
    model = _model(builder, name)
    x = torch.randn(8, 3, side, side)
    snn = _convert(model, x)
    with torch.no_grad():
        ref = model(x)
    assert float(ref.std()) > 0
    assert float((snn.ann(x) - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize("builder,name,side,op", FAST, ids=[f"{n}-{op}" for _, n, _, op in FAST])
def test_models_needing_a_new_op_convert_and_equal_their_ann(builder, name, side, op):
    _check(builder, name, side)


@pytest.mark.slow
@pytest.mark.parametrize("builder,name,side,op", SLOW, ids=[f"{n}-{op}" for _, n, _, op in SLOW])
def test_larger_models_needing_a_new_op_convert_and_equal_their_ann(builder, name, side, op):
    _check(builder, name, side)


@pytest.mark.slow
def test_sequencer_lstm_is_refused_in_one_line():
    model = timm.create_model("sequencer2d_s", pretrained=False, num_classes=10, img_size=32).eval()
    with pytest.raises(signgd.UnsupportedOperationError, match="LSTM: a recurrent layer") as info:
        _convert(model, torch.randn(2, 3, 32, 32))
    assert "\n" not in str(info.value)
