"""Schedule tuning for a given number of time steps (convert(T=...)) and the paper preset."""
import pytest
import torch

import signgd
from signgd.tuning import DEFAULT_STEPS, PAPER, tune_schedule


@pytest.fixture(scope="module")
def calibration(digits_train):
    return digits_train.tensors[0][:200]


def test_tuning_scores_every_candidate_and_beats_the_paper_schedule(trained_digits_cnn, calibration):
    snn = signgd.convert(trained_digits_cnn, calibration, encoding="analog", schedule="exponential")
    before = snn.schedule
    result = tune_schedule(snn, calibration[:128], T=6)
    assert snn.schedule is before  # tuning leaves the network as it was
    assert len(result.candidates) == 22  # 16 + the paper's exponential (each continued past T by gains), 5 adaptive
    assert sum("early_grow" in c.schedule.params for c in result.candidates) == 5
    keys = [c.key for c in result.candidates]
    assert keys == sorted(keys)
    assert (result.paper.schedule.params["lr"], result.paper.schedule.params["decay"]) == PAPER
    assert result.best.agreement >= result.paper.agreement
    # The scores are what a simulation of the chosen schedule gives.
    snn.schedule = result.schedule
    with torch.inference_mode():
        agree = (snn(calibration[:128], T=6).argmax(-1) == snn.ann(calibration[:128]).argmax(-1)).double().mean()
    assert float(agree) == pytest.approx(result.best.agreement)
    assert "agreement" in result.table()


def test_the_screen_scores_every_candidate_and_only_the_best_and_the_papers_in_full(trained_digits_cnn,
                                                                                     calibration):
    """Successive halving: every candidate on SCREEN_SAMPLES samples at the T up to a quarter of the longest,
    the SURVIVORS best and the paper's on all samples at every T; their full scores are the unscreened tuner's."""
    from signgd.tuning import SCREEN_SAMPLES, SURVIVORS
    snn = signgd.convert(trained_digits_cnn, calibration, encoding="analog", schedule="exponential")
    x = calibration[:96]
    full = tune_schedule(snn, x, T=[2, 4, 8])
    unscreened = tune_schedule(snn, x, T=[2, 4, 8], screen=False)
    assert len(full.candidates) == len(unscreened.candidates) == 22
    finalists = [c for c in full.candidates if not c.screened_out]
    assert SURVIVORS <= len(finalists) <= SURVIVORS + 1 and full.best in finalists
    assert full.paper in finalists and full.best.agreement >= full.paper.agreement
    assert full.screen == f"{SCREEN_SAMPLES} samples at T=2" and "screened out" in full.table()
    assert not unscreened.screen and not any(c.screened_out for c in unscreened.candidates)
    scores = {repr(c.schedule): (c.agreement, c.error) for c in unscreened.candidates}
    for c in finalists:
        assert scores[repr(c.schedule)] == pytest.approx((c.agreement, c.error))
    keys = [c.key for c in full.candidates]
    assert keys == sorted(keys)
    # Nothing to screen on when the samples and the steps are already the screen's: every candidate in full.
    small = tune_schedule(snn, x[:SCREEN_SAMPLES], T=8)
    assert not small.screen and len(small.candidates) == 22


def test_convert_for_T_is_more_accurate_at_that_T_than_the_untuned_schedule(trained_digits_cnn, calibration,
                                                                           digits_test):
    default = signgd.convert(trained_digits_cnn, calibration, schedule="exponential", encoding="float")
    tuned = signgd.convert(trained_digits_cnn, calibration, T=6)
    assert tuned.settings["tuned_for"] == 6 and tuned.settings["encoding"] == "analog"
    assert tuned.settings["schedule"] == tuned.schedule.spec()
    assert any("tuned the schedule for T=6" in line for line in tuned.conversion_log)
    acc = {name: signgd.evaluate(snn, digits_test, T=[6], progress=False).snn_accuracy[6]
           for name, snn in (("default", default), ("tuned", tuned))}
    ann = signgd.evaluate(tuned, digits_test, T=[6], progress=False).ann_accuracy
    assert acc["tuned"] > acc["default"] + 0.05
    assert acc["tuned"] > ann - 0.05


