"""snn.save / signgd.load: bit-identical round trips, and files that must be refused without running code."""
import io
import os
import pickle
import zipfile

import pytest
import torch
from torch import nn

import signgd
from signgd import models, serialize, training
from signgd.serialize import SnnFileError


class ResNetWithMaxPool(nn.Module):
    """Residual adds (one with a 1x1 projection), max pooling in the stem, average pooling at the end."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.block = models.BasicBlock(8, 8)
        self.down = models.BasicBlock(8, 16, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.down(self.block(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture(scope="module")
def trained_resnet(digits_train):
    torch.manual_seed(0)
    return training.train(ResNetWithMaxPool(), digits_train, epochs=2, seed=0)


def _assert_round_trip(snn, x, tmp_path):
    path = snn.save(tmp_path / "nested" / "snn.pt")
    loaded = signgd.load(path)
    assert loaded.settings == snn.settings
    assert loaded.input_shape == snn.input_shape and loaded.conversion_log == snn.conversion_log
    assert list(loaded.neurons) == list(snn.neurons)
    for name, neuron in snn.neurons.items():
        other = loaded.neurons[name]
        assert (other.target, other.params, other.normalized) == (neuron.target, neuron.params, neuron.normalized)
        assert torch.equal(other.scale, neuron.scale) and torch.equal(other.bias0, neuron.bias0)
    assert torch.equal(loaded.ann(x), snn.ann(x))
    before, after = snn.simulate(x, [3, 17], stats=True), loaded.simulate(x, [3, 17], stats=True)
    for t in (3, 17):
        assert torch.equal(before.outputs[t], after.outputs[t])
    assert before.spikes_per_sample() == after.spikes_per_sample()
    return loaded


@pytest.mark.parametrize("dynamics", ["signgd", "subgradient", "if"])
def test_digits_cnn_round_trip_is_bit_identical(trained_digits_cnn, digits_train, digits_test, dynamics, tmp_path):
    snn = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:200], dynamics=dynamics,
        schedule=None if dynamics in ("subgradient", "if") else "exponential")
    _assert_round_trip(snn, digits_test.tensors[0][:64], tmp_path)


@pytest.mark.parametrize("dynamics", ["signgd", "subgradient"])
def test_resnet_with_residual_adds_and_max_pooling_round_trip(trained_resnet, digits_train, digits_test, dynamics,
                                                              tmp_path):
    snn = signgd.convert(trained_resnet, digits_train.tensors[0][:200], dynamics=dynamics, encoding="spike",
                         schedule="exponential:lr=0.2,decay=0.9", normalize="all")
    assert any(n.target == "max" for n in snn.neurons.values())
    assert any(node.target.__name__ == "add" for node in snn.graph_module.graph.nodes
               if node.op == "call_function" and hasattr(node.target, "__name__"))
    _assert_round_trip(snn, digits_test.tensors[0][:32], tmp_path)


@pytest.fixture(scope="module")
def saved(trained_digits_cnn, digits_train, tmp_path_factory):
    snn = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:100], schedule="exponential")
    return snn, snn.save(tmp_path_factory.mktemp("saved") / "snn.pt")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(SnnFileError, match="no such file"):
        signgd.load(tmp_path / "nope.pt")


@pytest.mark.parametrize("keep", [0.5, 0.0, 0.99])
def test_truncated_file_is_refused(saved, tmp_path, keep):
    data = saved[1].read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SnnFileError, match="truncated, corrupt") as info:
        signgd.load(bad)
    assert "\n" not in str(info.value)


def _rewrite(saved, tmp_path, change):
    payload = torch.load(saved[1], weights_only=True)
    change(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


def test_newer_format_version_asks_for_an_upgrade(saved, tmp_path):
    path = _rewrite(saved, tmp_path, lambda p: p.update(version=serialize.FORMAT_VERSION + 1))
    with pytest.raises(SnnFileError, match="newer signgd.*Upgrade"):
        signgd.load(path)


def test_a_plain_checkpoint_is_not_a_network(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(models.digits_cnn().state_dict(), path)
    with pytest.raises(SnnFileError, match="not a signgd network file"):
        signgd.load(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": serialize.FORMAT, "version": 1, "x": _RunsCode(marker)}, path)
    with pytest.raises(SnnFileError, match="not a readable signgd network file"):
        signgd.load(path)
    assert not marker.exists()
    # The same with a raw pickle stream, not a torch zip archive.
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(SnnFileError):
        signgd.load(raw)
    assert not marker.exists()


def test_a_graph_naming_os_system_is_refused(saved, tmp_path):
    def poison(payload):
        node = next(n for n in payload["nodes"] if n["op"] == "call_function")
        node["target"] = "os.system"
        node["args"] = {"$tuple": ["touch " + str(tmp_path / "pwned")]}
    with pytest.raises(SnnFileError, match="'os.system', which a saved network may not call"):
        signgd.load(_rewrite(saved, tmp_path, poison))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("target", ["__class__", "__reduce_ex__", "storage", "not_a_tensor_method"])
def test_a_graph_calling_a_forbidden_method_is_refused(saved, tmp_path, target):
    def poison(payload):
        node = next(n for n in payload["nodes"] if n["op"] == "call_function")
        node["op"], node["target"] = "call_method", target
    with pytest.raises(SnnFileError, match="may not call"):
        signgd.load(_rewrite(saved, tmp_path, poison))


def test_a_module_of_a_foreign_class_is_refused(saved, tmp_path):
    def poison(payload):
        name = next(iter(payload["modules"]))
        payload["modules"][name]["class"] = "subprocess.Popen"
    with pytest.raises(SnnFileError, match="may not contain"):
        signgd.load(_rewrite(saved, tmp_path, poison))


def test_weights_that_do_not_fit_the_graph_are_reported(saved, tmp_path):
    def poison(payload):
        rec = next(r for r in payload["modules"].values() if r["class"] == "torch.nn.Conv2d")
        rec["parameters"]["weight"] = torch.zeros(3, 3, 2, 2)
    with pytest.raises(SnnFileError, match="do not fit the stored graph"):
        signgd.load(_rewrite(saved, tmp_path, poison))


def test_an_unknown_neuron_target_is_refused(saved, tmp_path):
    def poison(payload):
        rec = next(r for r in payload["modules"].values() if r["class"] == "signgd.SpikingNeuron")
        rec["target"] = "teleport"
    with pytest.raises(SnnFileError, match="unknown neuron target 'teleport'"):
        signgd.load(_rewrite(saved, tmp_path, poison))


def test_saving_a_graph_with_an_unlisted_function_fails_at_save_time(saved, tmp_path):
    snn = saved[0]
    import copy
    other = copy.deepcopy(snn)
    graph = other.graph_module.graph
    out = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(out):
        graph.call_function(print, ("hello",))
    with pytest.raises(SnnFileError, match="builtins.print, which is not on the list"):
        other.save(tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_file_is_a_plain_weights_only_archive(saved):
    assert zipfile.is_zipfile(saved[1])
    payload = torch.load(io.BytesIO(saved[1].read_bytes()), weights_only=True)
    assert payload["format"] == serialize.FORMAT and payload["version"] == serialize.FORMAT_VERSION
    assert payload["signgd_version"] == signgd.__version__


def test_callable_schedule_converts_runs_and_refuses_to_save_clearly(tmp_path):
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(5, 4)
    snn = signgd.convert(model, x, schedule=lambda t: 0.1 * 0.9 ** (t - 1))
    assert torch.allclose(snn.schedule.etas(1, 3, dtype=torch.float64),
                          torch.tensor([0.1, 0.09], dtype=torch.float64))
    assert torch.isfinite(snn(x, T=4)).all()
    with pytest.raises(signgd.SnnFileError, match="callable"):
        snn.save(tmp_path / "snn.pt")
    assert not (tmp_path / "snn.pt").exists()


def _hex(code: str) -> str:
    return "".join(f"\\x{ord(c):02x}" for c in code)  # no dots, no quotes: survives any split


def _inject_input_name(payload, code):
    payload["nodes"][0]["target"] = f"x=({code})"  # fx writes input names into `def forward(...)`


def _inject_keyword(payload, code):
    node = next(n for n in payload["nodes"] if n["op"] == "call_module")
    node["kwargs"] = {"$dict": {f"q={code},r": 1}}  # fx writes keyword names verbatim


def _inject_attribute_path(payload, code):
    # fx writes getattr(self, "<path>") for a path part that is not an identifier
    name = f'neurons")and exec("{_hex(code)}")or getattr(self,"neurons'
    payload["attributes"][name] = {"kind": "value", "value": 1}
    payload["nodes"].insert(1, {"name": "evil", "op": "get_attr", "target": name,
                                "args": {"$tuple": []}, "kwargs": {"$dict": {}}})


def _inject_module_name(payload, code):
    old = next(n for n in payload["nodes"] if n["op"] == "call_module" and "." not in n["target"])
    real = old["target"]
    name = f'{real}")and exec("{_hex(code)}")or getattr(self,"{real}'
    payload["modules"][name] = payload["modules"][real]
    keep = dict(old, name="keep")  # the real module stays in the graph for the injected code to return
    payload["nodes"].insert(payload["nodes"].index(old), keep)
    old["target"] = name


@pytest.mark.parametrize("inject", [_inject_input_name, _inject_keyword, _inject_attribute_path,
                                    _inject_module_name])
def test_names_that_would_inject_code_into_the_generated_forward_are_refused(saved, tmp_path, inject):
    """torch.fx compiles the graph into Python source: a name is code unless it is a plain name."""
    marker = tmp_path / "pwned"
    path = _rewrite(saved, tmp_path, lambda p: inject(p, f"__import__('os').system('touch {marker}')"))
    with pytest.raises(SnnFileError, match="not a plain name"):
        signgd.load(path).ann(torch.zeros(1, *saved[0].input_shape))
    assert not marker.exists()


def test_a_model_with_names_fx_cannot_write_safely_is_refused_at_save_time(tmp_path):
    model = nn.Sequential()
    model.add_module("layer one", nn.Linear(4, 4))  # torch allows spaces in module names
    model.add_module("act", nn.ReLU())
    model.add_module("head", nn.Linear(4, 2))
    snn = signgd.convert(model.eval(), torch.randn(5, 4), schedule="exponential")
    with pytest.raises(SnnFileError, match="cannot save.*'layer one'.*rename"):
        snn.save(tmp_path / "snn.pt")
    assert not (tmp_path / "snn.pt").exists()
