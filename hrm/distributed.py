"""torchrun's process group, as training and evaluation join it (gloo on CPU, nccl on CUDA).

A run started by ``torchrun --nproc-per-node N`` has WORLD_SIZE, RANK and LOCAL_RANK in its
environment; a plain run has none and is rank 0 of a world of 1 (every helper here is then a
no-op), so the same code serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
import torch.distributed as dist

__all__ = ["Dist", "DistributedError", "init_distributed", "rank_device", "all_gather_object", "barrier", "finish",
           "ResultStore", "shared_map"]


class DistributedError(RuntimeError):
    """The environment asks for a distributed run this device cannot do."""


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and destroy it at the end)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str, timeout_s: float | None = None) -> Dist:
    """Join the torchrun process group when the environment says so (gloo on CPU, nccl on CUDA).
    ``timeout_s``: how long a collective waits for the slowest rank (None: torch's default)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return Dist()
    if device_kind == "mps":
        raise DistributedError("distributed runs are not supported on mps; use cpu (gloo) or cuda (nccl)")
    owns = False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo", **kwargs)
        owns = True
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, owns_group=owns)


def rank_device(device: torch.device, d: Dist) -> torch.device:
    """The device this rank runs on: ``cuda:LOCAL_RANK`` under torchrun on CUDA (one GPU per rank), else ``device``."""
    return torch.device("cuda", d.local_rank) if device.type == "cuda" and d.enabled else device


def all_gather_object(obj: Any, d: Dist) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def finish(d: Dist) -> None:
    """Leave the process group if this process created it."""
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class ResultStore(Protocol):
    """Where :func:`shared_map` keeps finished results, so a stopped run need not compute them again
    (pipelines/job.py's job folder is one)."""

    def load(self, name: str) -> Any | None:
        """The result saved under ``name``, or None when there is none (or it is damaged)."""
        ...

    def save(self, name: str, value: Any) -> None: ...


def shared_map(fn: Callable[[Any], Any], items: Sequence[Any], d: Dist | None, store: ResultStore | None = None,
               name: str = "item", rank0_only: Sequence[str] = ()) -> Iterator[Any]:
    """``fn(item)`` for every item, in order, on every rank; item i is computed on rank i % world_size
    and sent to all (one round of world_size items at a time, so memory holds one round in flight).
    Every rank sees the same results in the same order and can go on with the same computation.
    Without a process group it is ``map(fn, items)``.

    ``store``: item i's result is looked up there first, under ``f"{name}-{i:06d}"``, and saved there
    once computed, by the rank that computed it (``fn`` must not return None).
    ``rank0_only``: keys of a dict result that only rank 0 needs (what it alone writes): they go to
    rank 0 alone, and the other ranks see the result without them."""
    def result(i: int) -> Any:
        key = f"{name}-{i:06d}"
        got = None if store is None else store.load(key)
        if got is None:
            got = fn(items[i])
            if store is not None:
                store.save(key, got)
        return got

    if d is None or not d.enabled:
        yield from map(result, range(len(items)))
        return
    w = d.world_size
    for start in range(0, len(items), w):
        i = start + d.rank
        mine = result(i) if i < len(items) else None
        if rank0_only and isinstance(mine, dict):
            private = {k: mine[k] for k in rank0_only if k in mine}
            shared = {k: v for k, v in mine.items() if k not in private}
        else:
            private, shared = None, mine
        got = all_gather_object(shared, d)
        if rank0_only:
            to_rank0 = [None] * w if d.rank == 0 else None
            dist.gather_object(private, to_rank0, dst=0)
            if d.rank == 0:
                got = [g if p is None else {**g, **p} for g, p in zip(got, to_rank0)]
        yield from got[:min(w, len(items) - start)]
