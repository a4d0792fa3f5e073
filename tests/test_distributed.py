"""Data-parallel evaluation: real torchrun runs with 2 CPU processes (gloo) give exactly one process's
accuracies on a size that does not divide by 2; sharding covers every sample once; clear errors.

No mock of torch.distributed: the runs below start torchrun as a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import signgd
from signgd.batches import labelled
from signgd.cli import main
from signgd.distributed import DistributedError, shard_data, shard_range

TESTS = Path(__file__).resolve().parent
ARGS = ["--data", "digits", "--T", "4,32", "--limit", "101", "--quiet"]  # 101 samples: 51 + 50


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out


# ---- sharding, without processes -------------------------------------------------------------------
def test_shards_cover_every_index_exactly_once():
    for world in range(1, 5):
        for n in range(8):
            shards = [shard_range(n, r, world) for r in range(world)]
            assert [i for s in shards for i in s] == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


class _Plain(Dataset):
    """A map-style dataset that is not a TensorDataset (goes through Subset)."""

    def __len__(self):
        return 13

    def __getitem__(self, i):
        return torch.tensor([float(i)]), i


def _labels(data, batch_size, limit=None):
    seen = [int(v) for _, y in labelled(data, batch_size) for v in torch.as_tensor(y)]
    return seen[:limit] if limit is not None else seen


@pytest.mark.parametrize("kind", ["tensors", "tensor_dataset", "dataset", "loader", "loader_drop_last"])
def test_sharded_data_is_what_one_process_reads(kind):
    x, y = torch.arange(13.0).unsqueeze(1), torch.arange(13)
    data = {"tensors": (x, y), "tensor_dataset": TensorDataset(x, y), "dataset": _Plain(),
            "loader": DataLoader(_Plain(), batch_size=4),
            "loader_drop_last": DataLoader(TensorDataset(x, y), batch_size=4, drop_last=True)}[kind]
    for limit in (None, 10):
        one = _labels(data, 4, limit)
        for world in (1, 2, 3, 4):
            parts = [shard_data(data, 4, limit, r, world) for r in range(world)]
            assert [i for part, _ in parts for i in _labels(part, 4)] == one
            assert [n for _, n in parts] == [len(_labels(part, 4)) for part, _ in parts]


def test_data_the_ranks_cannot_split_is_refused():
    x, y = torch.zeros(6, 1), torch.arange(6)
    for data in (DataLoader(TensorDataset(x, y), batch_size=2, shuffle=True), iter([(x, y)])):
        with pytest.raises(DistributedError, match="splits the data"):
            shard_data(data, 2, None, 0, 2)


def test_distributed_true_without_a_process_group_says_how_to_start(digits_test, trained_digits_cnn):
    with pytest.raises(DistributedError, match="torchrun"):
        signgd.evaluate(object(), digits_test, T=4, distributed=True)
    with pytest.raises(DistributedError, match="init_process_group"):
        signgd.convert(trained_digits_cnn, digits_test.tensors[0][:8], distributed=True, schedule="exponential")
    with pytest.raises(TypeError):
        signgd.evaluate(object(), digits_test, T=4, distributed="yes")


# ---- real runs: torchrun, 2 processes, gloo ----------------------------------------------------------
@pytest.fixture(scope="module")
def converted(weights, tmp_path_factory):
    """`signgd convert` run twice on 101 test samples: in this process (one/), and unchanged under
    torchrun with 2 processes (two/); the second run's stdout."""
    tmp = tmp_path_factory.mktemp("dist-convert")
    convert = ["convert", "signgd:digits_cnn", "--weights", str(weights), "--calibration", "200",
               "--schedule", "exponential", *ARGS]
    assert main([*convert, "--out", str(tmp / "one")]) == 0
    run = _torchrun(["-m", "signgd", *convert, "--out", str(tmp / "two")], tmp)
    return tmp, run.stdout


def test_cli_convert_under_torchrun_equals_one_process(converted):
    """Same accuracies per T (exactly), same samples, same spikes; rank 0 alone prints and writes."""
    tmp, stdout = converted
    assert stdout.count("ANN accuracy: ") == 1 and stdout.count("report: ") == 1
    # the ANN's accuracy printed before the simulation is summed over both ranks' shards, once
    assert stdout.count("ANN accuracy on the evaluation data: ") == 1 and "(101 samples); simulating" in stdout
    one, two = (json.loads((tmp / d / "report.json").read_text()) for d in ("one", "two"))
    assert one["samples"] == two["samples"] == 101
    assert two["accuracy"] == one["accuracy"]  # exactly: counts are summed as integers
    assert (one["settings"]["processes"], two["settings"]["processes"]) == (1, 2)
    for a, b in zip(one["layers"], two["layers"], strict=True):
        assert b["spikes_per_sample"] == pytest.approx(a["spikes_per_sample"], rel=1e-12)
        assert b["relative_error"] == pytest.approx(a["relative_error"], rel=1e-9)
    assert two["energy"]["snn"]["ac"] == one["energy"]["snn"]["ac"]  # exact integer counts, summed over ranks
    assert two["energy"]["snn"]["mac"] == one["energy"]["snn"]["mac"]
    assert signgd.load(tmp / "two" / "snn.pt").settings == signgd.load(tmp / "one" / "snn.pt").settings


@pytest.mark.slow
def test_cli_evaluate_under_torchrun_equals_one_process(converted):
    """`signgd evaluate` of the saved network under torchrun: rank 0 writes the JSON, same accuracies."""
    tmp, _ = converted
    _torchrun(["-m", "signgd", "evaluate", str(tmp / "two" / "snn.pt"), *ARGS, "--json", str(tmp / "eval.json")],
              tmp)
    evaluated = json.loads((tmp / "eval.json").read_text())
    one = json.loads((tmp / "one" / "report.json").read_text())
    assert evaluated["samples"] == 101 and evaluated["accuracy"] == one["accuracy"]


def test_python_api_under_torchrun_equals_one_process(weights, trained_digits_cnn, digits_train, digits_test,
                                                      tmp_path):
    """signgd.convert and signgd.evaluate in an initialized group (distributed=None: on). Rank 1
    converted a perturbed model, so equal states on both ranks show rank 0's network was broadcast."""
    _torchrun([str(TESTS / "distributed_worker.py"), str(weights), str(tmp_path)], tmp_path)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2
    assert r1["state"] == r0["state"] and r1["values_per_sample"] == r0["values_per_sample"]
    assert r1["tuned"] == r0["tuned"] and "decay" in r0["tuned"]  # an exponential schedule (continued by gains)
    assert r1["evaluate"] == r0["evaluate"] and r1["drop_last"] == r0["drop_last"]
    assert r0["alone_n"] == r1["alone_n"] == 9  # distributed=False: each process evaluates all its data
    assert "different data or steps" in r0["mismatch"] and "different data or steps" in r1["mismatch"]

    snn = signgd.convert(trained_digits_cnn, digits_train.tensors[0][:200], schedule="exponential")
    one = signgd.evaluate(snn, digits_test, T=[4, 32], limit=101)
    loader = DataLoader(torch.utils.data.Subset(digits_test, range(101)), batch_size=16, drop_last=True)
    dropped = signgd.evaluate(snn, loader, T=[4, 32])
    assert r0["evaluate"] == json.loads(json.dumps(one.to_dict()))
    assert r0["drop_last"] == json.loads(json.dumps(dropped.to_dict())) and dropped.n == 96
