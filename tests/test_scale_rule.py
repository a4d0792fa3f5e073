"""``convert(scale="mean")``: normalized neurons divided by their per-element calibration mean |f(x)| instead of
their maximum (docs/scale_rule.md)."""
import pytest
import torch

import signgd
from signgd.graph.calibrate import SILENT


@pytest.fixture(scope="module")
def calibration(digits_train):
    return digits_train.tensors[0][:96]


def _mean_magnitudes(snn, x):
    """Each neuron's per-element mean |output| over ``x``, computed here by hooks on the ANN side."""
    sums = {}
    hooks = [m.register_forward_hook(lambda mod, i, out, n=n: sums.__setitem__(n, out.detach().abs().double().sum(0)))
             for n, m in snn.neurons.items()]
    with torch.no_grad():
        snn.ann(x)
    for h in hooks:
        h.remove()
    return {n: s / x.shape[0] for n, s in sums.items()}


def test_each_element_is_divided_by_its_calibration_mean_magnitude(trained_digits_cnn, calibration):
    snn = signgd.convert(trained_digits_cnn, calibration, dynamics="graded", scale="mean")
    assert snn.settings["scale"] == "mean" and "by their calibration mean |f(x)|" in snn.conversion_log[-1]
    by_max = signgd.convert(trained_digits_cnn, calibration, dynamics="graded")
    assert "scale" not in by_max.settings
    for name, mean in _mean_magnitudes(snn, calibration).items():
        scale = snn.neurons[name].scale.double()
        live = mean > SILENT * mean[mean > 0].median()  # silent elements take their layer's typical scale
        assert torch.allclose(scale[live], mean[live], rtol=1e-5), name
        assert bool((scale[live] <= by_max.neurons[name].scale.double()[live] * (1 + 1e-6)).all()), name  # mean <= max


def test_a_mean_scaled_network_reaches_its_ann_and_survives_save_and_load(trained_digits_cnn, calibration,
                                                                          digits_test, tmp_path):
    x, y = digits_test.tensors[0][:200], digits_test.tensors[1][:200]
    snn = signgd.convert(trained_digits_cnn, calibration, dynamics="graded", scale="mean")
    with torch.inference_mode():
        ann_acc = float((snn.ann(x).argmax(-1) == y).double().mean())
        snn_acc = float((snn(x, T=16).argmax(-1) == y).double().mean())
    assert snn_acc >= ann_acc - 0.02
    loaded = signgd.load(snn.save(tmp_path / "mean.pt"))
    assert loaded.settings["scale"] == "mean" and torch.equal(loaded(x, T=8), snn(x, T=8))


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "median"}, r"unknown scale 'median'; choose one of \['max', 'mean'\]"),
    ({"scale": "mean", "normalize": "none"}, "normalize='none' normalizes none"),
])
def test_bad_scales_are_refused(trained_digits_cnn, calibration, kwargs, message):
    with pytest.raises(ValueError, match=message):
        signgd.convert(trained_digits_cnn, calibration, **kwargs)
