"""Issue 17, first contact: a network remembers its input preprocessing, a missing ``--weights`` and a
chance-level ANN show at once, the command picks the OpenMP wait policy, and the messages say what to do.
Real runs on scikit-learn's digits (few samples, few T)."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import signgd
from signgd import launch, preprocessing
from signgd.cli import main
from signgd.snnfile import to_payload

FAST = ["--T", "4,16", "--limit", "60", "--calibration", "100", "--schedule", "exponential", "--quiet"]


def _error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ---- 1. the network carries its preprocessing ----------------------------------------------------

@pytest.fixture(scope="module")
def normalized(weights, tmp_path_factory):
    """The digits CNN converted with --mean/--std (as a Fashion-MNIST model would be)."""
    out = tmp_path_factory.mktemp("normalized")
    assert main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits", "--mean", "0.3",
                 "--std", "0.4", "--out", str(out), *FAST]) == 0
    return out


def _evaluate(tmp_path, snn_path, *options) -> dict:
    out = tmp_path / f"eval{len(list(tmp_path.iterdir()))}.json"
    assert main(["evaluate", str(snn_path), "--data", "digits", "--T", "4,16", "--limit", "60", "--quiet",
                 "--json", str(out), *options]) == 0
    return json.loads(out.read_text())


def test_evaluate_applies_the_stored_preprocessing(normalized, tmp_path, capsys):
    snn = signgd.load(normalized / "snn.pt")
    assert snn.settings["preprocessing"] == {"resize": None, "crop": None, "mean": [0.3], "std": [0.4]}
    converted = json.loads((normalized / "report.json").read_text())
    without = _evaluate(tmp_path, normalized / "snn.pt")
    given = _evaluate(tmp_path, normalized / "snn.pt", "--mean", "0.3", "--std", "0.4")
    assert without["accuracy"] == given["accuracy"] == converted["accuracy"]
    assert without["settings"]["image"]["mean"] == [0.3]
    raw = _evaluate(tmp_path, normalized / "snn.pt", "--override-preprocessing")  # the raw images
    assert raw["accuracy"]["ann"] != without["accuracy"]["ann"]
    capsys.readouterr()
    err = _error(capsys, ["evaluate", str(normalized / "snn.pt"), "--data", "digits", "--mean", "0.5"])
    assert "--mean 0.5 differs from the network's stored preprocessing (mean 0.3)" in err
    assert "--override-preprocessing" in err


class _Transformed(Dataset):
    """Digits as a torchvision dataset hands them out: ``transform`` applied to each image."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


def test_python_convert_records_torchvision_transforms(trained_digits_cnn, digits_train, tmp_path):
    from torchvision import transforms
    from torchvision.transforms import v2
    v1_data = _Transformed(digits_train, transforms.Compose([transforms.Normalize([0.3], [0.4])]))
    snn = signgd.convert(trained_digits_cnn, DataLoader(v1_data, batch_size=100), schedule="exponential")
    assert snn.settings["preprocessing"] == {"resize": None, "crop": None, "mean": [0.3], "std": [0.4]}
    loaded = signgd.load(snn.save(tmp_path / "snn.pt"))
    assert loaded.settings["preprocessing"] == snn.settings["preprocessing"]
    v2_data = _Transformed(digits_train, v2.Normalize([0.3], [0.4]))
    assert signgd.convert(trained_digits_cnn, v2_data, schedule="exponential").settings["preprocessing"]["std"] == [0.4]
    other = _Transformed(digits_train, transforms.Lambda(lambda x: x * 2))
    assert signgd.convert(trained_digits_cnn, other, schedule="exponential").settings["preprocessing"] is None
    assert signgd.convert(trained_digits_cnn, digits_train.tensors[0][:100],
                          schedule="exponential").settings["preprocessing"] is None


