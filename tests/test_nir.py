"""Export to NIR (issue 18): the IF dynamics, the exported graph run by another library, the refusals."""
from __future__ import annotations

import sys
from pathlib import Path

import nir
import pytest
import torch
from torch import nn

import signgd
import signgd.nir
from signgd import models, training
from signgd.cli import main
from signgd.errors import ExportError
from signgd.neurons import if_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _nir_peer as peer  # noqa: E402  (benchmarks/: the same peer the accuracy benchmark runs)

T = 32


class ResidualCNN(nn.Module):
    """Conv-BN-ReLU stem, a strided residual block with a 1x1 shortcut, an identity residual block,
    2x2 average pooling, flatten, linear readout: every op the exporter writes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = models.BasicBlock(8, 16, stride=2)
        self.same = models.BasicBlock(16, 16)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        return self.fc(self.pool(self.same(self.down(self.stem(x)))).flatten(1))


@pytest.fixture(scope="module")
def residual_if(digits_train):
    torch.manual_seed(0)
    model = ResidualCNN()
    training.train(model, digits_train, epochs=10, seed=0)
    return signgd.convert(model, digits_train.tensors[0][:500], dynamics="if")


def test_if_step_is_the_classic_integrate_and_fire_neuron():
    # v <- v + a; fire when v > threshold; v <- v - threshold: the textbook neuron, stepped by hand.
    torch.manual_seed(0)
    a = torch.rand(200, 50, dtype=torch.float64) * 3 - 1
    threshold = torch.rand(50, dtype=torch.float64) + 0.5
    v, z, ref_v = (torch.zeros(50, dtype=torch.float64) for _ in range(3))
    for t in range(200):
        v, z = if_step(v, z, a[t], threshold)
        ref_v = ref_v + a[t]
        ref_z = (ref_v > threshold).to(torch.float64)
        ref_v = ref_v - ref_z * threshold
        assert torch.equal(z, ref_z)
    # The rate times the threshold tracks a constant input in (0, threshold) within threshold / t.
    c = torch.rand(50, dtype=torch.float64) * threshold
    v, z, count = torch.zeros_like(c), torch.zeros_like(c), torch.zeros_like(c)
    for _ in range(400):
        v, z = if_step(v, z, c, threshold)
        count += z
    assert ((count / 400 * threshold - c).abs() <= threshold / 400 + 1e-12).all()


def test_if_conversion_has_one_threshold_per_channel_and_takes_no_schedule(residual_if, digits_train):
    scales = {name: n.scale for name, n in residual_if.neurons.items()}
    assert scales["neurons.stem_2"].shape == (8, 1, 1) and scales["neurons.same_relu_1"].shape == (16, 1, 1)
    assert residual_if.settings["encoding"] == "analog" and residual_if.settings["normalize"] == "relu"
    with pytest.raises(ValueError, match="takes no step sizes"):
        signgd.convert(ResidualCNN().eval(), digits_train.tensors[0][:50], dynamics="if", schedule="constant")


def test_exported_graph_runs_in_snntorch_with_the_same_spikes_and_outputs(residual_if, digits_test, tmp_path):
    path = tmp_path / "net.nir"
    signgd.nir.write(residual_if, path)
    graph = nir.read(str(path))
    assert "subtraction" in graph.metadata["reset"]
    kinds = sorted({type(n).__name__ for n in graph.nodes.values()})
    assert kinds == ["Affine", "Conv2d", "Flatten", "IF", "Input", "Output", "SumPool2d"]
    assert sum(isinstance(n, nir.IF) for n in graph.nodes.values()) == len(residual_if.neurons) == 5
    # Residual adds are nodes with two incoming edges.
    assert sum(1 for name in graph.nodes if sum(dst == name for _, dst in graph.edges) == 2) == 2

    x, y = digits_test.tensors
    ours = residual_if.simulate(x, T=list(range(1, T + 1)), stats=True)
    theirs, counts = peer.run(peer.snntorch_module(graph), x, T, spikes=True)
    # The same decision on every digit, at every step from 8 on.
    for t in range(8, T + 1):
        assert torch.equal(theirs[t].argmax(1), ours.outputs[t].argmax(1)), t
    assert float((ours.outputs[T].argmax(1) == y).float().mean()) > 0.9
    # The same spikes per layer and step. Both run the same float32 operations on the same values, except
    # that signgd multiplies a spike's value (its threshold) into the next layer's input and the peer into
    # that layer's weights, and pooling divides before (signgd) or after (the peer) the sum: the currents
    # may differ in the last bit, which moves a spike only when a potential lands within that of its
    # threshold. Bound: 0.1% of a layer's spikes (equal on the machine this was written on).
    names = {n.name: n.target.removeprefix("neurons.") for n in residual_if.graph_module.graph.nodes
             if n.op == "call_module" and n.target.startswith("neurons.")}
    assert set(counts) == set(names)
    for node, layer in names.items():
        diff = float((counts[node] - ours.spikes[f"neurons.{layer}"]).abs().sum())
        assert diff <= 1e-3 * float(ours.spikes[f"neurons.{layer}"].sum()), (layer, diff)
    # Decoded outputs: equal to float rounding, except on a digit where a spike moved (by that spike's weight
    # over T), on at most 1% of the digits.
    close = (theirs[T] - ours.outputs[T]).abs().amax(1) <= 1e-4 * float(ours.outputs[T].abs().max())
    assert float(close.float().mean()) >= 0.99, float(close.float().mean())


def test_saved_if_network_exports_from_the_command_line(residual_if, digits_test, tmp_path, capsys):
    snn_path = tmp_path / "snn.pt"
    residual_if.save(snn_path)
    loaded = signgd.load(snn_path)
    x = digits_test.tensors[0][:20]
    assert torch.equal(loaded.simulate(x, T=[T]).outputs[T], residual_if.simulate(x, T=[T]).outputs[T])
    out = tmp_path / "net.nir"
    assert main(["export", str(snn_path), "--nir", str(out)]) == 0, capsys.readouterr().err
    graph, direct = nir.read(str(out)), signgd.nir.export(residual_if)
    assert sorted(graph.edges) == sorted(direct.edges)
    for name, node in direct.nodes.items():
        for field in ("weight", "bias", "v_threshold"):
            if hasattr(node, field):
                assert (getattr(graph.nodes[name], field) == getattr(node, field)).all(), (name, field)


def _refusal(model, calibration, **kw) -> str:
    snn = signgd.convert(model.eval(), calibration, **kw)
    with pytest.raises(ExportError) as err:
        signgd.nir.export(snn)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_networks_nir_cannot_express_are_refused_naming_the_nodes(digits_train, tmp_path, capsys):
    x = digits_train.tensors[0][:64]
    torch.manual_seed(0)
    message = _refusal(ResidualCNN(), x, schedule="exponential")  # signGD dynamics
    assert "sign-gradient-descent" in message and "neurons_stem_2" in message and "dynamics='if'" in message
    assert "not NIR's IF" in _refusal(ResidualCNN(), x, dynamics="subgradient")
    assert "encoding='analog'" in _refusal(ResidualCNN(), x, dynamics="if", encoding="float")
    message = _refusal(models.digits_cnn(), x, dynamics="if")  # max pooling
    assert "max pooling over spikes: NIR has no max" in message and "pool_windows" in message
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))
    message = _refusal(gelu, x, dynamics="if")
    assert "neurons__2 (a gelu neuron: NIR has no gelu" in message
    norm = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 10))
    assert "NIR has no normalization" in _refusal(norm, x, dynamics="if")
    # The command's one line.
    snn_path = tmp_path / "snn.pt"
    signgd.convert(models.digits_cnn().eval(), x, dynamics="if").save(snn_path)
    capsys.readouterr()  # the conversions' summary lines
    assert main(["export", str(snn_path), "--nir", str(tmp_path / "x.nir")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("signgd export: error: cannot export to NIR") and "no max" in err
    assert not (tmp_path / "x.nir").exists()
