"""Layer windows (``convert(window=k)``, ``signgd.windows``): each neuron layer of a graded network spikes during
``k`` steps of its own, one layer after the other.

Depths and windows by hand; no layer fires outside its window and the output settles at ``settled_step``; the
event-driven exchange of spikes gives the engine's spikes and outputs exactly, in chunks that straddle the windows;
the fast energy count equals the literal one, and every neuron evaluates its target exactly once; on the trained
digits CNN it stays within a point of the ANN for less energy than the graded network without windows; save/load,
the command line and the one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
from model_helpers import fast_count
from model_helpers import small_cnn as _cnn
from torch import nn

import signgd
from signgd import energy_tuning, models
from signgd.cli import main
from signgd.event_driven import simulate_spikes
from signgd.kernels import sparse_scan
from signgd.kernels.reference import gate
from signgd.report import make_report
from signgd.report.event_count import count_operations
from signgd.windows import neuron_depths, neuron_windows, settled_step

GRADED = {"dynamics": "graded", "schedule": "exponential:lr=0.0625,decay=1.0"}


class _Branches(nn.Module):
    """relu(l1 x) -> a; relu(l2 a) -> b; a * b (a product neuron, depth 3); a residual sum into the readout."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.l3 = nn.Linear(12, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        a = torch.relu(self.l1(x.flatten(1)))
        b = torch.relu(self.l2(a))
        return self.l3(a * b + a)


def _nets():
    return {"branches": (_Branches().eval().double(), torch.rand(6, 1, 3, 4, dtype=torch.float64)),
            "cnn": (_cnn().double(), torch.rand(6, 1, 8, 8, dtype=torch.float64)),
            "mixer": (models.tiny_mixer(image_size=8).eval().double(), torch.rand(6, 1, 8, 8, dtype=torch.float64)),
            "vit": (models.tiny_vit(image_size=8).eval().double(), torch.rand(6, 1, 8, 8, dtype=torch.float64))}


def test_depths_windows_and_the_settled_step_by_hand():
    model, x = _nets()["branches"]
    snn = signgd.convert(model, x, window=3, **GRADED)
    gm = snn.graph_module
    depths = neuron_depths(gm)
    assert sorted(depths.values()) == [1, 2, 3]  # relu, relu, the product
    by_depth = {d: name for name, d in depths.items()}
    assert snn.neurons[by_depth[3]].target == "mul"
    assert neuron_windows(gm, 3) == {by_depth[1]: (1, 3), by_depth[2]: (3, 5), by_depth[3]: (5, 7)}
    assert snn.windows() == neuron_windows(gm, 3)
    assert settled_step(gm, 3) == snn.settled_step() == 7 and settled_step(gm, 1) == 1
    assert signgd.convert(model, x, **GRADED).windows() is None


