"""Data-parallel evaluation on ``torch.distributed``: one process per GPU (or per share of a CPU),
started by ``torchrun``, each simulating a disjoint shard of the data.

Why each piece is the way it is:

- Sharding is a contiguous, balanced split of the sample indices (``shard_range``): every index
  belongs to exactly one rank, also when the size does not divide by the number of ranks.
  ``torch.utils.data.DistributedSampler`` is not used: it pads the last shard with repeated samples
  so that every rank gets as many, which would count those samples twice.
- Results are summed across ranks as integers (correct predictions, agreements, sample counts), so
  the accuracies are exactly those of one process. Float statistics of the report (spikes per step,
  per-layer error sums) are summed in float64: spike counts are whole numbers and stay exact, the
  error sums agree with one process up to float64 rounding.
- Every rank converts the model (the graph passes need it), then takes rank 0's weights, scales and
  ``A(0)`` (``broadcast_network``), so all ranks simulate the same network even where calibration on
  different hardware would round differently.
- Only rank 0 writes files and shows progress bars; the command line does that (``signgd.cli``).

The Python API's rule (``signgd.evaluate``, ``signgd.report.collect`` / ``make_report``,
``signgd.convert``): ``distributed=None``, the default, is on when a process group is initialized
(``torch.distributed.is_initialized()``) and off otherwise; ``True`` requires one; ``False`` ignores
it (each process works on all the data alone). When on, the call is a collective: every rank of
the group must make it, with the same data and arguments.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
    Subset,
    TensorDataset,
)

from . import batches
from .errors import DistributedError

__all__ = ["DistributedError", "active", "rank", "world_size", "is_main", "shard_range", "shard_data",
           "all_reduce", "broadcast_object", "broadcast_network", "check_same", "launched_by_torchrun", "launched",
           "local_device", "rank_label"]

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_HOW_TO_START = ("start the processes with torchrun (e.g. torchrun --nproc_per_node 2 script.py) and call "
                 "torch.distributed.init_process_group() first, or pass distributed=False")


# ---- who am I ------------------------------------------------------------------------------------
def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def active(distributed: bool | None) -> bool:
    """Whether a call with this ``distributed`` argument shards and reduces (the module's rule)."""
    if distributed is None:
        return initialized()
    if distributed is False:
        return False
    if distributed is not True:
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    if not initialized():
        raise DistributedError(f"distributed=True but no torch.distributed process group is initialized; "
                               f"{_HOW_TO_START}")
    return True


def rank() -> int:
    """This process's rank in the default group (0 outside one)."""
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    """Processes in the default group (1 outside one)."""
    return dist.get_world_size() if initialized() else 1


def is_main() -> bool:
    """True on the process that writes files and prints: rank 0, or the only process."""
    return rank() == 0


# ---- sharding ------------------------------------------------------------------------------------
def shard_range(n: int, rank: int, world: int) -> range:
    """The indices of ``range(n)`` that ``rank`` of ``world`` evaluates: contiguous, sizes differing
    by at most one, every index in exactly one shard (a shard is empty when ``n < world``)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world} processes")
    if n < 0:
        raise ValueError(f"cannot shard {n} samples")
    return range(n * rank // world, n * (rank + 1) // world)


def shard_data(data, batch_size: int, limit: int | None, rank: int, world: int):
    """This rank's part of the first ``limit`` samples of ``data``, as data ``signgd.evaluate`` reads,
    and the number of samples in it.

    ``data`` must say which samples it holds and in which order, so that the ranks can split it
    without seeing each other's part: a pair of tensors ``(x, y)``, a map-style Dataset, or a
    DataLoader over one that reads it in order (its batch size, workers, collate function and
    pinning are kept; with ``drop_last`` the samples one process would drop are dropped here too).
    """
    if batches.is_tensor_pair(data):
        if len(data[0]) != len(data[1]):
            raise ValueError(f"inputs and labels differ in length: {len(data[0])} vs {len(data[1])}")
        part = shard_range(_capped(len(data[0]), limit), rank, world)
        return (data[0][part.start:part.stop], data[1][part.start:part.stop]), len(part)
    if isinstance(data, DataLoader):
        return _shard_loader(data, limit, rank, world)
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        part = shard_range(_capped(len(data), limit), rank, world)
        return _subset(data, part), len(part)
    raise DistributedError(
        f"distributed evaluation splits the data between the processes itself and cannot split a "
        f"{type(data).__name__}; pass a map-style Dataset, a pair of tensors (x, y), or a DataLoader "
        f"over a Dataset without a sampler of its own (no DistributedSampler: it repeats samples)")


def _capped(n: int, limit: int | None) -> int:
    return n if limit is None else min(n, limit)


def _subset(dataset: Dataset, part: range) -> Dataset:
    """A contiguous slice of a dataset; a TensorDataset stays one (slicing is free, no per-item reads)."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[part.start:part.stop] for t in dataset.tensors))
    return Subset(dataset, part)


def _shard_loader(loader: DataLoader, limit: int | None, rank: int, world: int):
    dataset = loader.dataset
    in_order = (isinstance(loader.sampler, SequentialSampler) and type(loader.batch_sampler) is BatchSampler
                and not isinstance(dataset, IterableDataset))
    if not in_order:
        raise DistributedError(
            "distributed evaluation splits the data between the processes itself: pass the Dataset, or a "
            "DataLoader over it with shuffle=False and no sampler or batch_sampler of its own (a "
            "DistributedSampler repeats samples to even out the shards)")
    n = len(dataset)
    if loader.drop_last:  # one process would never see the incomplete last batch
        n -= n % loader.batch_size
    part = shard_range(_capped(n, limit), rank, world)
    kwargs = dict(batch_size=loader.batch_size, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                  pin_memory=loader.pin_memory, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                  generator=loader.generator, pin_memory_device=loader.pin_memory_device)
    if loader.num_workers > 0:
        kwargs.update(multiprocessing_context=loader.multiprocessing_context,
                      prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers)
    return DataLoader(_subset(dataset, part), **kwargs), len(part)


# ---- collectives ---------------------------------------------------------------------------------
def _comm_device() -> torch.device:
    """Where collective tensors must live: CPU when the group has gloo (or MPI), else this rank's GPU."""
    backend = str(dist.get_backend()).lower()
    if "gloo" in backend or "mpi" in backend or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def all_reduce(tensors: dict[str, torch.Tensor], op: str = "sum") -> dict[str, torch.Tensor]:
    """Sum (or ``op="max"``, ``"min"``) each tensor over all ranks; one collective per dtype, results on CPU.

    Integer tensors are reduced as int64, so counts are exact."""
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    device = _comm_device()
    out: dict[str, torch.Tensor] = {}
    groups: dict[torch.dtype, list[str]] = {}
    for name, t in tensors.items():
        dtype = torch.float64 if t.is_floating_point() else torch.int64
        groups.setdefault(dtype, []).append(name)
    for dtype, names in groups.items():
        flat = torch.cat([tensors[k].detach().reshape(-1).to(device=device, dtype=dtype) for k in names])
        dist.all_reduce(flat, op=reduce_op)
        flat, offset = flat.cpu(), 0
        for k in names:
            size = tensors[k].numel()
            out[k] = flat[offset:offset + size].reshape(tensors[k].shape)
            offset += size
    return out


def check_same(values: list[int], what: str) -> None:
    """Raise the same ``DistributedError`` on every rank unless all ranks passed equal ``values``:
    ranks that disagree on the data or the steps would otherwise split the samples wrongly or wait
    forever in a collective of another size."""
    mine = torch.tensor([int(v) for v in values] + [-int(v) for v in values])
    both = all_reduce({"v": mine}, op="max")["v"]
    k = len(values)
    if not torch.equal(both[:k], -both[k:]):
        raise DistributedError(f"the ranks were called with different {what} (rank {rank()}: {list(values)}, "
                               f"largest on any rank: {both[:k].tolist()}); every rank must make the same call")


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s picklable ``obj`` on every rank (small things: a schedule's description)."""
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def broadcast_network(snn, src: int = 0) -> None:
    """Make every rank's network rank ``src``'s: all parameters and buffers (weights, normalization
    scales, ``A(0)``) and the memory sizing. Raises the same ``DistributedError`` on every rank when
    the ranks converted structurally different networks (a different model or settings)."""
    state = snn.graph_module.state_dict()
    layout = [(k, tuple(v.shape), str(v.dtype)) for k, v in state.items()]
    fingerprint = {"layout": layout, "settings": snn.settings, "input_shape": snn.input_shape}
    theirs = [fingerprint, snn.values_per_sample]
    dist.broadcast_object_list(theirs, src=src, device=_comm_device())
    same = torch.tensor([int(theirs[0] == fingerprint)])
    if int(all_reduce({"same": same}, op="min")["same"]) != 1:
        raise DistributedError(_difference(theirs[0], fingerprint, src))
    snn.values_per_sample = int(theirs[1])
    device = _comm_device()
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for v in state.values():
        by_dtype.setdefault(v.dtype, []).append(v)
    with torch.no_grad():
        for dtype, tensors in by_dtype.items():
            wire = torch.uint8 if dtype == torch.bool else dtype
            flat = torch.cat([t.reshape(-1).to(device=device, dtype=wire) for t in tensors])
            dist.broadcast(flat, src=src)
            offset = 0
            for t in tensors:
                t.copy_(flat[offset:offset + t.numel()].reshape(t.shape))
                offset += t.numel()


def _difference(theirs: dict, mine: dict, src: int) -> str:
    if theirs == mine:
        what = "another rank converted a different network"
    elif theirs["settings"] != mine["settings"]:
        what = f"conversion settings differ: rank {src} {theirs['settings']} vs rank {rank()} {mine['settings']}"
    elif theirs["input_shape"] != mine["input_shape"]:
        what = f"input shapes differ: rank {src} {theirs['input_shape']} vs rank {rank()} {mine['input_shape']}"
    else:
        diff = next((a, b) for a, b in zip(theirs["layout"] + [None], mine["layout"] + [None]) if a != b)
        what = f"parameters differ: rank {src} has {diff[0]}, rank {rank()} has {diff[1]}"
    return (f"the ranks converted different networks ({what}); every rank must convert the same model with "
            f"the same settings")


# ---- the command line's process group -------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """True in a process torchrun (torch.distributed.run) started: its environment names the group."""
    return all(k in os.environ for k in _TORCHRUN_ENV)


def rank_label() -> str:
    """`` (rank R of W)`` in a process torchrun started with several ranks, for error lines; else empty."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return ""
    return f" (rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']})"


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def launched(device_text: str | None) -> Iterator[bool]:
    """Join the group torchrun describes for the length of a command, and leave it cleanly.

    Backend: NCCL when the command runs on CUDA (``--device cuda``; this rank then uses GPU
    ``LOCAL_RANK``), gloo on CPU. Does nothing outside torchrun, or when the caller already
    initialized a group (which it then keeps). Yields whether a group is in use.
    """
    if initialized() or not launched_by_torchrun():
        yield initialized()
        return
    try:
        device = torch.device(device_text or "cpu")
    except RuntimeError:
        device = torch.device("cpu")  # the command reports the bad --device itself
    if device.type == "cuda" and torch.cuda.is_available():
        local = _local_rank()
        if local >= torch.cuda.device_count():
            raise DistributedError(f"torchrun started local rank {local} but only {torch.cuda.device_count()} "
                                   f"GPUs are visible on this machine; use --nproc_per_node "
                                   f"{torch.cuda.device_count()}")
        torch.cuda.set_device(local if device.index is None else device.index)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    try:
        yield True
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """The device this rank runs on: ``cuda`` without an index means GPU ``LOCAL_RANK`` in a group.
    An explicit index is refused when several ranks share the machine (they would share the GPU)."""
    if not initialized() or device.type != "cuda":
        return device
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise DistributedError(f"--device {device} under torchrun would put every process of this machine on "
                               f"the same GPU; give --device cuda and each process uses GPU LOCAL_RANK")
    return device
