"""Single neurons driven by hand: signGD tracking, and the subgradient neuron against classic IF."""
import pytest
import torch

from signgd import schedules
from signgd.neurons import SpikingNeuron, signgd_fire, signgd_update, subgradient_step


def _track(targets: torch.Tensor, etas: torch.Tensor) -> torch.Tensor:
    y = torch.zeros_like(targets)
    for eta in etas:
        y = signgd_update(y, signgd_fire(y, targets), eta)
    return y


def test_signgd_neuron_tracks_a_fixed_target_within_the_last_step():
    # Reachable targets (|f| < sum of steps) end within eta_T: the error bound of sign descent.
    etas = schedules.exponential().etas(1, 129, torch.float64)
    f = torch.linspace(-2.5, 2.5, 501, dtype=torch.float64)
    err = (_track(f, etas) - f).abs()
    assert err.max() <= etas[-1] + 1e-12


def test_signgd_neuron_cannot_pass_the_sum_of_its_steps():
    etas = schedules.exponential().etas(1, 2000, torch.float64)
    y = _track(torch.tensor([10.0, -10.0], dtype=torch.float64), etas)
    assert torch.allclose(y.abs(), etas.sum().expand(2))  # ~3: why activations are normalized


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_neuron_layer_runs_over_time_as_one_step_at_a_time(dtype):
    torch.manual_seed(0)
    neuron = SpikingNeuron("relu").to(dtype)
    neuron.set_scale(torch.rand(5, dtype=dtype) + 0.5)
    x = torch.randn(20, 3, 5, dtype=dtype)  # [T, B, 5]: a varying input
    etas = schedules.exponential().etas(1, 21, dtype)
    whole_state = neuron.init_state(x[0], "signgd")
    whole = neuron.run(whole_state, (x,), etas, "signgd")
    state = neuron.init_state(x[0], "signgd")
    steps = torch.cat([neuron.run(state, (x[t:t + 1],), etas[t:t + 1], "signgd") for t in range(20)])
    assert torch.equal(whole, steps)
    # By hand, in normalized units: fire against relu(x)/s, move by eta, pass s*y downstream.
    y = torch.zeros(3, 5, dtype=dtype)
    for t in range(20):
        s = y >= torch.relu(x[t]) / neuron.scale
        y = y - etas[t] * (2 * s.to(dtype) - 1)
        assert torch.allclose(whole[t], y * neuron.scale)


def test_spike_counts_are_the_spikes_fired():
    neuron = SpikingNeuron("max")
    a, b = torch.randn(30, 2, 4), torch.randn(30, 2, 4)
    etas = schedules.exponential().etas(1, 31)
    counts = torch.zeros(30, dtype=torch.float64)
    neuron.run(neuron.init_state(a[0], "signgd"), (a, b), etas, "signgd", counts)
    y, expected = torch.zeros(2, 4), []
    for t in range(30):
        s = signgd_fire(y, torch.maximum(a[t], b[t]))
        expected.append(float(s.sum()))
        y = signgd_update(y, s, etas[t])
    assert counts.tolist() == expected


def _integrate_and_fire(current: torch.Tensor, v0: float, threshold: float = 1.0) -> torch.Tensor:
    """The classic IF neuron with reset by subtraction (fires when v exceeds the threshold)."""
    v, out = torch.full_like(current[0], v0), []
    for c in current:
        v = v + c
        s = (v > threshold).to(current.dtype)
        v = v - threshold * s
        out.append(s)
    return torch.stack(out)


def test_subgradient_neuron_is_an_integrate_and_fire_neuron():
    # With a constant input current a and x_0 = a (the running average starts at the input), the
    # subgradient neuron fires exactly when an IF neuron with v_0 = threshold = 1 does: the spike
    # condition x_t > y_{t-1} is t*a > (spikes so far), i.e. 1 + t*a - spikes > 1.
    torch.manual_seed(0)
    a = torch.rand(400, dtype=torch.float64) * 2 - 0.5
    T = 300
    x, y, spikes = a.clone(), torch.zeros_like(a), []
    for t in range(1, T + 1):
        x, y, s = subgradient_step(x, y, a, 1.0 / (t + 1))
        spikes.append(s)
    spikes = torch.stack(spikes)
    reference = _integrate_and_fire(a.expand(T, -1), v0=1.0)
    assert torch.equal(spikes, reference)
    # ...and its output estimate is the running spike rate, which tends to clip(a, 0, 1).
    assert torch.allclose(y, spikes.sum(0) / (T + 1))
    assert (y - a.clamp(0, 1) * T / (T + 1)).abs().max() <= 1.0 / (T + 1) + 1e-12


