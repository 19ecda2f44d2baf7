"""The planner: sample indices -> one range table for the engine.

Samples are packed into the batch's slab in batch order (sample ``k`` at
``offsets[k]``), so a run of samples stored back to back becomes one range
(coalesced). Ranges are cut into parts in one place only, the native readers:
the loader's ReadSettings say how (``reader_mode="range"``: parts of at most
``part_size`` bytes, each one pread / one ranged GET, read in parallel;
``"sequential"``: one request per range, one GET per object for object datasets).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, overload

import numpy as np

from fastload._native.batch_plan import pack_ranges
from fastload.plan.datasets import Dataset
from fastload.storage.uri import ParsedURI


class BatchPlan:
    """What to read for one batch and where each sample lands in the slab.

    A plain slotted class, not a frozen dataclass: one is made per batch, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) cost ~2 us of a ~30 us
    batch of small records."""

    __slots__ = ("indices", "sources", "table", "offsets", "lengths", "nbytes", "clock")

    def __init__(
        self,
        indices: np.ndarray,  # dataset indices, in batch order
        sources: list[ParsedURI],  # the objects this batch touches
        table: np.ndarray,  # int64 rows (src, offset, length, dst) into ``sources``
        offsets: np.ndarray,  # slab offset of each sample
        lengths: np.ndarray,  # byte length of each sample
        nbytes: int,  # slab bytes the batch needs
    ) -> None:
        self.indices = indices
        self.sources = sources
        self.table = table
        self.offsets = offsets
        self.lengths = lengths
        self.nbytes = nbytes
        # the loop's stage clock of this batch, set by the loader: every step that makes
        # the batch laps it through the plan it is handed (no thread-local per batch)
        self.clock: Any = None

    @property
    def requests(self) -> int:
        return len(self.table)


def plan_batch(dataset: Dataset, indices: np.ndarray) -> BatchPlan:
    """Plan the reads of ``dataset[indices]`` into one packed slab.

    One native pass (fastload._native.batch_plan) packs the samples, renumbers the
    objects the batch touches (only those go to the engine) and coalesces neighbours:
    a batch's plan costs microseconds, not a chain of numpy calls.
    """
    idx = np.asarray(indices, dtype=np.int64)
    src, off, length = dataset.sample_ranges(idx)
    length = np.ascontiguousarray(length, dtype=np.int64)
    offsets, nbytes, used, table = pack_ranges(
        np.ascontiguousarray(src, dtype=np.int64), np.ascontiguousarray(off, dtype=np.int64), length
    )
    sources = dataset.sources
    return BatchPlan(idx, [sources[i] for i in used.tolist()], table, offsets, length, nbytes)


class BatchSlices(Sequence[tuple[int, int]]):
    """(start, stop) positions of each batch in an epoch's index order, computed on demand.

    Constant memory whatever the number of batches: an epoch of 10**7 batches of one
    sample would otherwise be a list of 10**7 tuples (seconds to build, over a GiB)."""

    __slots__ = ("n_samples", "batch_size", "_len")

    def __init__(self, n_samples: int, batch_size: int, drop_last: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        stop = n_samples - n_samples % batch_size if drop_last else n_samples
        self.n_samples = int(stop)
        self.batch_size = int(batch_size)
        self._len = -(-self.n_samples // self.batch_size)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, k: int) -> tuple[int, int]: ...
    @overload
    def __getitem__(self, k: slice) -> list[tuple[int, int]]: ...
    def __getitem__(self, k: int | slice) -> tuple[int, int] | list[tuple[int, int]]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._len))]
        i = operator.index(k)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"batch {k} of {self._len}")
        start = i * self.batch_size
        return start, min(start + self.batch_size, self.n_samples)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(
            a == tuple(b) for a, b in zip(self, other, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BatchSlices({self._len} batches of {self.batch_size} over {self.n_samples})"

    def samples_in(self, batches: np.ndarray) -> int:
        """How many samples the batches marked in the bool mask ``batches`` hold."""
        mask = np.asarray(batches, dtype=bool)[: self._len]
        total = int(np.count_nonzero(mask)) * self.batch_size
        if self._len and len(mask) == self._len and mask[-1]:  # the last batch may be short
            a, b = self[self._len - 1]
            total -= self.batch_size - (b - a)
        return total


def batch_slices(n_samples: int, batch_size: int, drop_last: bool) -> BatchSlices:
    """(start, stop) positions of each batch in an epoch's index order (a lazy sequence)."""
    return BatchSlices(n_samples, batch_size, drop_last)
