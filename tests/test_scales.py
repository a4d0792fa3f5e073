"""Normalization scales: a neuron's step follows its activations, however small they are.

Random-init MobileNetV2 has activations of 1e-7 and less in most layers; the old fallback (scale 1
for ranges <= 1e-5) made their steps millions of times their values, and its SNN error was 762 at
T=256 (docs/zoo.md). A ReLU network is positively homogeneous, so scaling its first layer by 1e-9
scales every activation and the output by 1e-9: the SNN, which normalizes each neuron by its own
range, must track the scaled network exactly as well as the original.
"""
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import signgd
from signgd.graph.calibrate import SILENT, neuron_scales


def _digits():
    d = load_digits()
    return torch.tensor(d.data[:300], dtype=torch.float32) / 16


def _mlp(gain: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32, bias=False), nn.ReLU(),
                          nn.Linear(32, 10, bias=False))
    with torch.no_grad():
        model[0].weight.mul_(gain)
        model[0].bias.mul_(gain)
    return model.eval()


@pytest.mark.parametrize("gain", [1e-9, 1e-6, 1e3])
def test_the_snn_tracks_a_rescaled_network_as_well_as_the_original(gain):
    x = _digits()
    errors = []
    for g in (1.0, gain):
        model = _mlp(g)
        snn = signgd.convert(model, x[:200], schedule="exponential", encoding="float")  # its schedule
        with torch.no_grad():
            ann = model(x[200:232])
        outs = snn(x[200:232], T=[32, 256])
        errors.append([float((outs[t] - ann).norm() / ann.norm()) for t in (32, 256)])
    assert errors[0][1] < errors[0][0] < 0.5
    assert errors[1] == pytest.approx(errors[0], rel=1e-3, abs=1e-5)  # the same scales, in the network's units


def test_a_silent_element_gets_its_layers_median_range():
    ranges = {"a": torch.tensor([2.0, 0.0, 1e-4, 0.5, 1.0]), "b": torch.tensor([1e-8, 0.0, 3e-8]),
              "dead": torch.zeros(3)}
    scales = neuron_scales(ranges)
    # median of the active elements of a: 0.75 (torch's lower median of 4 values: 0.5); 1e-4 < SILENT * 0.5
    assert scales["a"].tolist() == pytest.approx([2.0, 0.5, 0.5, 0.5, 1.0])
    assert scales["b"].tolist() == pytest.approx([1e-8, 1e-8, 3e-8])  # a layer of small values keeps them
    assert scales["dead"].tolist() == pytest.approx([1e-8] * 3)  # the smallest median of the other layers
    assert neuron_scales({"x": torch.zeros(2)})["x"].tolist() == [1.0, 1.0]
    assert SILENT <= 1e-3