def test_subgradient_neuron_with_a_bias_start_stays_within_two_spikes_of_if():
    # In a network x_0 = A(0) (the bias), not the input: the start sample shifts the charge by
    # about (A(0) - a), so the spike counts can differ, here by at most two.
    torch.manual_seed(1)
    a = torch.rand(200, dtype=torch.float64) * 1.2 - 0.1
    bias = torch.rand(200, dtype=torch.float64) * 0.4 - 0.2
    T = 256
    x, y, total = bias.clone(), torch.zeros_like(a), torch.zeros_like(a)
    for t in range(1, T + 1):
        x, y, s = subgradient_step(x, y, a, 1.0 / (t + 1))
        total += s
    reference = _integrate_and_fire(a.expand(T, -1), v0=1.0).sum(0)
    assert (total - reference).abs().max() <= 2


@pytest.mark.parametrize("target,params", [
    ("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("gelu", {"approximate": "none"}),
    ("gelu", {"approximate": "tanh"}), ("silu", {}), ("sigmoid", {}), ("tanh", {}), ("hardswish", {}),
    ("hardsigmoid", {}), ("hardtanh", {"min_val": 0.0, "max_val": 6.0}), ("elu", {"alpha": 0.7}),
    ("mish", {}), ("abs", {}), ("exp", {})])
def test_in_place_targets_equal_the_target_functions(target, params):
    """A neuron that owns its input computes its target in that buffer; the numbers are the
    target function's, bit for bit."""
    from signgd.neurons import _INPLACE
    from signgd.targets import get_target

    x = torch.randn(3, 5, 1031, generator=torch.Generator().manual_seed(0)) * 4
    x.view(-1)[::97] = 0.0
    expected = get_target(target).fn(x, **params)
    got = _INPLACE[target](x.clone(), **params)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("owned", [False, True])
def test_layernorm_neurons_fused_scan_equals_the_target_computed_first(dtype, owned):
    """The square and divide_sqrt neurons compute their targets inside the scan: the same
    numbers as computing the target with torch, normalizing it, then scanning."""
    from signgd.kernels import signgd_scan
    from signgd.targets import divide_sqrt

    g = torch.Generator().manual_seed(0)
    c = torch.randn(6, 4, 8, 16, generator=g, dtype=dtype)             # [T, B, tokens, channels]
    v = torch.rand(6, 4, 8, 1, generator=g, dtype=dtype) * 2            # variance estimates, some < eps
    v.view(-1)[::5] = 1e-7
    etas = schedules.exponential().etas(1, 7, dtype)
    for name, xs, f in [("square", (c,), torch.square(c)), ("divide_sqrt", (c, v), divide_sqrt(c, v, 1e-5))]:
        neuron = SpikingNeuron(name, {"eps": 1e-5} if name == "divide_sqrt" else {}).to(dtype)
        neuron.set_scale(torch.rand(8, 16, generator=g, dtype=dtype) + 0.5)
        state = neuron.init_state(c[0], "signgd")
        counts = torch.zeros(6, dtype=torch.float64)
        inputs = tuple(x.clone() for x in xs)
        out = neuron.run(state, inputs, etas, "signgd", counts, owned=owned)
        ref_counts = torch.zeros(6, dtype=torch.float64)
        ref, y = signgd_scan(f / neuron.scale, torch.zeros_like(c[0]), etas, neuron.scale, ref_counts,
                             backend="torch")
        assert torch.equal(out, ref) and torch.equal(state["y"], y) and torch.equal(counts, ref_counts)
        assert (out.data_ptr() == inputs[0].data_ptr()) == owned  # owned: written over its input
        assert torch.equal(inputs[1 % len(inputs)], xs[1 % len(xs)]) or name == "square"
