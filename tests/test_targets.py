"""Every unary target: a single signGD neuron tracks f(x) within the schedule's final step, and every
torch spelling of it (module, function, method, parameters) reaches the right target."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import signgd
from signgd import schedules, targets
from signgd.neurons import SpikingNeuron

T = 256
GRID = torch.linspace(-2.5, 2.5, 101)

# target name, params, input grid (chosen so |f(x)| stays inside the reach sum(eta) = 3)
UNARY = [
    ("relu", {}, GRID),
    ("leaky_relu", {"negative_slope": 0.1}, GRID),
    ("gelu", {"approximate": "none"}, GRID),
    ("gelu", {"approximate": "tanh"}, GRID),
    ("silu", {}, GRID),
    ("sigmoid", {}, GRID),
    ("tanh", {}, GRID),
    ("hardswish", {}, GRID),
    ("hardsigmoid", {}, GRID),
    ("hardtanh", {"min_val": 0.0, "max_val": 2.0}, GRID),
    ("elu", {"alpha": 1.0}, GRID),
    ("softplus", {"beta": 1.0, "threshold": 20.0}, GRID),
    ("mish", {}, GRID),
    ("abs", {}, GRID),
    ("square", {}, torch.linspace(-1.6, 1.6, 81)),
    ("exp", {}, torch.linspace(-3.0, 1.0, 81)),
    ("sqrt", {}, torch.linspace(0.0, 2.5, 81)),
]


@pytest.mark.parametrize("name,params,grid", UNARY, ids=[f"{n}-{p}" for n, p, _ in UNARY])
def test_unary_neuron_tracks_its_target_within_the_last_step(name, params, grid):
    neuron = SpikingNeuron(name, params)
    etas = schedules.exponential().etas(1, T + 1, dtype=torch.float64)
    xs = grid.double().expand(T, -1).unsqueeze(1)  # [T, 1, grid]: the same input at every step
    state = neuron.init_state(xs[0], "signgd")
    out = neuron.run(state, (xs,), etas, "signgd")
    expected = targets.get_target(name).fn(grid.double(), **params)
    err = (out[-1, 0] - expected).abs().max()
    # Once the estimate has reached its target it stays within one step of it: the last steps.
    assert err <= 2 * float(etas[-8:].max()) + 1e-12, f"{name}: max error {float(err):.3g}"
    # It also converges from the start: half way its error is already small.
    assert (out[T // 2 - 1, 0] - expected).abs().max() < 1e-2


def _converted_target(module: nn.Module):
    model = nn.Sequential(nn.Linear(3, 3), module, nn.Linear(3, 2)).eval()
    snn = signgd.convert(model, torch.randn(6, 3), schedule="exponential")
    (neuron,) = snn.neurons.values()
    return neuron.target, neuron.params


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("module,expected", [
    (nn.LeakyReLU(0.2), ("leaky_relu", {"negative_slope": 0.2})),
    (_Fn(lambda x: F.leaky_relu(x, 0.3)), ("leaky_relu", {"negative_slope": 0.3})),
    (_Fn(lambda x: F.leaky_relu(x, negative_slope=0.4, inplace=False)), ("leaky_relu", {"negative_slope": 0.4})),
    (nn.GELU(approximate="tanh"), ("gelu", {"approximate": "tanh"})),
    (_Fn(lambda x: F.gelu(x)), ("gelu", {"approximate": "none"})),
    (nn.ReLU6(), ("hardtanh", {"min_val": 0.0, "max_val": 6.0})),
    (_Fn(F.relu6), ("hardtanh", {"min_val": 0.0, "max_val": 6.0})),
    (nn.Hardtanh(-2.0, 3.0), ("hardtanh", {"min_val": -2.0, "max_val": 3.0})),
    (nn.SiLU(), ("silu", {})),
    (_Fn(lambda x: x.sigmoid()), ("sigmoid", {})),
    (_Fn(lambda x: x.tanh()), ("tanh", {})),
    (_Fn(lambda x: x ** 2), ("square", {})),
    (_Fn(lambda x: x.pow(2)), ("square", {})),
    (_Fn(torch.abs), ("abs", {})),
    (_Fn(lambda x: x.exp()), ("exp", {})),
    (_Fn(lambda x: torch.sqrt(x + 5)), ("sqrt", {})),
    (_Fn(lambda x: (x + 5).sqrt_()), ("sqrt", {})),
    (nn.ELU(0.5), ("elu", {"alpha": 0.5})),
    (nn.Softplus(2.0), ("softplus", {"beta": 2.0, "threshold": 20.0})),
    (nn.Mish(), ("mish", {})),
    (nn.Hardswish(), ("hardswish", {})),
])
def test_each_spelling_reaches_its_target_with_its_parameters(module, expected):
    assert _converted_target(module) == expected


def test_nonlinearity_of_constants_is_not_a_neuron():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.log_scale = nn.Parameter(torch.tensor([0.1, -0.2, 0.3]))

        def forward(self, x):
            return torch.relu(self.fc(x)) * torch.exp(self.log_scale) + torch.sigmoid(self.log_scale)

    model = Gate().eval()
    x = torch.randn(5, 3)
    snn = signgd.convert(model, x, schedule="exponential")
    assert [n.target for n in snn.neurons.values()] == ["relu"]
    assert torch.allclose(snn.ann(x), model(x), atol=1e-6)


def test_target_table_documents_every_entry():
    listing = targets.describe()
    for name in targets.TARGETS:
        assert name in listing
    assert all(targets.TARGETS[n].arity == 2 for n in ("max", "mul", "matmul", "divide", "divide_sqrt"))


def test_divide_keeps_estimates_finite_near_zero_denominators():
    a = torch.tensor([1.0, -1.0, 0.0, 2.0])
    b = torch.tensor([0.0, -0.0, 0.0, 4.0])
    out = targets.get_target("divide").fn(a, b)
    assert torch.isfinite(out).all() and out[3] == 0.5
    assert out[0] > 0 and out[1] < 0
    v = torch.tensor([-1.0, 0.0, 4.0])
    assert torch.allclose(targets.divide_sqrt(torch.ones(3), v, eps=1e-4),
                          torch.tensor([100.0, 100.0, 0.5]))


def test_reach_bound_matches_the_schedule():
    # The grid bounds above rely on the default schedule's total reach of 3 units.
    etas = schedules.exponential().etas(1, 10_000, dtype=torch.float64)
    assert math.isclose(float(etas.sum()), 3.0, rel_tol=1e-6)
