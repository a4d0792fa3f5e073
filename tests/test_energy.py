"""The energy count: exact against the literal event-driven count, by hand on small nets, bounded by
the dense synapse count, and what the report shows."""
from __future__ import annotations

import pytest
import torch
from model_helpers import fast_count
from torch import nn

import signgd
from signgd import models
from signgd.costs import op_costs
from signgd.report import energy
from signgd.report.event_count import count_operations
from signgd.schedules import adaptive


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 2 * 2, 10))


_NETS = {"cnn": _cnn, "resnet": lambda: models.SmallResNet(widths=(4, 6, 8)),
         "mixer": lambda: models.tiny_mixer(image_size=8), "vit": lambda: models.tiny_vit(image_size=8)}
_FAST = {("cnn", "float", "binary"), ("cnn", "spike", "adaptive"), ("cnn", "analog", "binary"),
         ("cnn", "stochastic", "adaptive"), ("resnet", "float", "adaptive"), ("resnet", "spike", "binary"),
         ("cnn", "analog", "sparse"), ("vit", "analog", "sparse"), ("cnn", "float", "pow2"),
         ("resnet", "spike", "pow2"), ("cnn", "analog", "graded"), ("mixer", "analog", "graded")}
_CASES = [pytest.param(net, enc, neuron, marks=() if (net, enc, neuron) in _FAST else pytest.mark.slow)
          for net in _NETS for enc in ("float", "spike", "stochastic", "analog")
          for neuron in ("binary", "adaptive", "sparse", "pow2", "graded")]
_NEURONS = {"binary": {"schedule": "exponential"}, "adaptive": {"schedule": adaptive()},
            "pow2": {"schedule": adaptive(0.25, pow2=True)},  # power-of-two steps: receivers shift
            # power-of-two steps with a floor: the threshold stays put between its changes, so a neuron
            # checks its gap only where it must (costs.changed.checked_mask)
            "sparse": {"dynamics": "sparse", "schedule": "exponential:lr=0.3,decay=0.8,floor=0.0625,pow2=1"},
            # the same band: the same checks (only the steps differ)
            "graded": {"dynamics": "graded", "schedule": "exponential:lr=0.3,decay=0.8,floor=0.0625,pow2=1"}}


@pytest.mark.parametrize("net,encoding,neuron", _CASES)
def test_fast_count_equals_the_literal_event_driven_count(net, encoding, neuron):
    """Exact integers, node by node and step by step: the report's count on the fast simulator and the
    count taken on ``signgd.event_driven``'s spike exchange (Jacobians of each node, no shared rule);
    for the sparse and graded neurons also their events (input elements that received something, outputs evaluated,
    spikes, checks of the gap) layer by layer."""
    torch.manual_seed(0)
    model = _NETS[net]().eval().double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    snn = signgd.convert(model, x, encoding=encoding, **_NEURONS[neuron])
    T = 8
    (literal, literal_events), (fast, fast_events) = count_operations(snn, x, T, events=True), \
        fast_count(snn, x, T, events=True)
    assert set(literal) == set(fast)
    for node in literal:
        assert torch.equal(literal[node], fast[node]), (node, literal[node].sum(0), fast[node].sum(0))
    total = sum(float(v.sum()) for v in fast.values())
    assert total > 0 and total == int(total)
    assert set(literal_events) == set(fast_events) - {"readout"}
    assert (neuron in ("sparse", "graded")) == bool(literal_events)
    for name, ev in literal_events.items():
        assert torch.equal(ev, fast_events[name]), (name, ev.sum(0), fast_events[name].sum(0))
        assert float(ev[:, 2].sum()) > 0  # it fired
        # the threshold changes at steps 1, 4 and 7: every neuron checks there, at most that many between
        assert ev[[0, 3, 6], 3].eq(ev[0, 3]).all() and ev[:, 3].le(ev[0, 3]).all()
    if literal_events:  # and somewhere a neuron with nothing new skips its check
        assert any(float(ev[[1, 2, 4, 5, 7], 3].min()) < float(ev[0, 3]) for ev in literal_events.values())


