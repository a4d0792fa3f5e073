"""LayerNorm, RMSNorm, softmax and attention decompositions equal the original modules on the ANN
side, hold the neurons the design says, and their SNN converges to the ANN."""
import pytest
import torch
import torch.nn.functional as F
from model_helpers import Fn as _Fn
from model_helpers import relerr as _relerr
from torch import nn

import signgd


def _check(model, x, expected_targets=None, atol=1e-5):
    model = model.eval()
    with torch.no_grad():
        ref = model(x)
    # the paper's schedule, untuned: these tests check that the estimate keeps converging as T grows
    snn = signgd.convert(model, x, normalize="all", encoding="analog", schedule="exponential")
    assert torch.allclose(snn.ann(x), ref, atol=atol, rtol=1e-4)
    if expected_targets is not None:
        assert sorted({n.target for n in snn.neurons.values()}) == sorted(expected_targets)
    return snn, ref


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_module_decomposes_into_square_and_divide_sqrt(affine):
    torch.manual_seed(0)
    ln = nn.LayerNorm(6, elementwise_affine=affine)
    if affine:
        nn.init.normal_(ln.weight)
        nn.init.normal_(ln.bias)
    model = nn.Sequential(nn.Linear(4, 6), ln, nn.Linear(6, 3))
    x = torch.randn(8, 4)
    snn, ref = _check(model, x, ["square", "divide_sqrt"])
    out = snn(x, T=[32, 256])
    assert _relerr(out[256], ref) < _relerr(out[32], ref) and _relerr(out[256], ref) < 1e-3


def test_functional_layer_norm_over_two_trailing_dims_and_timm_layernorm2d():
    from timm.layers import LayerNorm2d

    torch.manual_seed(0)
    w, b = torch.randn(5, 5), torch.randn(5, 5)
    model = _Fn(lambda m, x: m.mods[1](F.layer_norm(m.mods[0](x), (5, 5), w, b, eps=1e-6)),
                nn.Conv2d(1, 3, 3, padding=1), LayerNorm2d(3))
    nn.init.normal_(model.mods[1].weight)
    _check(model, torch.randn(6, 1, 5, 5), ["square", "divide_sqrt"])


def test_rms_norm_decomposes_without_centering():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.RMSNorm(6), nn.Linear(6, 3))
    snn, _ = _check(model, torch.randn(8, 4), ["square", "divide_sqrt"])
    assert "decomposed 1 LayerNorm/RMSNorm" in " ".join(snn.conversion_log)


@pytest.mark.parametrize("dim", [-1, 1])
def test_softmax_spellings_decompose_into_exp_and_divide(dim):
    torch.manual_seed(0)
    for fn in (lambda m, x: F.softmax(m.mods[0](x), dim=dim), lambda m, x: m.mods[0](x).softmax(dim),
               lambda m, x: torch.softmax(m.mods[0](x), dim)):
        _check(_Fn(fn, nn.Linear(4, 5)), torch.randn(6, 4), ["exp", "divide"])
    _check(nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=dim)), torch.randn(6, 4), ["exp", "divide"])


def test_products_of_activations_become_two_input_neurons():
    torch.manual_seed(0)
    model = _Fn(lambda m, x: m.mods[2]((m.mods[0](x) * torch.sigmoid(m.mods[1](x))) / (m.mods[1](x).abs() + 1)),
                nn.Linear(4, 5), nn.Linear(4, 5), nn.Linear(5, 2))
    snn, _ = _check(model, torch.randn(6, 4), ["sigmoid", "abs", "mul", "divide"])
    bmm = _Fn(lambda m, x: torch.bmm(m.mods[0](x), m.mods[1](x).transpose(1, 2)).flatten(1),
              nn.Linear(4, 3), nn.Linear(4, 3))
    snn, _ = _check(bmm, torch.randn(6, 2, 4), ["matmul"])
    # One neuron per output element of the product, not one per scalar product.
    assert [tuple(n.scale.shape) for n in snn.neurons.values()] == [(2, 2)]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_multihead_attention_matches_torch(batch_first, mask):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    attn_mask = None
    if mask == "bool":
        attn_mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)  # True = do not attend
    elif mask == "float":
        attn_mask = torch.randn(5, 5)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha, self.fc = mha, nn.Linear(8, 3)
            self.register_buffer("mask", attn_mask)

        def forward(self, x):  # x: [B, L, E] (signgd's batch is dim 0); the MHA may be sequence-first
            seq = x if batch_first else x.transpose(0, 1)
            out, weights = self.mha(seq, seq, seq, attn_mask=self.mask)
            out = out if batch_first else out.transpose(0, 1)
            return self.fc(out) + weights.sum(-1, keepdim=True)

    x = torch.randn(4, 5, 8)
    snn, ref = _check(Net(), x, ["matmul", "exp", "divide"])
    if batch_first and mask is None:
        out = snn(x, T=[32, 256])
        assert _relerr(out[256], ref) < min(0.02, _relerr(out[32], ref))


def test_scaled_dot_product_attention_with_causal_mask_and_scale():
    torch.manual_seed(0)
    qkv = nn.Linear(8, 24)

    def attend(m, x):
        q, k, v = m.mods[0](x).chunk(3, -1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)

    _check(_Fn(attend, qkv), torch.randn(3, 6, 8), ["matmul", "exp", "divide"])
    bool_mask = torch.rand(6, 6) > 0.3
    bool_mask[:, 0] = True

    def masked(m, x):
        q, k, v = m.mods[0](x).chunk(3, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask)

    _check(_Fn(masked, qkv), torch.randn(3, 6, 8))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_layer_and_encoder(norm_first, activation):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, activation=activation, batch_first=True,
                                       norm_first=norm_first)
    model = nn.Sequential(nn.Linear(4, 16), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                          nn.Linear(16, 3))
    x = torch.randn(3, 5, 4)
    snn, ref = _check(model, x, ["matmul", "exp", "divide", "square", "divide_sqrt", activation], atol=1e-4)
    out = snn(x, T=[32, 256])
    assert _relerr(out[256], ref) < _relerr(out[32], ref)


def test_attention_with_key_padding_mask_is_refused_clearly():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(4, 1, batch_first=True)
            self.register_buffer("pad", torch.zeros(2, 3, dtype=torch.bool))

        def forward(self, x):
            return self.mha(x, x, x, key_padding_mask=self.pad)[0]

    with pytest.raises(signgd.errors.SigngdError, match="key_padding_mask"):
        signgd.convert(Net().eval(), torch.randn(2, 3, 4), schedule="exponential")


def test_spike_view_equals_estimate_propagation_for_norms_products_and_softmax():
    """The neurons of the decompositions (square, divide_sqrt, matmul, exp, divide, gelu) send only
    signed spikes: integrating them through the affine maps gives the same spikes and outputs."""
    from signgd.event_driven import simulate_spikes

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True)
    model = nn.Sequential(nn.Linear(4, 8), layer, nn.Linear(8, 3)).double().eval()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    snn = signgd.convert(model, x, schedule="exponential")
    T = 30
    ref_out, ref_spikes, _ = simulate_spikes(snn, x, T)
    result = snn.simulate(x, list(range(1, T + 1)), stats=True)
    fast_out = torch.stack([result.outputs[t] for t in range(1, T + 1)])
    assert torch.allclose(fast_out, ref_out, atol=1e-8)
    assert {snn.neurons[n].target for n in ref_spikes} == {"square", "divide_sqrt", "matmul", "exp", "divide", "gelu"}
    for name, s in ref_spikes.items():
        assert torch.equal(result.spikes[name], s.flatten(1).sum(1).double()), name