def test_the_default_is_one_schedule_tuned_across_T(trained_digits_cnn, calibration):
    """No T: tuned across DEFAULT_STEPS (docs/defaults.md), never worse than the paper's schedule on
    the tuning samples; the paper preset and an explicit schedule tune nothing."""
    default = signgd.convert(trained_digits_cnn, calibration[:40])
    assert default.settings["tuned_for"] == list(DEFAULT_STEPS) and default.settings["encoding"] == "analog"
    assert default.tuning.T == DEFAULT_STEPS and default.tuning.best.agreement >= default.tuning.paper.agreement
    assert any("tuned the schedule for T={8, 16, 32, 64} on 40" in line for line in default.conversion_log)
    assert not hasattr(signgd.convert(trained_digits_cnn, calibration, preset="paper"), "tuning")
    assert not hasattr(signgd.convert(trained_digits_cnn, calibration, schedule="exponential"), "tuning")


@pytest.mark.slow
def test_the_default_is_at_least_as_accurate_as_the_untuned_schedule(trained_digits_cnn, calibration, digits_test):
    default = signgd.convert(trained_digits_cnn, calibration)
    untuned = signgd.convert(trained_digits_cnn, calibration, schedule="exponential", encoding="float")
    assert "tuned_for" not in untuned.settings and untuned.settings["encoding"] == "float"
    got = signgd.evaluate(default, digits_test, T=list(DEFAULT_STEPS), progress=False)
    before = signgd.evaluate(untuned, digits_test, T=list(DEFAULT_STEPS), progress=False)
    for t in DEFAULT_STEPS:
        assert got.snn_accuracy[t] >= before.snn_accuracy[t] - 0.01 and got.snn_accuracy[t] > got.ann_accuracy - 0.02


def test_explicit_settings_win_over_T_and_preset(trained_digits_cnn, calibration):
    snn = signgd.convert(trained_digits_cnn, calibration, T=8, schedule="constant:lr=0.05", encoding="float")
    assert snn.settings["schedule"] == {"name": "constant", "lr": 0.05}
    assert snn.settings["encoding"] == "float" and not hasattr(snn, "tuning")
    paper = signgd.convert(trained_digits_cnn, calibration, preset="paper")
    assert (paper.settings["normalize"], paper.settings["encoding"]) == ("relu", "float")
    assert paper.settings["schedule"] == {"name": "exponential", "lr": 0.15, "decay": 0.95}
    explicit = signgd.convert(trained_digits_cnn, calibration, preset="paper", normalize="all")
    assert explicit.settings["normalize"] == "all"


def test_tuned_network_saves_and_loads_with_its_schedule(trained_digits_cnn, calibration, tmp_path):
    snn = signgd.convert(trained_digits_cnn, calibration, T=4)
    loaded = signgd.load(snn.save(tmp_path / "snn.pt"))
    assert loaded.settings["tuned_for"] == 4
    x = calibration[:16]
    assert torch.equal(loaded(x, T=4), snn(x, T=4))


@pytest.mark.parametrize("kwargs, message", [
    ({"T": 0}, "positive integer"),
    ({"T": 2.5}, "positive integer"),
    ({"T": True}, "positive integer"),
    ({"T": [8, 0]}, "positive integer"),
    ({"T": 8, "dynamics": "subgradient"}, "signGD"),
    ({"preset": "fast"}, "unknown preset"),
])
def test_bad_tuning_arguments_are_refused(trained_digits_cnn, calibration, kwargs, message):
    with pytest.raises(ValueError, match=message):
        signgd.convert(trained_digits_cnn, calibration, **kwargs)


def test_cli_convert_tunes_for_T(trained_digits_cnn, tmp_path):
    from signgd.cli import main

    weights = tmp_path / "digits_cnn.pt"
    torch.save(trained_digits_cnn.state_dict(), weights)
    rc = main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--T", "4",
               "--limit", "40", "--calibration", "100", "--tune-for", "4", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 0
    snn = signgd.load(tmp_path / "r" / "snn.pt")
    assert snn.settings["tuned_for"] == 4 and snn.settings["encoding"] == "analog"
    assert snn.settings["schedule"]["start"] == 4  # an exponential schedule, continued past T=4 by gains
