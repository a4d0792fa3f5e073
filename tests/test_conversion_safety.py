"""Models that could fool a converter into a silently wrong number: each converts correctly or is refused."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import signgd


class _Fn(nn.Module):
    """A model from a forward function over two linear layers (fc: 6 -> 6, head: 6 -> 3)."""

    def __init__(self, fn):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, x)


def _inplace_discarded(m, x):
    h = m.fc(x)
    F.relu_(h)
    return m.head(h)


def _inplace_module_discarded(m, x):
    h = m.fc(x)
    m.relu(h)
    return m.head(h)


def _inplace_alias(m, x):
    h = m.fc(x)
    a = F.relu(h, inplace=True)
    return m.head(a + h)


def _inplace_method_after_dropout(m, x):
    h = m.drop(m.fc(x))
    h.add_(1)
    h.mul_(2)
    return m.head(torch.relu(h))


def _relu_keyword_input(m, x):
    return m.head(torch.relu(input=m.fc(x)))


def _shape_arithmetic(m, x):
    h = torch.relu(m.fc(x))
    h = h.view(h.shape[0], -1)
    return m.head(h) + h.sum(-1, keepdim=True) / h.size(-1)


@pytest.mark.parametrize("fn", [_inplace_discarded, _inplace_module_discarded, _inplace_alias,
                                _inplace_method_after_dropout, _relu_keyword_input, _shape_arithmetic])
def test_tricky_but_convertible_models_keep_their_numbers(fn):
    torch.manual_seed(0)
    model = _Fn(fn).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        expected = model(x.clone())
    snn = signgd.convert(model, x, schedule="exponential")
    assert torch.allclose(snn.ann(x), expected, atol=1e-6)
    assert any(m.target == "relu" for m in snn.neurons.values())


@pytest.mark.parametrize("fn,match", [
    (lambda m, x: m.head(2.0 / (m.fc(x).abs() + 1)), "truediv"),  # a reciprocal: no neuron yet
    (lambda m, x: m.head(1.0 / m.fc(x)), "truediv"),
    (lambda m, x: m.head(torch.div(m.fc(x), 2, rounding_mode="floor")), "div"),
    (lambda m, x: m.head(m.fc(x).to(torch.int64).float()), "to"),
    (lambda m, x: m.head(torch.sign(m.fc(x))), "sign"),
    (lambda m, x: m.head(torch.floor(m.fc(x)) * m.fc(x).sort(-1).values), "floor.*sort"),
])
def test_nonlinear_ops_in_disguise_are_refused(fn, match):
    with pytest.raises(signgd.UnsupportedOperationError, match=match):
        signgd.convert(_Fn(fn).eval(), torch.randn(4, 6), schedule="exponential")


def test_batch_coupled_models_are_refused():
    model = _Fn(lambda m, x: m.head(torch.relu(m.fc(x) - m.fc(x).mean()))).eval()
    with pytest.raises(signgd.ConversionError, match="depends on the other samples"):
        signgd.convert(model, torch.randn(4, 6), schedule="exponential")
    bn = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6, track_running_stats=False), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(signgd.UnsupportedOperationError, match="without running statistics"):
        signgd.convert(bn.eval(), torch.randn(4, 6), schedule="exponential")


def test_shared_conv_is_not_folded_into_one_of_its_batchnorms():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            return (torch.relu(self.bn(self.conv(x))) + self.conv(x)).flatten(1)

    torch.manual_seed(0)
    model = Net().eval()
    model.bn.running_mean.fill_(0.5)
    model.bn.running_var.fill_(3.0)
    x = torch.randn(3, 2, 4, 4)
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(signgd.convert(model, x, schedule="exponential").ann(x), expected, atol=1e-5)


def test_linear_batchnorm1d_on_sequences_is_not_folded_wrongly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Flatten(), nn.Linear(25, 3)).eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(4, 5, 5)  # (N, C, L) with C == L: BN normalizes dim 1, the Linear acts on dim 2
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(signgd.convert(model, x, schedule="exponential").ann(x), expected, atol=1e-5)


def test_inplace_op_on_the_input_never_reaches_the_callers_tensor():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x.sub_(0.5)
            return self.fc(torch.relu(x))

    torch.manual_seed(0)
    x = torch.rand(3, 4)
    snn = signgd.convert(Net().eval(), x, encoding="analog", schedule="exponential")
    before = x.clone()
    one = snn(x, T=6, chunk=1)
    assert torch.equal(x, before)
    assert torch.allclose(one, snn(x, T=6, chunk=6))


def test_padding_value_reached_by_the_data_warns():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2, padding=1), nn.Flatten()).eval()
    with torch.no_grad():
        model[0].weight.fill_(1000.0)
    x = -torch.rand(2, 1, 4, 4) - 0.5  # inputs of -500 and below: the padding (-200) would win
    with pytest.warns(UserWarning, match="padding value"), pytest.raises(signgd.ConversionError):
        signgd.convert(model, x, schedule="exponential")
    assert torch.allclose(signgd.convert(model, x, pad_value=-1e9, schedule="exponential").ann(x), model(x).detach())


def test_a_converted_network_stays_in_eval_mode():
    snn = signgd.convert(_Fn(_relu_keyword_input).eval(), torch.randn(4, 6), schedule="exponential")
    with pytest.raises(RuntimeError, match="eval mode only"):
        snn.train()
    assert snn.eval() is snn and not snn.training


def test_evaluate_accepts_column_labels_and_refuses_float_labels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(20, 6)
    snn = signgd.convert(model, x, schedule="exponential")
    y = model(x).argmax(-1)
    report = signgd.evaluate(snn, (x, y.unsqueeze(1)), T=[64])
    assert report.ann_accuracy == 1.0
    with pytest.raises(ValueError, match="class indices"):
        signgd.evaluate(snn, (x, y.float()), T=[8])
    with pytest.raises(ValueError, match="limit"):
        signgd.evaluate(snn, (x, y), T=[8], limit=0)


def test_numpy_and_tensor_step_counts_are_accepted():
    snn = signgd.convert(_Fn(_relu_keyword_input).eval(), torch.randn(4, 6), schedule="exponential")
    x = torch.randn(2, 6)
    assert torch.equal(snn(x, T=np.int64(8)), snn(x, T=8))
    assert sorted(snn(x, T=torch.tensor([4, 8]))) == [4, 8]


def test_negative_step_sizes_are_refused():
    with pytest.raises(ValueError, match="negative"):
        signgd.schedules.make_schedule(torch.tensor([0.1, -0.1])).etas(1, 3)


class _Overflow(nn.Module):
    """Finite weights and inputs, but an intermediate value overflows to Inf (then NaN after * 0)."""

    def __init__(self, then_zero: bool):
        super().__init__()
        self.fc, self.head, self.then_zero = nn.Linear(4, 4), nn.Linear(4, 2), then_zero

    def forward(self, x):
        h = self.fc(x) * 1e30 * 1e30
        return self.head(torch.relu(h) * 0) if self.then_zero else self.head(torch.relu(h))


@pytest.mark.parametrize("then_zero", [False, True])
def test_nan_or_inf_appearing_inside_the_model_names_the_node(then_zero):
    torch.manual_seed(0)
    with pytest.raises(signgd.CalibrationError) as info:
        signgd.convert(_Overflow(then_zero).eval(), torch.rand(5, 4) + 0.5, schedule="exponential")
    message = str(info.value)
    assert "gives NaN or Inf on the calibration data; the first one appears at node 'mul_1' (mul)" in message
    assert "\n" not in message and "Fix the model" in message


def test_nan_in_a_later_calibration_batch_is_one_clear_line():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    batches = [torch.rand(3, 4), torch.rand(3, 4) * 1e38 * 10]  # the second overflows: 1e39 is Inf in float32
    with pytest.raises(signgd.CalibrationError, match="calibration batch 1 contains NaN or Inf") as info:
        signgd.convert(model, batches, schedule="exponential")
    assert "\n" not in str(info.value)
    big = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        big[0].weight.fill_(1e38)
    with pytest.raises(signgd.CalibrationError, match=r"neuron 'neurons._1' produced NaN or Inf") as info:
        signgd.convert(big, [torch.rand(3, 4) * 1e-38, torch.rand(3, 4) + 1],
                       schedule="exponential")  # finite first batch, Inf later
    assert "\n" not in str(info.value) and "While executing" not in str(info.value)


@pytest.mark.parametrize("calibration,match", [
    (torch.rand(4, 3, 8, 8), r"expected input\[4, 3, 8, 8\] to have 1 channels"),
    (torch.rand(4, 64), "Expected 3D .*or 4D .*input to conv2d"),
    (torch.randint(0, 255, (4, 1, 8, 8), dtype=torch.uint8), "dtype torch.uint8; pass float inputs"),
    (torch.rand(4, 1, 8, 8, dtype=torch.complex64), "dtype torch.complex64; pass float inputs"),
])
def test_calibration_of_the_wrong_shape_or_dtype_is_one_clear_line(calibration, match):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)).eval()
    with pytest.raises(signgd.CalibrationError, match=match) as info:
        signgd.convert(model, calibration, schedule="exponential")
    assert "\n" not in str(info.value)


def test_a_softmax_that_overflows_its_exp_names_the_op_and_why():
    """A softmax is shifted by its row maximum only when the logits of the first calibration samples come near
    exp's range (tests/test_softmax_shift.py); a later batch whose logits overflow it gives one line that says so."""
    model = nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=-1), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    small, large = torch.rand(3, 4) + 0.5, torch.rand(3, 4) + 40
    assert torch.isfinite(model(large)).all()  # the ANN is finite
    with pytest.raises(signgd.CalibrationError, match=r"\(exp\) overflows on the calibration data: its inputs "
                       r"are finite, up to \d+.*only when the logits of the first calibration samples") as info:
        signgd.convert(model, [small, large], schedule="exponential")
    assert "\n" not in str(info.value) and "not finite here" not in str(info.value)