def test_an_mlp_by_hand(digits_train):
    """Linear(64, 16), ReLU, Linear(16, 10) on float input: the first layer multiplies every input that
    changed (all 64 pixels that are not 0, each reaching 16 outputs), the second adds 10 weights per
    spike; the ANN does 64*16 + 16*10 MACs, 26 bias adds and 16 ReLU comparisons."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    x = digits_train.tensors[0][:20]
    snn = signgd.convert(model, x, schedule="exponential", encoding="float")
    ann = energy.ann_costs(snn)
    assert sum(mac for _, mac in ann.values()) == 64 * 16 + 16 * 10
    assert sum(ac for ac, _ in ann.values()) == 16 + 10 + 16
    T = 5
    counts = fast_count(snn, x, T)
    linear1, linear2 = [n.name for n in snn.graph_module.graph.nodes if n.op == "call_module"
                        and isinstance(snn.graph_module.get_submodule(n.target), nn.Linear)]
    nonzero_pixels = int((x != 0).sum())  # float encoding: e_t moves wherever z != 0
    assert counts[linear1][:, 1].tolist() == [16.0 * nonzero_pixels] * T and counts[linear1][:, 0].sum() == 0
    result = snn.simulate(x, list(range(1, T + 1)), stats=True)
    (relu,) = snn.neurons
    # the ReLU neurons' spikes (their down steps), each reaching 10 outputs through non-zero weights
    assert torch.equal(counts[linear2][:, 0], 10 * result.spikes[relu]) and counts[linear2][:, 1].sum() == 0
    work = energy.neuron_work(snn)
    per_relu = op_costs.TARGET_COSTS["relu"][0] + op_costs.SIGNGD_STEP[0] + op_costs.RECEIVE_BINARY[0]
    assert work[relu][0] == 16 * per_relu


def test_power_of_two_adaptive_steps_are_priced_as_accumulates(digits_train):
    """``adaptive(pow2=True)``: a receiver scales each synapse by the sender's step ``+-2**k``, an exponent
    add (an AC, as ``op_costs.receive`` prices power-of-two steps), and so are the gain's update and the
    readout's ``eta_t`` (docs/energy.md). The same MLP with the plain rule multiplies."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    x = digits_train.tensors[0][:20]
    plain, shifted = (signgd.convert(model, x, schedule=adaptive(0.25, pow2=p), encoding="float")
                      for p in (False, True))
    T = 5
    (relu,) = shifted.neurons
    linear2 = [n.name for n in shifted.graph_module.graph.nodes if n.op == "call_module"
               and isinstance(shifted.graph_module.get_submodule(n.target), nn.Linear)][1]
    for snn, synapse in ((plain, 1), (shifted, 0)):  # every neuron moves at every step: 16 x 10 synapses
        counts = fast_count(snn, x, T)
        assert counts[linear2][:, synapse].tolist() == [20.0 * 16 * 10] * T
        assert counts[linear2][:, 1 - synapse].sum() == 0
    step = op_costs.TARGET_COSTS["relu"][0] + op_costs.SIGNGD_STEP[0]
    # per neuron: the gain (3 AC + 1 MAC: grow 1.2 is a real multiply) and 1 AC per input element
    assert energy.neuron_work(shifted)[relu] == (16 * (step + 3) + 16 * 1, 16 * 1)
    assert energy.neuron_work(plain)[relu] == (16 * (step + 1), 16 * 2 + 16 * 1)
    assert op_costs.adaptive_step(adaptive(0.25, 2, 0.5, pow2=True).rule) == (4, 0)
    assert energy.neuron_work(shifted)["readout"] == (10, 0) and energy.neuron_work(plain)["readout"] == (0, 10)


class _SubtractAndMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.conv2 = nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        h = self.relu(self.conv(x))
        return -(self.conv2(h) - 0.5 * h).mean(dim=(2, 3))


def test_adds_means_and_scalings_by_hand(digits_train):
    """Node by node: ``0.5 * h`` of spikes is folded (free), the subtraction adds each changed element of
    both operands (ACs), the mean adds each changed input (ACs) and scales each changed output (MACs)."""
    x = digits_train.tensors[0][:4].double()
    snn = signgd.convert(_SubtractAndMean().eval().double(), x, encoding="spike", schedule="exponential")
    counts = fast_count(snn, x, 4)
    scaled, sub, mean, neg = "mul", "sub", "mean", "neg"  # the graph's node names
    assert counts[scaled].sum() == 0
    assert counts[sub][:, 1].sum() == 0 and counts[sub][:, 0].sum() > 0
    assert counts[mean][:, 0].sum() > 0 and counts[mean][:, 1].sum() > 0
    assert counts[mean][:, 1].max() <= 4 * 4  # at most one scaling per output (4 samples x 4 channels)
    assert torch.equal(counts[neg][:, 1], counts[mean][:, 1])  # -mean: real values, one MAC per change


