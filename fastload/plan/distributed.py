"""Where this process sits: its rank among training processes and its worker slot.

Rule (the same for rank / world size and for worker id / worker count):

1. An explicit integer in the options wins. What you wrote is what you get, as with
   torch's ``DistributedSampler(num_replicas=..., rank=...)``.
2. ``None`` (the default for rank and world size; worker id / count default to 0 of 1)
   means "discover":
   - rank / world size: an initialised ``torch.distributed`` process group, else the
     ``RANK`` and ``WORLD_SIZE`` environment variables that torchrun sets (``LOCAL_RANK``
     stands in for a missing ``RANK``), else rank 0 of 1;
   - worker id / count: ``torch.utils.data.get_worker_info()`` when this process is a
     torch DataLoader worker, else worker 0 of 1.

torch is never imported here: a process group or a DataLoader worker can only exist if
torch is already in ``sys.modules``, so looking there is exact and costs nothing.

So a job launched by torchrun with default options gives each rank its own shard; to
read everything on every rank, say so: ``shard_rank=0, shard_world_size=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from fastload.plan.options import LoaderConfig


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def _torch_process_group() -> tuple[int, int] | None:
    dist: Any = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return int(dist.get_rank()), int(dist.get_world_size())


def _environment_rank() -> tuple[int, int] | None:
    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    if rank is None:
        rank = _env_int("LOCAL_RANK")
    if world is None and rank is None:
        return None
    if world is None or rank is None:
        raise ValueError(
            f"environment has RANK={os.environ.get('RANK')!r} (LOCAL_RANK="
            f"{os.environ.get('LOCAL_RANK')!r}) but WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: "
            "set both, or pass shard_rank and shard_world_size explicitly"
        )
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"environment RANK={rank} / WORLD_SIZE={world} is not a valid rank "
            "(need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE)"
        )
    return rank, world


def discovered_rank_and_world_size() -> tuple[int, int] | None:
    """(rank, world size) from torch.distributed, else RANK / WORLD_SIZE; None if neither."""
    return _torch_process_group() or _environment_rank()


def _resolve(
    value: int | None,
    count: int | None,
    discover: Callable[[], tuple[int, int] | None],
    knob: str,
    count_knob: str,
) -> tuple[int, int]:
    # fill only the Nones, so an explicit half of the pair still wins
    if value is None or count is None:
        found = discover() or (0, 1)
        value = found[0] if value is None else value
        count = found[1] if count is None else count
    if count < 1 or not 0 <= value < count:
        raise ValueError(f"{knob}={value} is invalid: must be in [0, {count_knob}={count})")
    return value, count


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Fill the ``None``s of (rank, world_size) by discovery and check the pair."""
    return _resolve(
        rank, world_size, discovered_rank_and_world_size, "shard_rank", "shard_world_size"
    )


def rank_and_world_size(config: LoaderConfig) -> tuple[int, int]:
    """This process's (rank, world size) for sharding the dataset; see the module docstring."""
    return resolve_rank(config.shard_rank, config.shard_world_size)


def local_rank() -> int:
    """The rank within this node (``LOCAL_RANK``, as torchrun sets it), for picking a device."""
    return _env_int("LOCAL_RANK") or 0


def _torch_worker() -> tuple[int, int] | None:
    data: Any = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return (int(info.id), int(info.num_workers)) if info is not None else None


def resolve_worker(worker_id: int | None, num_workers: int | None) -> tuple[int, int]:
    """Fill the ``None``s of (worker_id, num_workers) from torch's DataLoader worker info."""
    return _resolve(worker_id, num_workers, _torch_worker, "worker_id", "num_workers_pytorch")


def worker_and_num_workers(config: LoaderConfig) -> tuple[int, int]:
    """This process's (worker id, worker count) inside another loader; see the module docstring."""
    return resolve_worker(config.worker_id, config.num_workers_pytorch)


__all__ = [
    "discovered_rank_and_world_size",
    "local_rank",
    "rank_and_world_size",
    "resolve_rank",
    "resolve_worker",
    "worker_and_num_workers",
]