def test_which_torchvision_steps_are_recorded():
    from torchvision import transforms as v1
    from torchvision.transforms import v2
    steps = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize(36, antialias=False),
                        v2.CenterCrop(32), v2.Normalize([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])])
    assert preprocessing.from_transform(steps) == {"resize": 36, "crop": 32, "mean": [0.5, 0.4, 0.3],
                                                   "std": [0.2, 0.2, 0.2]}
    assert preprocessing.from_transform(v1.Compose([v1.CenterCrop(24), v1.ToTensor()]))["crop"] == 24
    assert preprocessing.from_transform(v1.Resize(36)) is None  # antialiasing: not what the command does
    assert preprocessing.from_transform(v1.Compose([v1.Normalize([0.5], [0.2]), v1.CenterCrop(8)])) is None
    assert preprocessing.from_transform(v2.Compose([v2.RandomHorizontalFlip()])) is None


def test_a_file_saved_before_preprocessing_was_recorded_still_loads(trained_digits_cnn, digits_train, tmp_path):
    snn = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:100], preprocessing={"mean": [0.3]},
                         schedule="exponential")
    assert snn.settings["preprocessing"] == {"resize": None, "crop": None, "mean": [0.3], "std": None}
    payload = to_payload(snn)
    del payload["settings"]["$dict"]["preprocessing"]
    torch.save(payload, tmp_path / "old.pt")
    old = signgd.load(tmp_path / "old.pt")
    assert old.settings["preprocessing"] is None
    x = digits_train.tensors[0][:5]
    assert torch.equal(old(x, T=8), snn(x, T=8))


# ---- 2. missing weights, chance-level ANNs ------------------------------------------------------

