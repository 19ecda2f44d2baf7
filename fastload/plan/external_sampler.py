"""Orders that come from the caller: a torch-style ``sampler`` or ``batch_sampler``.

torch's DataLoader takes any iterable of indices as ``sampler`` and any iterable of
index lists as ``batch_sampler``. These adapters give the loader the interface of
:class:`fastload.plan.samplers.Sampler` (``indices(epoch)``, ``len``, ``set_epoch``,
``state_dict``) over such an object: each epoch iterates it once (a random sampler gives
a new order each epoch, as in torch) and keeps that epoch's order, so a batch the loader
asks for again within the epoch, or a resume, sees the same order. ``set_epoch`` reaches
the caller's sampler when it has one (torch's ``DistributedSampler``).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import numpy as np

from fastload.checks import check_int

_KEEP_EPOCHS = 2


def _index(v: Any, k: int, what: str) -> int:
    """``v`` as an index: an int, numpy or torch integer (``__index__``); 1.5 would be
    truncated by int(), "3" parsed, True taken as 1: each is refused, naming its position."""
    if not isinstance(v, (bool, np.bool_)):
        try:
            return operator.index(v)
        except TypeError:
            pass
    raise TypeError(f"{what} gave {v!r} at position {k}: an index must be an integer")


def _as_indices(values: Iterable[Any], n: int, what: str) -> np.ndarray:
    try:
        idx = np.fromiter((_index(v, k, what) for k, v in enumerate(values)), dtype=np.int64)
    except OverflowError:  # an index past int64: past any dataset
        raise IndexError(f"{what} gave an index past int64, out of range for {n} samples") from None
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = int(idx[(idx < 0) | (idx >= n)][0])
        raise IndexError(f"{what} gave index {bad}, out of range for {n} samples")
    return idx


class ExternalSampler:
    """The caller's ``sampler``: its indices in its order, one epoch per pass."""

    # fastload knows no order shared by ranks behind the caller's sampler: a loader state
    # records only its batches, resumed on the same ranks and batch size (progress_state)
    has_global_order = False
    num_workers = 1

    def __init__(self, sampler: Iterable[Any], dataset_len: int) -> None:
        if not isinstance(sampler, Iterable):
            raise TypeError(f"sampler must be an iterable of indices, not {type(sampler).__name__}")
        self.sampler = sampler
        self.dataset_len = int(dataset_len)
        self._epoch = 0
        self._orders: dict[int, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:  # the caller's sampler's own attributes
        if name.startswith("_") or name in ("sampler", "dataset_len"):
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def _draw(self) -> np.ndarray:
        return _as_indices(self.sampler, self.dataset_len, "sampler")

    def indices(self, epoch: int | None = None) -> np.ndarray:
        epoch = self._epoch if epoch is None else check_int("epoch", epoch, 0)
        order = self._orders.get(epoch)
        if order is None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            order = self._orders[epoch] = self._draw()
            for old in sorted(self._orders)[:-_KEEP_EPOCHS]:
                del self._orders[old]
        return order

    def __len__(self) -> int:
        try:
            return len(self.sampler)  # type: ignore[arg-type]
        except TypeError:
            return len(self.indices())

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = check_int("epoch", epoch, 0)

    def state_dict(self) -> dict[str, Any]:
        # the order is the caller's: a resume assumes their sampler repeats it
        return {"sampler": type(self.sampler).__name__, "dataset_len": self.dataset_len}


class ExternalBatchSampler(ExternalSampler):
    """The caller's ``batch_sampler``: its batches, of whatever sizes it gives."""

    def __init__(self, batch_sampler: Iterable[Any], dataset_len: int) -> None:
        super().__init__(batch_sampler, dataset_len)
        self._bounds: dict[int, list[tuple[int, int]]] = {}

    def _draw(self) -> np.ndarray:
        batches = [list(b) for b in self.sampler]
        sizes = [len(b) for b in batches]
        if any(n == 0 for n in sizes):
            raise ValueError("batch_sampler gave an empty batch")
        starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64))).tolist()
        self._pending = list(zip(starts[:-1], starts[1:], strict=True))
        return _as_indices((i for b in batches for i in b), self.dataset_len, "batch_sampler")

    def indices(self, epoch: int | None = None) -> np.ndarray:
        epoch = self._epoch if epoch is None else epoch
        fresh = epoch not in self._orders
        order = super().indices(epoch)
        if fresh:
            self._bounds[epoch] = self._pending
            for old in [e for e in self._bounds if e not in self._orders]:
                del self._bounds[old]
        return order

    def batch_slices(self, epoch: int | None = None) -> list[tuple[int, int]]:
        """(start, stop) of each batch of ``epoch`` in its order."""
        epoch = self._epoch if epoch is None else epoch
        self.indices(epoch)
        return self._bounds[epoch]

    def __len__(self) -> int:
        return len(self.indices())


__all__ = ["ExternalBatchSampler", "ExternalSampler"]
