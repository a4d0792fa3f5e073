"""Feedback on long work (signgd.feedback): one summary line of what convert did and how long it took,
and one documented number of calibration samples for a Dataset, in Python and on the command line."""
from __future__ import annotations

import re

import pytest

import signgd
from signgd.cli import main
from signgd.cli.parser import build_parser
from signgd.convert import CALIBRATION_SAMPLES

SUMMARY = re.compile(r"^signgd: converted Sequential in [0-9.]+ s: 8 neuron layers, calibrated on (.+?) \([0-9.]+ s\)"
                     r"(; schedule (.+?) tuned for T=(\S+) on (\d+) samples \([0-9.]+ s\))?, (\w+) input$")


def _summary(capsys) -> re.Match:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("signgd: converted")]
    assert len(lines) == 1, lines
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    return match


def test_convert_prints_one_summary_line_of_what_it_chose(trained_digits_cnn, digits_train, capsys):
    x = digits_train.tensors[0][:48]
    snn = signgd.convert(trained_digits_cnn, x, T=2)  # stderr is not a terminal here: no bars, the line
    m = _summary(capsys)
    assert m.group(1) == "48 samples" and m.group(3) == repr(snn.schedule) and m.group(4) == "2"
    assert (m.group(5), m.group(6)) == ("48", "analog")
    signgd.convert(trained_digits_cnn, x, preset="paper")
    m = _summary(capsys)
    assert m.group(2) is None and m.group(6) == "float"  # nothing tuned
    signgd.convert(trained_digits_cnn, x, preset="paper", progress=False)
    assert "signgd:" not in capsys.readouterr().err


def test_a_dataset_is_calibrated_on_the_documented_default_number_of_samples(trained_digits_cnn, digits_train,
                                                                             capsys):
    assert len(digits_train) > CALIBRATION_SAMPLES == 500
    snn = signgd.convert(trained_digits_cnn, digits_train, preset="paper")
    used = f"{CALIBRATION_SAMPLES} samples (a random subset of the Dataset's {len(digits_train)})"
    assert _summary(capsys).group(1) == used
    assert any(f"calibrated on {used}" in line for line in snn.conversion_log)
    every = signgd.convert(trained_digits_cnn, digits_train, preset="paper", calibration_samples=None)
    assert _summary(capsys).group(1) == f"{len(digits_train)} samples"
    assert not all(((a.scale == b.scale).all() for a, b in zip(snn.neurons.values(), every.neurons.values())))
    with pytest.raises(ValueError, match="calibration_samples must be a positive"):
        signgd.convert(trained_digits_cnn, digits_train, calibration_samples=0)


def test_the_command_uses_the_same_default_and_prints_the_summary(weights, tmp_path, capsys):
    args = build_parser().parse_args(["convert", "signgd:digits_cnn", "--data", "digits"])
    assert args.calibration == CALIBRATION_SAMPLES
    assert main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--preset", "paper",
                 "--calibration", "64", "--T", "2", "--limit", "10", "--out", str(tmp_path / "r")]) == 0
    assert _summary(capsys).group(1) == "64 samples"  # the command draws the subset itself, as convert() would
