"""Reports: statistics agree with evaluate() and the simulator, fan-out and MACs by hand, files and plots."""
import json

import pytest
import torch

import signgd
from signgd import report


@pytest.fixture(scope="module")
def snn(trained_digits_cnn, digits_train):
    return signgd.convert(trained_digits_cnn, digits_train.tensors[0][:200], schedule="exponential")


def test_statistics_agree_with_evaluate_and_the_simulator(snn, digits_test):
    steps = [2, 16, 48]
    stats = report.collect(snn, digits_test, steps, limit=120, batch_size=50)
    ev = signgd.evaluate(snn, digits_test, steps, limit=120, batch_size=50)
    assert stats.evaluation == ev
    x = digits_test.tensors[0][:120]
    sim = snn.simulate(x, 48, stats=True)
    for name, layer in stats.layers.items():
        assert layer.target == snn.neurons[name].target
        assert layer.spikes_per_sample(48) == pytest.approx(sim.spikes_per_sample()[name], rel=1e-9)
        assert layer.firing_rate(16) == pytest.approx(sim.firing_rates(16)[name], rel=1e-9)


def test_layer_error_is_the_distance_to_the_ann_activation(snn, digits_test):
    """The first layer's error at T=64, recomputed by hand: what the layer passes on at step 64 (a
    signGD layer passes its estimate) against the ANN's output of that ReLU."""
    x = digits_test.tensors[0][:40]
    stats = report.collect(snn, (x, digits_test.tensors[1][:40]), [1, 64])
    first = next(iter(snn.neurons))
    seen = {}
    from signgd.simulator import simulate
    simulate(snn.graph_module, x, [64], schedule=snn.schedule, dynamics="signgd", encoder=snn.encoder, chunk=64,
             probe=lambda name, t0, out: seen.setdefault(name, out.clone()))
    gm = snn.graph_module
    act = torch.fx.Interpreter(gm)
    acts = {}
    orig = act.call_module

    def keep(target, args, kwargs):
        out = orig(target, args, kwargs)
        acts[target] = out
        return out
    act.call_module = keep
    with torch.no_grad():
        act.run(x.clone())
    diff = seen[first][63] - acts[first]
    expected = float(diff.double().norm() / acts[first].double().norm())
    assert stats.layers[first].relative_error[64] == pytest.approx(expected, rel=1e-6)
    # A trained network converges: every layer's estimate is much closer at T=64 than at T=1.
    for layer in stats.layers.values():
        assert layer.relative_error[64] < 0.5 * layer.relative_error[1]


def test_subgradient_estimates_are_running_spike_rates(trained_digits_cnn, digits_train, digits_test):
    sub = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:200], dynamics="subgradient")
    stats = report.collect(sub, digits_test, [4, 64], limit=60)
    assert stats.evaluation == signgd.evaluate(sub, digits_test, [4, 64], limit=60)
    for name, layer in stats.layers.items():
        assert layer.relative_error[64] < layer.relative_error[4]
        # Max pooling passes spikes on (a max over the scaled spikes): they are counted too.
        assert layer.spikes_per_sample(64) > 0, name


def test_report_files_fields_and_plots(snn, digits_test, tmp_path):
    rep = report.make_report(snn, digits_test, [4, 32], limit=80, energy_model=report.EnergyModel(0.5, 5.0),
                             run_settings={"model": "signgd:digits_cnn", "data": "digits"})
    paths = report.write_report(rep, tmp_path)
    assert {p.name for p in paths} == {"report.json", *report.PLOTS}
    for p in paths:
        assert p.stat().st_size > 1000
    data = json.loads((tmp_path / "report.json").read_text())
    assert data == json.loads(json.dumps(rep))
    assert data["steps"] == [4, 32] and data["samples"] == 80
    assert set(data["accuracy"]) == {"ann", "snn", "agreement"} and len(data["accuracy"]["snn"]) == 2
    conv = data["settings"]["conversion"]
    assert {"dynamics", "schedule", "encoding", "normalize", "seed"} <= set(conv)
    assert data["settings"]["T"] == [4, 32] and data["settings"]["limit"] == 80
    assert {"signgd", "torch", "python"} <= set(data["versions"])
    assert data["energy"]["pj_per_ac"] == 0.5 and data["energy"]["pj_per_mac"] == 5.0
    ann = data["energy"]["ann"]
    assert data["energy"]["ann_energy_pj"] == pytest.approx((ann["ac"] + ann["neuron_ac"]) * 0.5
                                                            + (ann["mac"] + ann["neuron_mac"]) * 5.0)
    assert {"ac", "mac", "neuron_ops"} <= set(data["energy"]["snn"]) and len(data["energy"]["energy_pj"]) == 2
    assert len(data["layers"]) == len(snn.neurons)
    for layer in data["layers"]:
        assert {"name", "target", "neurons", "spikes_per_sample", "firing_rate", "relative_error",
                "mean_abs_error"} <= set(layer)
        assert all(0 <= r <= 1 for r in layer["firing_rate"])
    text = report.summary(data)
    assert "| 32 |" in text and "synaptic ACs" in text and "Energy: " in text
    assert report.read_report(tmp_path) == data


def test_read_report_errors(tmp_path):
    with pytest.raises(report.ReportError, match="no report found"):
        report.read_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(report.ReportError, match="not valid JSON"):
        report.read_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(report.ReportError, match="not a signgd report"):
        report.read_report(tmp_path)


def test_a_report_of_a_timm_vit_counts_its_energy():
    """timm's ViT leaves a forward option (is_causal) as a second placeholder with a default value:
    the energy counter passes it through (it used to crash), and a class token joined to the patches
    (a constant) never counts as a change."""
    from signgd import models
    torch.manual_seed(0)
    vit = models.tiny_vit(image_size=8).eval()
    x = torch.randn(6, 1, 8, 8)
    snn = signgd.convert(vit, x, schedule="exponential")
    rep = report.make_report(snn, (x, torch.arange(6) % 10), [2])
    assert rep["energy"]["energy_pj"][0] > 0
    assert rep["energy"]["max_synaptic_ops_per_step"] <= rep["energy"]["dense_synaptic_ops_per_step"]
