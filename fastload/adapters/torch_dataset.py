"""fastload batches inside ``torch.utils.data.DataLoader``: :class:`TorchIterableDataset`.

Each torch worker process and each rank reads its own share through fastload's
engine and collate kernel; inside a worker, batches go to the main process through
the shared-memory slots of :mod:`fastload.adapters.torch_slots`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.utils.data

from fastload.adapters.torch_slots import worker_sender
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import Dataset
from fastload.plan.distributed import resolve_rank, resolve_worker
from fastload.plan.options import LoaderOptions
from fastload.plan.planner import batch_slices
from fastload.plan.samplers import make_sampler


class TorchIterableDataset(torch.utils.data.IterableDataset):
    """fastload batches inside ``torch.utils.data.DataLoader``.

    Each torch worker process (``get_worker_info``) and each rank reads its
    own share through fastload's engine and collate kernel: whole batches,
    worker ``w`` taking batches ``w, w + num_workers, ...`` of the rank's
    order, so torch's round-robin over workers yields exactly that order.
    Use it with ``batch_size=None`` (batches are already made)::

        ds = TorchIterableDataset(RecordDataset(...), batch_size=256, shuffle=True)
        for x, y in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4): ...

    ``rank`` / ``world_size``: None takes the options' ``shard_rank`` /
    ``shard_world_size`` when they are not the default 0 of 1, else discovers
    them (torch.distributed, else RANK / WORLD_SIZE). The epoch is what :meth:`set_epoch` last set, as with
    ``DistributedSampler``; it lives in shared memory, so torch's
    ``persistent_workers`` see it too.
    ``dtype`` / ``mean`` / ``std`` / ``scale`` as for fastload's DataLoader;
    other keyword arguments are LoaderOptions knobs (``pin_memory`` acts when
    iterated in the main process; in torch workers pin with torch's own
    ``pin_memory=True``).
    """

    def __init__(
        self,
        dataset: Dataset,
        options: LoaderOptions | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        dtype: Any = None,
        mean: Any = None,
        std: Any = None,
        scale: float | None = None,
        **knobs: Any,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, Dataset):
            raise TypeError(
                f"TorchIterableDataset needs a fastload Dataset, got {type(dataset).__name__}"
            )
        options = options if options is not None else LoaderOptions()
        options = options.replace(**knobs) if knobs else options
        options.validate_for(len(dataset))
        self.dataset = dataset
        self.options = options
        self.rank, self.world_size = rank, world_size
        self._rank()  # a bad explicit pair fails here, not in a worker
        self.output_args = {"dtype": dtype, "mean": mean, "std": std, "scale": scale}
        # Shared with torch's workers, persistent ones included (their dataset copy is never re-sent).
        self._epoch = multiprocessing.RawValue("q", 0)
        self._loader: DataLoader | None = None
        self._loader_key: tuple[int, ...] | None = None

    def _rank(self) -> tuple[int, int]:
        """(rank, world size): ``rank`` / ``world_size`` when given, else a rank the options set
        (anything but the default 0 of 1), else discovered (None in the options discovers too)."""
        rank, world = self.rank, self.world_size
        cfg = self.options.config
        if rank is None and world is None and (cfg.shard_rank, cfg.shard_world_size) != (0, 1):
            rank, world = cfg.shard_rank, cfg.shard_world_size
        return resolve_rank(rank, world)

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch``'s order next (call it before each epoch when shuffling)."""
        self._epoch.value = int(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration reads."""
        return int(self._epoch.value)

    def _config_here(self) -> LoaderOptions:
        """The options for this process: its rank's share, its torch worker's part of it."""
        rank, world = self._rank()
        worker, workers = resolve_worker(None, None)
        opts = self.options.replace(
            shard_rank=rank, shard_world_size=world, worker_id=worker, num_workers_pytorch=workers
        )
        if torch.utils.data.get_worker_info() is not None:
            # A worker copies batches into shared slots: pinning there buys nothing, and a
            # forked child must not call CUDA. torch's pin_memory=True pins in the main process.
            opts = opts.replace(pin_memory=False, non_blocking=False)
        return opts

    def loader(self) -> DataLoader:
        """This process's fastload DataLoader (made once per process, worker and rank)."""
        opts = self._config_here()
        cfg = opts.config
        key = (
            os.getpid(),
            cfg.shard_rank,
            cfg.shard_world_size,
            cfg.worker_id,
            cfg.num_workers_pytorch,
        )
        if self._loader is None or self._loader_key != key:
            # A forked worker inherits the parent's loader object: never reuse it there.
            self._loader = DataLoader(self.dataset, opts, consumer="torch", **self.output_args)
            self._loader_key = key  # type: ignore[assignment]
        return self._loader

    def __iter__(self) -> Iterator[Any]:
        _refuse_auto_batching(sys._getframe(1))
        loader = self.loader()
        loader.set_epoch(self.epoch)
        if torch.utils.data.get_worker_info() is None:
            return iter(loader)
        return worker_sender().send_all(iter(loader))

    def __len__(self) -> int:
        """Batches per epoch for this rank (all torch workers together)."""
        rank, world = self._rank()
        cfg = self.options.config.replace(
            shard_rank=rank, shard_world_size=world, worker_id=0, num_workers_pytorch=1
        )
        return len(
            batch_slices(
                make_sampler(cfg, len(self.dataset), self.dataset).rank_len,
                cfg.batch_size,
                cfg.drop_last,
            )
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loader"] = state["_loader_key"] = None  # threads and buffers stay in their process
        if multiprocessing.context.get_spawning_popen() is None:
            state["_epoch"] = (
                self.epoch
            )  # plain pickling, not to a starting worker: a value, not the share
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue("q", state["_epoch"])
        self.__dict__.update(state)


def _refuse_auto_batching(caller: Any) -> None:
    """ValueError when torch's DataLoader batches what this dataset yields: its batches are
    whole already, so torch's default ``batch_size=1`` (or any other) silently stacks them
    into ``(batch_size, *batch_shape)``. torch's fetcher of an iterable dataset calls
    ``iter(dataset)`` from its ``__init__`` and knows whether it batches; a caller that is no
    such fetcher (a plain ``iter(ds)``, another torch version) is not checked."""
    from torch.utils.data._utils import fetch

    fetcher = caller.f_locals.get("self") if caller is not None else None
    if isinstance(fetcher, fetch._IterableDatasetFetcher) and fetcher.auto_collation:
        raise ValueError(
            "TorchIterableDataset yields whole batches (its batch_size): pass batch_size=None "
            "to torch.utils.data.DataLoader (its default batch_size=1, or any batch_size or "
            "batch_sampler, would stack them into batches of batches)"
        )