def test_a_named_model_without_weights_is_warned_about(weights, tmp_path, capsys):
    assert main(["convert", "signgd:digits_cnn", "--data", "digits", "--out", str(tmp_path / "a"), *FAST]) == 0
    captured = capsys.readouterr()
    warnings = [ln for ln in captured.err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "no --weights given: signgd:digits_cnn keeps its random initial weights" \
        in warnings[0]
    assert "chance level for 10 classes" in captured.out
    assert main(["convert", "signgd:digits_cnn", "--weights", str(weights), "--data", "digits",
                 "--out", str(tmp_path / "b"), *FAST]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "chance level" not in captured.out


def test_the_ann_accuracy_is_printed_before_the_simulation(weights, tmp_path):
    """On a terminal (a pty), the ANN line comes before the simulation's progress bar."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # a width for the bars
    proc = subprocess.Popen([sys.executable, "-m", "signgd", "convert", "signgd:digits_cnn", "--weights",
                             str(weights), "--data", "digits", "--T", "4", "--limit", "40", "--calibration", "50",
                             "--schedule", "exponential", "--out", str(tmp_path)],
                            stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []

    def read():
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    assert proc.wait(timeout=300) == 0
    reader.join(timeout=30)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    calibrate, ann = text.find("calibrate:"), text.find("ANN accuracy on the evaluation data:")
    assert 0 <= calibrate < ann < text.find("simulate:"), text


# ---- 3. the OpenMP wait policy of the command ---------------------------------------------------

def _openmp_settings(argv, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(argv, capture_output=True, text=True, env={**environ, "OMP_DISPLAY_ENV": "VERBOSE", **env},
                         timeout=120, check=True)
    if "GOMP_SPINCOUNT" not in out.stderr:
        pytest.skip("torch's OpenMP runtime here is not libgomp (no OMP_DISPLAY_ENV report)")
    return out.stderr


def test_the_command_sets_a_passive_wait_policy_before_torch_loads(tmp_path):
    # libgomp reads OMP_WAIT_POLICY once, when torch loads it: PASSIVE means a spin count of 0
    assert "GOMP_SPINCOUNT = '0'" in _openmp_settings([sys.executable, "-m", "signgd", "--version"])
    script = tmp_path / "signgd"  # the console script as pip writes it
    script.write_text("import re\nimport sys\nfrom signgd.cli import main\nif __name__ == '__main__':\n"
                      "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main())\n")
    assert "GOMP_SPINCOUNT = '0'" in _openmp_settings([sys.executable, str(script), "--version"])
    # the user's choice wins, and importing signgd as a library changes nothing
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in _openmp_settings([sys.executable, "-m", "signgd", "--version"],
                                                            OMP_WAIT_POLICY="ACTIVE")
    assert "GOMP_SPINCOUNT = '0'" not in _openmp_settings([sys.executable, "-c", "import signgd"])


@pytest.mark.parametrize("orig_argv,argv0,expected", [
    (["python", "-m", "signgd", "demo"], "-m", True),
    (["python", "-u", "-m", "signgd.__main__"], "-m", True),
    (["python", "-m", "pytest", "tests"], "-m", False),
    (["python", "/venv/bin/signgd", "demo"], "/venv/bin/signgd", True),
    (["python", "train.py"], "train.py", False),
    (["python", "-c", "import signgd"], "-c", False),
])
def test_started_as_command(orig_argv, argv0, expected):
    assert launch.started_as_command(orig_argv, argv0) is expected


# ---- 4. messages ------------------------------------------------------------------------------

def test_a_directory_given_to_evaluate_names_the_network_inside(normalized, tmp_path, capsys):
    err = _error(capsys, ["evaluate", str(normalized), "--data", "digits"])
    assert f"{normalized} is a directory, not a network file; give the network file inside it, " \
           f"{normalized / 'snn.pt'}" in err
    err = _error(capsys, ["evaluate", str(tmp_path), "--data", "digits"])
    assert "is a directory" in err and "DIR/snn.pt" in err


def test_a_pickled_whole_model_as_weights_says_to_save_the_state_dict(trained_digits_cnn, tmp_path, capsys):
    torch.save(trained_digits_cnn, tmp_path / "whole.pt")
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--weights", str(tmp_path / "whole.pt"), "--data", "digits"])
    assert "\x1b" not in err and "holds a pickled torch.nn.modules.container.Sequential" in err
    assert "torch.save(model.state_dict(), 'weights.pt')" in err


def test_an_unknown_schedule_key_lists_the_valid_ones(capsys):
    err = _error(capsys, ["convert", "signgd:digits_cnn", "--data", "digits", "--schedule",
                          "exponential:lr=0.1,decy=0.9"])
    assert "schedule 'exponential' has no parameter 'decy'; its parameters are lr, decay" in err
    with pytest.raises(ValueError, match="its parameters are lr, grow, shrink"):
        signgd.schedules.make_schedule({"name": "adaptive", "rate": 0.1})


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_texts_fit_each_command(capsys):
    assert "seed for training" not in _help(capsys, "convert")
    assert "recorded in the report only" in _help(capsys, "evaluate")
    assert "seed for the data split, training" in _help(capsys, "demo")
    assert "Redraw the plots of a report folder" in _help(capsys, "report")


def test_many_unsupported_nodes_are_grouped_by_op():
    class Signs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            h = self.fc(x)
            for _ in range(7):
                h = h + torch.sign(h)
            return torch.floor(h)

    with pytest.raises(signgd.UnsupportedOperationError) as info:
        signgd.convert(Signs().eval(), torch.randn(4, 6), schedule="exponential")
    assert len(info.value.nodes) == 8
    assert "7 x torch.sign: sign, sign_1, sign_2, ... (4 more); 1 x torch.floor: floor." in str(info.value)


# ---- 5. one table -------------------------------------------------------------------------------

def test_the_python_report_and_the_command_print_one_table(normalized):
    from signgd.evaluate import EvaluationReport
    from signgd.report import read_report, summary
    rep = read_report(normalized)
    acc = rep["accuracy"]
    python = EvaluationReport(rep["samples"], acc["ann"], dict(zip(rep["steps"], acc["snn"])),
                              dict(zip(rep["steps"], acc["agreement"]))).table().splitlines()
    command = summary(rep).splitlines()
    assert command[0].startswith(python[0] + "; ANN per sample:")
    for mine, theirs in zip(python[2:], command[2:2 + len(python) - 2]):
        assert theirs.startswith(mine.removesuffix("|")), (mine, theirs)
    assert "synaptic ACs" in command[2] and "gap to ANN" in command[2]
