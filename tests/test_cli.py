"""The ``signgd`` command on real runs (digits, tmp folders, few T, --limit) and its one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import signgd
from signgd.cli import main
from signgd.report import PLOTS

ROOT = Path(__file__).resolve().parent.parent


def test_python_dash_m_signgd_version():
    out = subprocess.run([sys.executable, "-m", "signgd", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"signgd {signgd.__version__}"


def test_console_script_and_python_dash_m_are_the_same_command():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["signgd"].partition(":")
    import importlib
    assert getattr(importlib.import_module(module), name) is main
    import signgd.__main__ as dunder_main
    assert dunder_main.main is main


def test_help_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "convert", "evaluate", "report"):
        assert command in out


@pytest.fixture(scope="module")
def converted(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert")
    rc = main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--T", "4,32",
               "--limit", "90", "--calibration", "200", "--out", str(out), "--seed", "3", "--schedule", "exponential",
               "--quiet"])
    assert rc == 0
    return out


def test_convert_writes_the_network_and_the_report(converted, trained_digits_cnn, digits_test):
    assert {p.name for p in converted.iterdir()} >= {"snn.pt", "report.json", *PLOTS}
    rep = json.loads((converted / "report.json").read_text())
    settings = rep["settings"]
    assert settings["model"] == "signgd:digits_cnn" and settings["data"] == "digits"
    assert settings["seed"] == 3 and settings["calibration_samples"] == 200 and settings["T"] == [4, 32]
    assert settings["command"][:2] == ["signgd", "convert"]
    assert rep["samples"] == 90
    ann = trained_digits_cnn(digits_test.tensors[0][:90]).argmax(-1)
    assert rep["accuracy"]["ann"] == pytest.approx(float((ann == digits_test.tensors[1][:90]).float().mean()))
    assert rep["accuracy"]["snn"][-1] > 0.9
    snn = signgd.load(converted / "snn.pt")
    assert snn.settings["dynamics"] == "signgd"


def test_evaluate_a_saved_network_reproduces_the_report(converted, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    rc = main(["evaluate", str(converted / "snn.pt"), "--data", "digits", "--T", "4,32", "--limit", "90",
               "--json", str(out_json), "--quiet"])
    assert rc == 0
    assert "| 32 |" in capsys.readouterr().out
    evaluated = json.loads(out_json.read_text())
    original = json.loads((converted / "report.json").read_text())
    assert evaluated["accuracy"] == original["accuracy"]
    assert evaluated["energy"]["snn"]["ac"] == pytest.approx(original["energy"]["snn"]["ac"])


def test_report_redraws_the_plots(converted, capsys):
    for name in PLOTS:
        (converted / name).unlink()
    assert main(["report", str(converted)]) == 0
    assert all((converted / name).stat().st_size > 1000 for name in PLOTS)
    assert "SNN accuracy" in capsys.readouterr().out


def test_demo_writes_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "3", "--T", "2,16", "--limit", "60", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| 16 |" in printed and "ANN test accuracy" in printed
    assert {p.name for p in out.iterdir()} >= {"snn.pt", "report.json", "subgradient", *PLOTS}
    assert json.loads((out / "subgradient" / "report.json").read_text())["settings"]["conversion"]["dynamics"] \
        == "subgradient"
    signgd.load(out / "snn.pt")


@pytest.mark.slow
def test_the_readme_demo_command_runs(tmp_path):
    """The README's first command (without the pip install): python -m signgd demo."""
    out = subprocess.run([sys.executable, "-m", "signgd", "demo"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "signgd-demo" / "report.json").is_file()


def _error(capsys, argv, code=None):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == (code if code is not None else rc) and rc != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_unknown_model_suggests_the_name(capsys):
    err = _error(capsys, ["convert", "torchvision:resnet81", "--data", "digits"], 2)
    assert "unknown torchvision model 'resnet81'" in err and "resnet18" in err
    err = _error(capsys, ["convert", "signgd:vgg_16", "--data", "digits"], 2)
    assert "unknown signgd model" in err and "known:" in err
    err = _error(capsys, ["convert", "resnet18", "--data", "digits"], 2)
    assert "torchvision:NAME" in err


def test_missing_data_says_where_and_how(capsys, tmp_path):
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--data", f"cifar10:{tmp_path}"], 2)
    assert "cifar10 not found under" in err and "download=True" in err
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--data", f"fashion-mnist:{tmp_path / 'nope'}"], 2)
    assert "not found" in err
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--data", "mnist"], 2)
    assert "fashion-mnist[:PATH]" in err


def test_weights_that_do_not_fit(capsys, weights):
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--model-arg", "num_classes=5", "--weights", str(weights),
                          "--data", "digits"], 2)
    assert "do not fit the model" in err and "15.weight: file (10, 64) vs model (5, 64)" in err


