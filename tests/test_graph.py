"""The conversion passes on the ANN side: the rewritten graph computes what the model computed."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import signgd
from signgd.neurons import SpikingNeuron


def _convert(model, x, **kw):
    return signgd.convert(model, x, **kw)


def _max_neurons(snn):
    return [n for n, m in snn.neurons.items() if m.target == "max"]


def test_bn_folding_equals_the_unfolded_ann():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(16, 3, 8, 8)
    snn = _convert(model, x)
    kinds = [type(m) for m in snn.graph_module.modules()]
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)  # all folded
    assert "folded 3 BatchNorm layers into the preceding conv/linear" in snn.conversion_log
    assert torch.allclose(snn.ann(x), model(x), atol=1e-5)


def test_standalone_batchnorm_stays_as_an_affine_op():
    model = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    model[0].running_mean.fill_(0.3)
    x = torch.randn(4, 2, 4, 4)
    snn = _convert(model, x)
    assert torch.allclose(snn.ann(x), model(x), atol=1e-6)


POOLS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),  # ResNet's stem pooling
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=3, stride=2, padding=1, dilation=2),
    dict(kernel_size=5, stride=3, padding=2, ceil_mode=True),
]


@pytest.mark.parametrize("params", POOLS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_max_neuron_tree_equals_maxpool2d(params):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(**params)).eval()
    x = torch.randn(3, 2, 11, 9)
    snn = _convert(model, x)
    assert torch.equal(snn.ann(x), model(x))
    assert not any(isinstance(m, nn.MaxPool2d) for m in snn.graph_module.modules())
    k = params["kernel_size"]
    kh, kw = (k, k) if isinstance(k, int) else k
    levels = lambda n: (n - 1).bit_length()  # ceil(log2 n) levels of 2-input max neurons
    assert len(_max_neurons(snn)) == levels(kh) + levels(kw)


def test_functional_max_pool_and_maxpool1d_become_trees():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3)
            self.pool = nn.MaxPool1d(3, 2)

        def forward(self, x):
            y = self.pool(self.conv(x))
            return F.max_pool1d(y, 2).flatten(1)

    model = Net().eval()
    x = torch.randn(5, 2, 20)
    snn = _convert(model, x)
    assert torch.equal(snn.ann(x), model(x))
    assert len(_max_neurons(snn)) == 3


class _Spellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.ident = nn.Identity()

    def forward(self, x):
        a = self.act(self.fc(x))
        b = F.relu(self.fc(a))
        c = torch.relu(self.fc(b))
        d = self.fc(c).relu()
        e = F.relu(self.fc(d), inplace=True)
        f = self.drop(self.ident(self.fc(e))).relu_()
        return f + a


def test_every_spelling_of_relu_becomes_a_neuron_and_dropout_identity_vanish():
    model = _Spellings().eval()
    x = torch.randn(7, 6)
    snn = _convert(model, x)
    assert [m.target for m in snn.neurons.values()] == ["relu"] * 6
    assert not any(isinstance(m, (nn.Dropout, nn.Identity, nn.ReLU)) for m in snn.graph_module.modules())
    assert torch.allclose(snn.ann(x), model(x))


def test_unsupported_ops_are_all_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.PReLU()

        def forward(self, x):
            h = self.fc(x)
            return self.act(h) + torch.sign(h) + torch.floor(h) + 2.0 * h

    with pytest.raises(signgd.UnsupportedOperationError) as info:
        _convert(Net().eval(), torch.randn(3, 4))
    names = [n for n, _, _ in info.value.nodes]
    assert names == ["act", "sign", "floor"]  # 2.0 * h is affine and allowed
    msg = str(info.value)
    assert "PReLU" in msg and "sign" in msg and "floor" in msg and "GELU" in msg


def test_maxpool_with_indices_is_refused_clearly():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.pool = nn.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            values, _ = self.pool(self.conv(x))
            return values.flatten(1)

    with pytest.raises(signgd.UnsupportedOperationError, match="return_indices"):
        _convert(Net().eval(), torch.randn(2, 1, 8, 8))


def test_model_returning_a_tuple_is_refused_clearly():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(signgd.ConversionError, match="returns tuple"):
        _convert(Net().eval(), torch.randn(2, 4))


def test_untraceable_model_names_the_problem_and_the_fix():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return x

    with pytest.raises(signgd.TraceError, match="control flow"):
        _convert(Net().eval(), torch.randn(3, 4))


def test_conversion_never_touches_the_users_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 3))
    model.train()
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match="training mode"):
        snn = _convert(model, torch.randn(8, 1, 8, 8))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model[2], nn.ReLU) and isinstance(model[3], nn.MaxPool2d)
    assert all(isinstance(m, SpikingNeuron) for m in snn.neurons.values())
