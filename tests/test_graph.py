"""The conversion passes on the ANN side: the rewritten graph computes what the model computed."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import signgd
from signgd.neurons import SpikingNeuron


def _convert(model, x, **kw):
    if kw.get("dynamics", "signgd") == "signgd" and not {"preset", "T", "schedule"} & set(kw):
        kw["schedule"] = "exponential"  # the paper's schedule, untuned: these tests are about the graph
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

    def levels(n):  # ceil(log2 n) levels of 2-input max neurons
        return (n - 1).bit_length()
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

    with pytest.raises(signgd.TraceError, match="control flow") as info:
        _convert(Net().eval(), torch.randn(3, 4))
    assert "in Net.forward at " in str(info.value) and "`if x.sum() > 0:" in str(info.value)


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.shape[0] > 1:  # shape-dependent control flow: fx sees a proxy
            x = x * 2
        return self.fc(x)


def test_untraceable_submodule_is_named_with_its_line_and_the_leaf_module_option():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Identity(), _Branchy())).eval()
    with pytest.raises(signgd.TraceError) as info:
        _convert(model, torch.randn(3, 4))
    message = str(info.value)
    assert "in module '2.1' (_Branchy) at " in message and "test_graph.py:" in message
    assert "`if x.shape[0] > 1:" in message and "leaf_modules=[_Branchy]" in message
    assert "\n" not in message


class _ReLUConv(nn.Conv2d):
    """A Conv2d subclass whose forward adds a nonlinearity."""

    def forward(self, x):
        return torch.relu(super().forward(x))


def test_a_leaf_subclass_that_overrides_forward_is_not_taken_for_its_base():
    model = nn.Sequential(_ReLUConv(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    x = torch.rand(4, 1, 8, 8)
    traced_into = _convert(model, x)  # default: fx traces into the subclass and sees the ReLU
    assert [m.target for m in traced_into.neurons.values()] == ["relu"]
    assert torch.allclose(traced_into.ann(x), model(x), atol=1e-5)
    # As a leaf, its forward is invisible: refused, not converted as a plain (affine) Conv2d.
    with pytest.raises(signgd.UnsupportedOperationError, match="_ReLUConv: overrides the forward of Conv2d"):
        _convert(model, x, leaf_modules=[_ReLUConv])


def _snapshot(model: nn.Module) -> dict:
    """Everything conversion could change on a model, deep-copied."""
    return {"state": copy.deepcopy(model.state_dict()),
            "params": [(n, p.requires_grad, None if p.grad is None else p.grad.clone())
                       for n, p in model.named_parameters()],
            "training": [(n, m.training) for n, m in model.named_modules()],
            "modules": [(n, type(m)) for n, m in model.named_modules()],
            "hooks": [(n, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
                      for n, m in model.named_modules()],
            "attributes": [(n, sorted(vars(m))) for n, m in model.named_modules()]}


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys() or a["state"].keys() != b["state"].keys():
        return False
    if not all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"]):
        return False
    for (n1, r1, g1), (n2, r2, g2) in zip(a["params"], b["params"]):
        if (n1, r1) != (n2, r2) or (g1 is None) != (g2 is None) or (g1 is not None and not torch.equal(g1, g2)):
            return False
    return all(a[k] == b[k] for k in ("training", "modules", "hooks", "attributes"))


def test_conversion_never_touches_the_users_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Dropout(0.5), nn.Linear(4 * 3 * 3, 3))
    model.train()
    model[0].weight.requires_grad_(False)
    model(torch.randn(2, 1, 8, 8)).sum().backward()  # gradients present
    calls = []
    model[0].register_forward_hook(lambda mod, args, out: calls.append("forward"))
    model[6].register_forward_pre_hook(lambda mod, args: calls.append("pre"))
    model[6].register_full_backward_hook(lambda mod, gin, gout: calls.append("backward"))
    before = _snapshot(model)
    with pytest.warns(UserWarning) as caught:
        snn = _convert(model, torch.randn(8, 1, 8, 8))
    messages = " ".join(str(w.message) for w in caught)
    assert "training mode" in messages
    assert "does not convert hooks: 0 (Conv2d: forward hook); 6 (Linear: forward pre-hook, backward hook)" in messages
    assert _same(before, _snapshot(model))  # weights, buffers, grads, flags, modules, hooks, attributes
    x = torch.randn(3, 1, 8, 8)
    snn(x, T=4), snn.ann(x)
    assert calls == []  # the user's hooks never ran (conversion and simulation use a copy without them)
    assert all(isinstance(m, SpikingNeuron) for m in snn.neurons.values())
    model.eval()
    with torch.no_grad():  # ... and the network computes the model in eval mode
        assert torch.allclose(snn.ann(x), model(x), atol=1e-5)


def test_a_model_in_eval_mode_with_one_submodule_in_training_mode_warns():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.ReLU(), nn.Linear(4, 2)).eval()
    model[1].train()
    with pytest.warns(UserWarning, match="training mode"):
        snn = _convert(model, torch.randn(5, 4))
    assert model[1].training and not model.training
    x = torch.randn(3, 4)
    assert torch.allclose(snn.ann(x), model.eval()(x), atol=1e-6)  # Dropout removed, as in eval mode


@pytest.mark.parametrize("wrap", [nn.utils.weight_norm, nn.utils.spectral_norm])
def test_weight_computing_hooks_are_applied_once_on_the_copy(wrap):
    torch.manual_seed(0)
    with pytest.warns(FutureWarning) if wrap is nn.utils.weight_norm else _no_warning():
        model = nn.Sequential(wrap(nn.Linear(4, 8)), nn.ReLU(), nn.Linear(8, 2)).eval()
    with torch.no_grad():
        for p in model[0].parameters():
            p.mul_(1.5)  # the weight the hook cached is now stale; the next forward recomputes it
    before = _snapshot(model)
    x = torch.rand(6, 4)
    snn = _convert(model, x)  # no warning about hooks: these are applied, then dropped
    assert _same(before, _snapshot(model))
    with torch.no_grad():
        assert torch.allclose(snn.ann(x), model(x), atol=1e-5)


def _no_warning():
    import contextlib
    return contextlib.nullcontext()


def test_a_model_that_cannot_be_deep_copied_is_refused_with_the_fix():
    import threading
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    model.lock = threading.Lock()
    with pytest.raises(signgd.ConversionError, match="cannot deep-copy Sequential.*lock.*never touched.*__deepcopy__"):
        _convert(model, torch.randn(3, 4))