def test_unsupported_operation_names_the_node(capsys, tmp_path):
    model_file = tmp_path / "net.py"
    model_file.write_text("from torch import nn\n"
                          "import torch\n"
                          "class Sign(nn.Module):\n"
                          "    def forward(self, x):\n"
                          "        return torch.sign(x)\n"
                          "def net():\n"
                          "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), Sign(), nn.Linear(8, 10))\n")
    err = _error(capsys, ["convert", f"{model_file}:net", "--data", "digits", "--out", str(tmp_path / "o")], 1)
    assert err.startswith("signgd convert: error: unsupported operation:") and "sign" in err
    err = _error(capsys, ["convert", f"{model_file}:nett", "--data", "digits"], 2)
    assert "no function 'nett' (did you mean net?)" in err


def test_bad_files_for_evaluate_and_report(capsys, tmp_path):
    err = _error(capsys, ["evaluate", str(tmp_path / "none.pt"), "--data", "digits"], 1)
    assert "no such file" in err
    err = _error(capsys, ["report", str(tmp_path)], 1)
    assert "no report found" in err


def test_traceback_flag_shows_the_exception(tmp_path):
    with pytest.raises(signgd.SnnFileError):
        main(["evaluate", str(tmp_path / "none.pt"), "--data", "digits", "--traceback"])


@pytest.mark.parametrize("argv,expected", [
    (["convert", "signgd:digits_cnn", "--data", "digits", "--T", "8,x"],
     "signgd convert: error: argument --T: --T takes comma-separated step counts, e.g. 8,16,32,64; got '8,x'"),
    (["convert", "signgd:digits_cnn", "--data", "digits", "--T", "0,8"], "--T needs step counts >= 1"),
    (["convert", "signgd:digits_cnn"], "the following arguments are required: --data"),
    (["convert", "signgd:digits_cnn", "--data", "digits", "--dynamics", "lif"], "invalid choice: 'lif'"),
    (["convert", "signgd:digits_cnn", "--data", "digits", "--batch-size", "-1"], "expected a positive integer"),
    (["evaluate", "--data", "digits"], "required: SNN_FILE"),
    (["frobnicate"], "signgd: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_malformed_arguments_are_one_line_with_exit_status_2(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and err.endswith("--help)"), err


def test_option_names_keep_their_dashes_in_messages(capsys):
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--data", "digits", "--model-arg", "foo"], 2)
    assert "--model-arg 'foo' is not key=value" in err
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--data", "digits", "--mean", "0.1,x"], 2)
    assert "--mean must be comma-separated numbers" in err


def test_broken_model_file_missing_weights_and_an_output_path_that_is_a_file(capsys, tmp_path, weights):
    broken = tmp_path / "broken.py"
    broken.write_text("def net(:\n")
    err = _error(capsys, ["convert", f"{broken}:net", "--data", "digits"], 2)
    assert f"cannot import model file {broken}: SyntaxError" in err and "line 1" in err
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--weights", str(tmp_path / "none.pt"),
                          "--data", "digits"], 2)
    assert "weights file" in err and "not found" in err
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--weights", str(tmp_path), "--data", "digits"], 2)
    assert "it is a folder" in err
    occupied = tmp_path / "occupied"
    occupied.write_text("")
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--T", "2",
                          "--limit", "5", "--calibration", "20", "--out", str(occupied), "--quiet"], 1)
    assert f"cannot read or write a file (File exists: {occupied})" in err


def test_evaluating_a_damaged_file_or_the_wrong_data_is_one_line(capsys, converted, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((converted / "snn.pt").read_bytes()[:1000])
    err = _error(capsys, ["evaluate", str(damaged), "--data", "digits"], 1)
    assert "truncated, corrupt" in err
    err = _error(capsys, ["evaluate", str(converted / "snn.pt"), "--data", "digits", "--resize", "16",
                          "--limit", "4"], 2)  # the network was converted without --resize: refused
    assert "--resize 16 differs from the network's stored preprocessing (resize not set)" in err
    err = _error(capsys, ["evaluate", str(converted / "snn.pt"), "--data", "digits", "--resize", "16",
                          "--limit", "4", "--override-preprocessing"], 1)
    assert "bad input: input of shape" in err and "does not match the network" in err
