"""Turning what a user passes as data into batches: the one place that knows the accepted forms.

``convert`` reads unlabelled calibration batches, ``evaluate`` and the report read labelled ones,
and a distributed run splits the data between processes (``signgd.distributed.shard_data``) before
batching it here. The forms:

- a tensor ``[N, ...]`` (unlabelled), split into batches;
- a pair of tensors ``(x, y)``, split together (labelled data only: for unlabelled data a list of
  two tensors is two batches);
- a map-style ``Dataset``, read with a ``DataLoader`` of ``batch_size`` in order;
- anything else iterable (a ``DataLoader``, a list or generator of batches), used as it is.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["is_tensor_pair", "items", "labelled", "take", "count", "samples", "sample_dataset"]


def is_tensor_pair(data) -> bool:
    """Whether ``data`` is labelled data given as two tensors ``(x, y)``."""
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, torch.Tensor) for d in data)


def items(data, batch_size: int, error: type[Exception] = ValueError, what: str = "input") -> Iterator:
    """The batches of ``data`` as the source yields them (a tensor, a tuple, a list...); the caller
    picks inputs and labels out of each. ``error`` is raised, naming ``what``, for data that is no
    tensor, Dataset or iterable."""
    if isinstance(data, torch.Tensor):
        if data.dim() < 2:
            raise error(f"{what} tensor of shape {tuple(data.shape)} has no batch dimension; pass [N, ...] "
                        f"(e.g. x.unsqueeze(0) for one sample)")
        yield from data.split(batch_size)
    elif isinstance(data, Dataset):
        yield from DataLoader(data, batch_size=batch_size)
    elif isinstance(data, (str, bytes)) or data is None:
        raise error(f"{what} data must be a tensor, Dataset or iterable of batches, got {type(data).__name__}")
    else:
        try:
            iterator = iter(data)
        except TypeError:
            raise error(f"{what} data must be a tensor, Dataset or iterable of batches, "
                        f"got {type(data).__name__}") from None
        yield from iterator


def labelled(data, batch_size: int) -> Iterator[tuple]:
    """``(x, y)`` batches of labelled data (a pair of tensors, a Dataset of ``(x, y)`` samples, or an
    iterable of ``(x, y, ...)`` batches)."""
    if is_tensor_pair(data):  # not in items(): there a list of two batches is two batches
        if len(data[0]) != len(data[1]):
            raise ValueError(f"inputs and labels differ in length: {len(data[0])} vs {len(data[1])}")
        yield from zip(data[0].split(batch_size), data[1].split(batch_size))
        return
    for item in items(data, batch_size):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise ValueError("evaluate() needs labelled data: batches of (x, y)")
        yield item[0], item[1]


def take(batches: Iterator[tuple], limit: int | None) -> Iterator[tuple]:
    """The ``(x, y)`` batches up to ``limit`` samples in all (the last one cut short)."""
    seen = 0
    for x, y in batches:
        if limit is not None:
            if seen >= limit:
                break
            x, y = x[:limit - seen], y[:limit - seen]
        seen += len(x)
        yield x, y


def count(data, limit: int | None) -> int | None:
    """How many samples ``data`` holds, at most ``limit``; ``limit`` (None: unknown) when it cannot say."""
    try:
        if is_tensor_pair(data) or (isinstance(data, (tuple, list)) and len(data) == 2):
            n = len(data[0])
        elif isinstance(data, DataLoader):
            n = len(data.dataset)
        else:
            n = len(data)
    except TypeError:
        return limit
    return min(n, limit) if limit is not None else n


def samples(data) -> int | None:
    """How many samples unlabelled ``data`` holds (a tensor, a Dataset, a DataLoader); None when it
    cannot say (a generator, a list of batches)."""
    try:
        if isinstance(data, torch.Tensor):
            return len(data)
        if isinstance(data, DataLoader):
            return len(data.dataset)
        if isinstance(data, Dataset):
            return len(data)
    except TypeError:
        pass
    return None


def sample_dataset(data, n: int | None, seed: int):
    """``(data, None)``, or for a map-style Dataset longer than ``n``: ``(a seeded random subset of n
    of its samples, its length)``. Tensors and iterables are the caller's choice of samples: left whole."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"calibration_samples must be a positive number of samples or None, got {n!r}")
    total = samples(data) if isinstance(data, Dataset) else None
    if n is None or total is None or total <= n:
        return data, None
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(data, order.tolist()), total
