"""A softmax whose logits come near exp's range is computed as torch computes it, exp(x - max) / sum(exp(x - max)),
with the row maxima as trees of 2-input max neurons (graph/attention.py); one well inside it keeps exp(x) / sum."""
import pytest
import torch
from model_helpers import fast_count
from torch import nn

import signgd
from signgd.graph.batchdim import RELATIVE_NOISE, _close


def _softmax_model(weight_scale: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=-1), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].weight.mul_(weight_scale)
    return model


def _kinds(snn) -> list[str]:
    return [n.target for n in snn.neurons.values()]


def test_logits_beyond_exps_range_convert_shifted_by_their_row_maxima():
    """Logits up to ~180 overflow exp in float32 (timm visformer_tiny at random init: up to 272); shifted, the ANN
    side is torch's softmax and the SNN converges to it."""
    model, x = _softmax_model(150.0), torch.rand(32, 4) + 0.5
    with torch.no_grad():
        logits = model[0](x)
        ann = model(x)
    assert float(logits.amax(-1).abs().max()) > 100 and not torch.isfinite(logits.exp()).all()
    snn = signgd.convert(model, x, schedule="adaptive")
    assert any("1 of them minus their row maxima" in line for line in snn.conversion_log)
    assert _kinds(snn).count("max") >= 3 and "exp" in _kinds(snn)  # a tree over 6 logits: 3 levels
    with torch.inference_mode():
        assert torch.allclose(snn.ann(x), ann, rtol=1e-5, atol=1e-6)
        out = snn(x, T=[16, 256])
    errors = {t: float((out[t] - ann).norm() / ann.norm()) for t in out}
    assert errors[256] < 1e-3 and errors[256] <= errors[16]


def test_logits_well_inside_exps_range_keep_the_plain_softmax():
    """No max neurons where exp(x) is safe: they would double the attention's neurons and add layers to settle."""
    model, x = _softmax_model(5.0), torch.rand(32, 4) + 0.5
    snn = signgd.convert(model, x, schedule="adaptive")
    assert "max" not in _kinds(snn) and "exp" in _kinds(snn)
    assert not any("row maxima" in line for line in snn.conversion_log)
    with torch.inference_mode():
        assert torch.allclose(snn.ann(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("swap", [False, True])
def test_the_layout_check_tells_rounding_from_mixed_rows(swap):
    """The batch layout check compares a batch of 2 with each sample alone: rounding amplified by an exp differs
    by ~1e-4 of the rows' norm and passes; another sample's rows differ by ~1 and fail."""
    torch.manual_seed(0)
    a = torch.rand(2, 8, 8).softmax(-1)
    noisy = a * (1 + 1e-4 * torch.randn_like(a))
    other = a.flip(0) if swap else noisy
    assert _close(other, a, 1e-6) is (not swap)
    assert not _close(a * (1 + 10 * RELATIVE_NOISE), a, 1e-6)
    masked = torch.tensor([float("-inf"), 1.0])
    assert _close(masked, masked.clone(), 1e-6) and not _close(masked, torch.tensor([0.0, 1.0]), 1e-6)


def test_the_shifted_softmax_counts_and_replays_exactly():
    """The report's energy count equals the literal event-driven count node by node, and the event-driven reference
    (each receiver rebuilds its senders' estimates from spikes) gives the engine's outputs, through the max tree and
    the subtraction of the row maxima (float64: its exp holds logits to ~709, so these reach ~2000)."""
    from signgd.event_driven import simulate_spikes
    from signgd.report.event_count import count_operations

    model, x = _softmax_model(1000.0).double(), torch.rand(2, 4, dtype=torch.float64) + 0.5
    snn = signgd.convert(model, x, schedule="adaptive", encoding="analog")
    assert "max" in _kinds(snn)
    literal, fast = count_operations(snn, x, 8), fast_count(snn, x, 8)
    assert set(literal) == set(fast) and all(torch.equal(literal[n], fast[n]) for n in literal)
    reference, _, _ = simulate_spikes(snn, x, 12)
    result = snn.simulate(x, list(range(1, 13)))
    assert torch.allclose(torch.stack([result.outputs[t] for t in range(1, 13)]), reference, atol=1e-9)


def test_a_softmax_of_a_softmax_decomposes_both():
    """Every softmax of an activation is found before any is rewritten, so one that reads another is decomposed too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=-1), nn.Softmax(dim=-1), nn.Linear(6, 2)).eval()
    x = torch.rand(16, 4)
    snn = signgd.convert(model, x, schedule="adaptive")
    assert _kinds(snn).count("exp") == 2 and any("decomposed 2 softmax" in line for line in snn.conversion_log)
    with torch.inference_mode():
        assert torch.allclose(snn.ann(x), model(x), rtol=1e-5, atol=1e-6)
