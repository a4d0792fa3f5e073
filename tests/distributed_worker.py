"""One rank of tests/test_distributed.py's Python-API run, started by torchrun (gloo on CPU).

    torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py WEIGHTS OUT_DIR

Every rank converts the digits CNN (rank 1 first perturbs its copy of the weights, so only the
broadcast of rank 0's network can make the ranks agree), evaluates with the default
``distributed=None`` (an initialized group: on), and writes what it got to ``OUT_DIR/rank{R}.json``.
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

import signgd
from signgd import data, models

LIMIT = 101  # does not divide by 2


def main(weights: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = models.digits_cnn()
    model.load_state_dict(torch.load(weights, weights_only=True))
    if rank == 1:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    train, test = data.digits("train"), data.digits("test")
    snn = signgd.convert(model, train.tensors[0][:200], schedule="exponential")
    state = {k: v.double().sum().item() for k, v in snn.graph_module.state_dict().items()}
    evaluated = signgd.evaluate(snn, test, T=[4, 32], limit=LIMIT)
    tuned = signgd.convert(model, train.tensors[0][:200], T=4).settings["schedule"]  # rank 0's choice everywhere
    # A DataLoader with drop_last: 101 samples in batches of 16 -> one process sees 96.
    loader = DataLoader(Subset(test, range(LIMIT)), batch_size=16, drop_last=True)
    dropped = signgd.evaluate(snn, loader, T=[4, 32])
    alone = signgd.evaluate(snn, (test.tensors[0][:9], test.tensors[1][:9]), T=[4], distributed=False)
    try:  # ranks that disagree on the data fail together, with a message, instead of waiting
        signgd.evaluate(snn, test, T=[4], limit=10 + rank)
        mismatch = None
    except signgd.SigngdError as exc:
        mismatch = str(exc)
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "world": dist.get_world_size(), "state": state, "values_per_sample": snn.values_per_sample,
        "evaluate": evaluated.to_dict(), "drop_last": dropped.to_dict(), "alone_n": alone.n, "mismatch": mismatch,
        "tuned": tuned}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