@pytest.mark.parametrize("seed", range(6))
def test_no_step_exceeds_the_dense_synapse_count(seed):
    """Random small architectures (convs, pools, residual adds, means, linear layers): per sample and
    step the synaptic operations never exceed the network's synapse count."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
    torch.manual_seed(seed)
    c = 2 + pick(4)
    layers = [nn.Conv2d(1, c, 3, padding=pick(2)), [nn.ReLU(), nn.GELU(), nn.Tanh()][pick(3)]]
    if pick(2):
        layers += [nn.AvgPool2d(2) if pick(2) else nn.MaxPool2d(2)]
    layers += [_ResidualConv(c) if pick(2) else nn.Identity(), nn.Flatten(1), nn.LazyLinear(7)]
    model = nn.Sequential(*layers)
    x = torch.rand(3, 1, 8, 8)
    model(x)
    schedule = adaptive() if pick(2) else "exponential"
    snn = signgd.convert(model.eval(), x, encoding=["float", "spike", "analog"][pick(3)], schedule=schedule)
    counts = fast_count(snn, x, 8)
    per_step = sum(v.sum(1) for v in counts.values()) / x.shape[0]
    dense = energy.dense_synaptic_ops(snn)
    assert float(per_step.max()) <= dense and dense > 0


class _ResidualConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.act = nn.Conv2d(c, c, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.act(x + self.conv(x).mean(dim=1, keepdim=True) * 0.5 + self.conv(x))


def test_the_headline_is_the_smallest_T_within_one_point(trained_digits_cnn, digits_train, digits_test):
    from signgd import report
    snn = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:200], schedule="exponential")
    rep = report.make_report(snn, digits_test, [2, 16, 64], limit=100)
    acc, head = rep["accuracy"], rep["energy"]["headline"]
    within = [t for t, a in zip(rep["steps"], acc["snn"]) if a >= acc["ann"] - 0.01]
    assert head is not None and head["T"] == within[0]
    j = rep["steps"].index(head["T"])
    assert head["energy_ratio_to_ann"] == rep["energy"]["energy_ratio_to_ann"][j]
    en = rep["energy"]
    assert en["energy_pj"] == sorted(en["energy_pj"])  # more steps, more work
    labels = [row["label"] for row in en["layers"]]
    assert "input" in labels and "readout" in labels


def test_every_target_has_a_cost():
    from signgd.targets import TARGETS
    assert set(TARGETS) <= set(op_costs.TARGET_COSTS)
    assert op_costs.target_cost("matmul", 6, [(2, 5), (5, 3)]) == (0, 30)


class _NewOps(nn.Module):
    """Ops the zoo brought: reflect padding, nearest upsampling, Unfold/Fold, an einsum with a constant,
    GroupNorm, a max over a dim, a 2-norm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.GroupNorm(2, 4)
        self.register_buffer("w", torch.randn(4, 3, dtype=torch.float64))

    def forward(self, x):
        h = torch.relu(self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")))  # 8x8
        h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")[..., ::2, ::2]
        patches = nn.functional.unfold(h, 2, stride=2)  # [B, 16, 16]
        h = h + nn.functional.fold(patches, (8, 8), 2, stride=2)
        h = self.norm(h)
        e = torch.einsum("bchw,cd->bdhw", h, self.w)
        return torch.cat([e.amax(dim=(2, 3)), e.norm(dim=(2, 3))], 1)


def test_the_zoo_ops_count_exactly():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    snn = signgd.convert(_NewOps().double().eval(), x, encoding="spike", schedule="exponential")
    literal, fast = count_operations(snn, x, 4), fast_count(snn, x, 4)
    for node in literal:
        assert torch.equal(literal[node], fast[node]), node
    assert sum(float(v.sum()) for v in fast.values()) > 0
    work = energy.neuron_work(snn)
    assert all(ac >= 0 and mac >= 0 for ac, mac in work.values())


def test_a_sparse_neuron_checks_its_gap_only_when_the_gap_or_the_threshold_changed():
    """``costs.changed``: every neuron at the first step and where the step changes; otherwise those whose
    target was evaluated again or that spiked at the step before."""
    from signgd.costs.changed import checked_mask, threshold_changes

    etas = torch.tensor([0.25, 0.25, 0.125, 0.125, 0.125])
    assert threshold_changes(etas).tolist() == [True, False, True, False, False]
    evaluated = torch.tensor([[True, False, False, False]])
    spiked = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert checked_mask(evaluated, spiked, False).tolist() == [[True, True, False, False]]
    assert checked_mask(evaluated, spiked, True).all() and checked_mask(evaluated, None, False).all()
