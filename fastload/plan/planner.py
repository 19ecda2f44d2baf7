"""The planner: sample indices -> one range table for the engine.

Samples are packed into the batch's slab in batch order (sample ``k`` at
``offsets[k]``), so a run of samples stored back to back becomes one range
(coalesced). Ranges are cut into parts in one place only, the native readers:
the loader's ReadSettings say how (``reader_mode="range"``: parts of at most
``part_size`` bytes, each one pread / one ranged GET, read in parallel;
``"sequential"``: one request per range, one GET per object for object datasets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastload._native.batch_plan import pack_ranges
from fastload.plan.datasets import Dataset
from fastload.storage.uri import ParsedURI


@dataclass(frozen=True)
class BatchPlan:
    """What to read for one batch and where each sample lands in the slab."""

    indices: np.ndarray  # dataset indices, in batch order
    sources: list[ParsedURI]  # the objects this batch touches
    table: np.ndarray  # int64 rows (src, offset, length, dst) into ``sources``
    offsets: np.ndarray  # slab offset of each sample
    lengths: np.ndarray  # byte length of each sample
    nbytes: int  # slab bytes the batch needs

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
    return BatchPlan(
        indices=idx,
        sources=[sources[i] for i in used.tolist()],
        table=table,
        offsets=offsets,
        lengths=length,
        nbytes=nbytes,
    )


def batch_slices(n_samples: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """(start, stop) positions of each batch in an epoch's index order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stop = n_samples - n_samples % batch_size if drop_last else n_samples
    return [(s, min(s + batch_size, n_samples)) for s in range(0, stop, batch_size)]
