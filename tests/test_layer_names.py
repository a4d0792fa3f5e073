"""Reports name neuron layers by the model's module paths (signgd.report.names), not graph node names."""
from __future__ import annotations

import torch
from torch import nn

import signgd
from signgd import models, report
from signgd.report.names import layer_names


class _Net(nn.Module):
    """A module called twice, a 3-wide max pooling (two levels of max neurons per direction), a
    LayerNorm, a softmax and a ReLU called in the model's own forward."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(3), nn.Flatten(), nn.Linear(16, 6))
        self.norm, self.act, self.fc = nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 10)

    def forward(self, x):
        h = self.act(self.norm(self.features(x)))
        h = self.act(h) * torch.softmax(h, -1)
        return torch.relu(self.fc(h))


def test_labels_are_module_paths_with_a_readable_suffix(digits_train, tmp_path):
    torch.manual_seed(0)
    x = digits_train.tensors[0][:32]
    snn = signgd.convert(_Net().eval(), x, preset="paper")
    labels = layer_names(snn)
    assert list(labels) == list(snn.neurons)
    assert len(set(labels.values())) == len(labels)  # unique
    assert list(labels.values()) == [
        "features.1 (relu)",
        "features.2 (max, rows) #1", "features.2 (max, rows) #2",
        "features.2 (max, columns) #1", "features.2 (max, columns) #2",
        "norm (square, LayerNorm)", "norm (divide_sqrt, LayerNorm)",
        "act (relu) #1", "act (relu) #2",
        "after act (exp, softmax)", "after act (divide, softmax)", "after act (mul)",
        "after fc (relu)",
    ]
    loaded = signgd.load(snn.save(tmp_path / "snn.pt"))  # the origins travel in the file
    assert layer_names(loaded) == labels


def test_a_network_without_recorded_origins_falls_back_to_node_names(trained_digits_cnn, digits_train):
    snn = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:64], preset="paper")
    for node in snn.graph_module.graph.nodes:
        node.meta.pop("signgd_origin", None)  # as a file saved before origins were recorded
    labels = layer_names(snn)
    assert all(label == f"{name.removeprefix('neurons.')} ({snn.neurons[name].target})"
               for name, label in labels.items())


def test_the_report_table_and_plots_use_the_labels(trained_digits_cnn, digits_train, digits_test, tmp_path):
    snn = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:64], preset="paper")
    rep = report.make_report(snn, digits_test, [4], limit=16)
    labels = layer_names(snn)
    assert [layer["label"] for layer in rep["layers"]] == [labels[layer["name"]] for layer in rep["layers"]]
    text = report.summary(rep)
    model = models.digits_cnn()
    first_relu = next(f"model[{i}] (relu)" for i, m in enumerate(model) if isinstance(m, nn.ReLU))
    assert f"| {first_relu} | relu |" in text and "neurons." not in text
    paths = report.draw_plots(rep, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
