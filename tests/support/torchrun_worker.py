"""One rank of the torchrun test (tests/plan/test_torchrun.py starts two of these).

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/support/torchrun_worker.py DATA OUT

Reads the records in DATA three ways and writes what this rank saw to OUT/rank-<r>.json:
- "env": fastload's DataLoader before any process group exists (rank and world size
  from the RANK / WORLD_SIZE that torchrun sets);
- "group": the same after ``init_process_group("gloo")`` (rank from torch.distributed),
  with an all_reduce per batch, which would hang if the ranks had different batch counts
  (the process group's timeout turns a hang into an error);
- "adapter": TorchIterableDataset inside torch's DataLoader.
Each for epochs 0 and 1 (set_epoch).
"""

from __future__ import annotations

import datetime
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from fastload import DataLoader, LoaderOptions, RecordDataset
from fastload.adapters.torch_dataset import TorchIterableDataset

SHAPE = (4, 4, 3)
EPOCHS = (0, 1)
BATCH = 8


def epochs_of(loader, collective: bool = False) -> list[list[int]]:
    out = []
    for epoch in EPOCHS:
        loader.set_epoch(epoch)
        seen: list[int] = []
        for _, y in loader:
            if collective:
                one = torch.ones(1)
                dist.all_reduce(one)  # every rank must reach it as often as the others
                assert one.item() == dist.get_world_size()
            seen.extend(np.asarray(y).tolist())
        out.append(seen)
    return out


def main() -> None:
    data, out = sys.argv[1], sys.argv[2]
    ds = RecordDataset(data, SHAPE, labels=lambda i: i)
    opts = LoaderOptions(batch_size=BATCH, seed=3).distributed_sampling()  # rank: discovered
    result: dict = {"rank_env": int(os.environ["RANK"]), "world_env": int(os.environ["WORLD_SIZE"])}
    with DataLoader(ds, opts) as dl:
        result["env"] = epochs_of(dl)
        result["env_len"] = len(dl)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        result["rank_group"] = dist.get_rank()
        with DataLoader(ds, opts) as dl:
            result["group"] = epochs_of(dl, collective=True)
            result["group_len"] = len(dl)
        adapter = TorchIterableDataset(ds, opts)
        result["adapter"] = epochs_of(_EpochLoader(adapter))
        result["adapter_len"] = len(adapter)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank-{result['rank_group']}.json"), "w") as f:
        json.dump(result, f)


class _EpochLoader:
    """torch's DataLoader over the adapter, with set_epoch passed to the dataset."""

    def __init__(self, adapter: TorchIterableDataset) -> None:
        self.adapter = adapter

    def set_epoch(self, epoch: int) -> None:
        self.adapter.set_epoch(epoch)

    def __iter__(self):
        return iter(torch.utils.data.DataLoader(self.adapter, batch_size=None))


if __name__ == "__main__":
    main()