def test_gated_thresholds_silence_a_neuron_outside_its_window():
    target = torch.full((8, 3), 0.7, dtype=torch.float64)
    etas = torch.full((8,), 1 / 16, dtype=torch.float64)
    thresholds = gate(etas * 0.5, 1, (3, 4))
    assert torch.isinf(thresholds[[0, 1, 4, 5, 6, 7]]).all() and torch.equal(thresholds[2:4], etas[2:4] * 0.5)
    assert gate(etas, 5, (1, 20)) is etas
    for dtype in (torch.float32, torch.float64):  # the C kernel on CPU float tensors
        spikes = torch.zeros(8, dtype=torch.float64)
        out = sparse_scan(target.to(dtype), torch.zeros(3, dtype=dtype), etas, thresholds, spikes=spikes, graded=True)
        assert spikes.tolist() == [0, 0, 3, 3, 0, 0, 0, 0]  # 0.5 then 0.125; then silent: the window is over
        assert out[:2].abs().max() == 0 and torch.equal(out[4:], out[3].expand(4, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_chunk_outside_the_window_holds_the_output_the_gated_scan_gives(dtype):
    """Outside its window a layer skips its target and its scan; what it passes on is bit for bit what the scan with
    infinite thresholds passes on (the C kernel's ``y * scale``)."""
    model, x = _nets()["mixer"]
    snn = signgd.convert(model.to(dtype), x.to(dtype), window=3, start="mean", **GRADED)
    steps = 4
    for name, mod in snn.neurons.items():
        if mod.target not in ("gelu", "divide_sqrt"):
            continue
        calls = []
        hook = mod.register_forward_hook(lambda m, args, out: calls.append(args))
        snn.graph_module(x.to(dtype))
        hook.remove()
        xs = tuple(a.unsqueeze(0).expand(steps, *a.shape).contiguous() for a in calls[0])
        etas = torch.full((steps,), 1 / 16, dtype=dtype)
        held, scanned = (mod.init_state(mod(*calls[0]), "graded") for _ in range(2))
        out = mod.run(held, xs, etas, "graded", tolerance=0.5, window=(10, 12), t0=1)
        thresholds = torch.full((steps,), float("inf"), dtype=dtype)
        target, _ = mod._raw_target(xs, False)
        ref = sparse_scan(target, scanned["y"], etas, thresholds, mod.scale if mod.normalized else None,
                          normalize=mod.normalized, graded=True)
        assert torch.equal(out, ref) and torch.equal(held["y"], scanned["y"]), name
        assert out.is_contiguous() and out.data_ptr() != held["y"].data_ptr()


@pytest.mark.parametrize("net,start,window,chunk", [("branches", None, 3, 2), ("cnn", None, 3, 4),
                                                    ("mixer", "mean", 4, 3), ("vit", None, 2, 5)])
def test_the_engine_gives_the_event_driven_spikes_and_outputs_and_no_layer_fires_outside_its_window(
        net, start, window, chunk):
    model, x = _nets()[net]
    snn = signgd.convert(model, x, window=window, start=start, **GRADED)
    T = snn.settled_step() + 3
    ref_out, ref_spikes, _ = simulate_spikes(snn, x, T)
    result = snn.simulate(x, list(range(1, T + 1)), stats=True, chunk=chunk)
    fast_out = torch.stack([result.outputs[t] for t in range(1, T + 1)])
    assert torch.allclose(fast_out, ref_out, atol=1e-9)
    windows = snn.windows()
    for name, s in ref_spikes.items():
        assert torch.equal(result.spikes[name], (s != 0).flatten(1).sum(1).double()), name
        first, last = windows[name]
        outside = torch.ones(T, dtype=torch.bool)
        outside[first - 1:last] = False
        assert result.spikes[name][outside].sum() == 0 and result.spikes[name].sum() > 0, name
    settled = snn.settled_step()
    assert torch.equal(fast_out[settled - 1:], fast_out[settled - 1].expand_as(fast_out[settled - 1:]))
    # whole-run chunks give the same numbers
    whole = snn.simulate(x, [T], chunk=T).outputs[T]
    assert torch.allclose(whole, fast_out[-1], atol=1e-12)


@pytest.mark.parametrize("net", ["cnn", "mixer", "vit"])
def test_every_neuron_evaluates_once_and_the_fast_count_equals_the_literal_one(net):
    model, x = _nets()[net]
    snn = signgd.convert(model, x[:2], window=3, **GRADED)
    T = snn.settled_step() + 2
    (literal, literal_events), (fast, fast_events) = count_operations(snn, x[:2], T, events=True), \
        fast_count(snn, x[:2], T, events=True)
    assert set(literal) == set(fast)
    for node in literal:
        assert torch.equal(literal[node], fast[node]), node
    windows = snn.windows()
    for name, ev in literal_events.items():
        assert torch.equal(ev, fast_events[name]), (name, ev.sum(0), fast_events[name].sum(0))
        first, last = windows[name]
        size = float(ev[first - 1, 1])  # every neuron of the layer (both samples) evaluates at its first step
        assert size > 0 and float(ev[:, 1].sum()) == size, name  # ... and never again: its inputs have settled
        assert float(ev[first - 1, 3]) == size  # and checks its gap there
        inside = torch.zeros(T, dtype=torch.bool)
        inside[first - 1:last] = True
        assert ev[~inside][:, 1:].sum() == 0, name  # no evaluation, spike or check outside the window
    assert sum(float(v.sum()) for v in fast.values()) > 0


def test_on_the_trained_cnn_it_stays_within_a_point_for_less_energy(trained_digits_cnn, digits_train, digits_test):
    x = digits_train.tensors[0][:300]
    plain = signgd.convert(trained_digits_cnn, x, dynamics="graded")
    windowed = signgd.convert(trained_digits_cnn, x, dynamics="graded", window=3)
    settled = windowed.settled_step()
    w = make_report(windowed, digits_test, [settled], batch_size=256, progress=False)
    p = make_report(plain, digits_test, [settled], batch_size=256, progress=False)
    assert w["accuracy"]["snn"][0] >= w["accuracy"]["ann"] - 0.01
    assert w["energy"]["energy_ratio_to_ann"][0] < 0.8 * p["energy"]["energy_ratio_to_ann"][0]


def test_preset_low_energy_tries_windows_within_the_T_asked_for(trained_digits_cnn, digits_train, digits_test,
                                                                 monkeypatch):
    """The windowed candidates are scored at the step they settle; on the digits CNN one of them is the cheapest that
    agrees, and the network keeps its windows; the report counts what the tuner counted. Given T=8, none settles in
    time, so none is tried."""
    monkeypatch.setattr(energy_tuning, "ENERGY_GRADED_STEPS", (1 / 64,))  # a smaller grid than the preset's
    monkeypatch.setattr(energy_tuning, "ENERGY_WINDOWS", (3,))
    monkeypatch.setattr(energy_tuning, "ENERGY_WINDOW_STEPS", (1 / 32, 1 / 64))
    x, y = digits_train.tensors[0][:64], digits_train.tensors[1][:64]
    snn = signgd.convert(trained_digits_cnn, x, preset="low-energy", dynamics="graded", scale="max", progress=False)
    windowed = [c for c in snn.tuning.candidates if c.window is not None]
    settled = snn.settled_step()
    assert [c.window for c in windowed] == [3, 3] and {c.T for c in windowed} == {settled}
    best = snn.tuning.best
    assert best.window == 3 and snn.settings["window"] == 3 and snn.settings["tuned_for"] == settled
    assert "window 3" in repr(best) and "| 3 |" in snn.tuning.table()
    rep = make_report(snn, (x, y), [settled], batch_size=64, progress=False)
    assert rep["energy"]["energy_ratio_to_ann"][0] == pytest.approx(best.energy_ratio, rel=1e-9)
    test = make_report(snn, digits_test, [settled], batch_size=256, progress=False)
    assert test["accuracy"]["snn"][0] >= test["accuracy"]["ann"] - 0.01
    short = signgd.convert(trained_digits_cnn, x, preset="low-energy", dynamics="graded", scale="max", T=8,
                           progress=False)
    assert all(c.window is None for c in short.tuning.candidates) and "window" not in short.settings


def test_save_load_and_the_command_line(weights, tmp_path, capsys):
    model, x = _nets()["cnn"]
    snn = signgd.convert(model.float(), x.float(), window=2, **GRADED)
    snn.save(tmp_path / "snn.pt")
    back = signgd.load(tmp_path / "snn.pt")
    assert back.settings["window"] == 2 and back.windows() == snn.windows()
    assert torch.equal(back(x.float(), T=snn.settled_step()), snn(x.float(), T=snn.settled_step()))
    out = tmp_path / "windowed"
    rc = main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--T", "4",
               "--limit", "60", "--calibration", "100", "--out", str(out), "--dynamics", "graded", "--window", "3",
               "--quiet"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["conversion"]["window"] == 3
    settled = signgd.load(out / "snn.pt").settled_step()
    assert rep["steps"] == [4, settled]  # the report adds the step the output settles at
    capsys.readouterr()
    rc = main(["evaluate", str(out / "snn.pt"), "--data", "digits", "--T", "2", "--limit", "60", "--quiet"])
    assert rc == 0 and f"| {settled} |" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 3}, "window needs graded neurons"),
    ({"dynamics": "sparse", "window": 3}, "window needs graded neurons"),
    ({"window": 0, **GRADED}, "window must be a whole number"),
    ({"window": 2.5, **GRADED}, "window must be a whole number"),
    ({"window": True, **GRADED}, "window must be a whole number"),
    ({"window": 3, "encoding": "float", **GRADED}, "encoding='analog'"),
    ({"window": 3, "preset": "low-energy"}, "picks the layer windows itself"),
])
def test_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        signgd.convert(_cnn(), torch.rand(4, 1, 8, 8), **kwargs)
