"""The planner: sample indices -> one range table for the engine.

Samples are packed into the batch's slab in batch order (sample ``k`` at
``offsets[k]``), so a run of samples stored back to back becomes one range
(coalesced). ``reader_mode="range"`` then cuts every range into parts of at
most ``part_size`` bytes (each part is one pread / one ranged GET, read in
parallel); ``reader_mode="sequential"`` keeps one request per range (one GET
per object for object datasets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastload.datasets import Dataset
from fastload.engine import MIN_PART_SIZE
from fastload.range_table import LENGTH, OFFSET, coalesce
from fastload.uri import ParsedURI

READER_MODES = ("sequential", "range")


@dataclass(frozen=True)
class BatchPlan:
    """What to read for one batch and where each sample lands in the slab."""

    indices: np.ndarray        # dataset indices, in batch order
    sources: list[ParsedURI]   # the objects this batch touches
    table: np.ndarray          # int64 rows (src, offset, length, dst) into ``sources``
    offsets: np.ndarray        # slab offset of each sample
    lengths: np.ndarray        # byte length of each sample
    nbytes: int                # slab bytes the batch needs
    part_size: int             # engine part size that reads each row in one request

    @property
    def requests(self) -> int:
        return len(self.table)


def split_parts(table: np.ndarray, part_size: int) -> np.ndarray:
    """Cut every row into rows of at most ``part_size`` bytes (vectorised)."""
    lengths = table[:, LENGTH]
    nparts = np.maximum((lengths + part_size - 1) // part_size, 1)
    if (nparts == 1).all():
        return table
    out = np.repeat(table, nparts, axis=0)
    first = np.concatenate(([0], np.cumsum(nparts)[:-1]))
    k = np.arange(len(out)) - np.repeat(first, nparts)  # part number within its row
    shift = k * part_size
    out[:, OFFSET] += shift
    out[:, 3] += shift
    out[:, LENGTH] = np.minimum(np.repeat(lengths, nparts) - shift, part_size)
    return out


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def plan_batch(
    dataset: Dataset,
    indices: np.ndarray,
    *,
    reader_mode: str = "range",
    part_size: int = 8 << 20,
) -> BatchPlan:
    """Plan the reads of ``dataset[indices]`` into one packed slab."""
    if reader_mode not in READER_MODES:
        raise ValueError(f"reader_mode must be one of {READER_MODES}, got {reader_mode!r}")
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be >= {MIN_PART_SIZE}, got {part_size}")
    idx = np.asarray(indices, dtype=np.int64)
    src, off, length = dataset.sample_ranges(idx)
    dst = np.concatenate(([0], np.cumsum(length)))
    offsets, nbytes = dst[:-1], int(dst[-1])
    # Only the objects this batch touches go to the engine, renumbered.
    used, local_src = np.unique(src, return_inverse=True)
    table = np.stack([local_src.astype(np.int64), off, length, offsets], axis=1)
    table = table[length > 0]  # empty objects need no read
    table, _ = coalesce(table)
    if reader_mode == "range":
        table = split_parts(table, part_size)
        engine_part = part_size
    else:
        longest = int(table[:, LENGTH].max()) if len(table) else 0
        engine_part = max(MIN_PART_SIZE, _round_up(longest, MIN_PART_SIZE))
    return BatchPlan(
        indices=idx,
        sources=[dataset.sources[int(i)] for i in used],
        table=np.ascontiguousarray(table, dtype=np.int64),
        offsets=offsets,
        lengths=length,
        nbytes=nbytes,
        part_size=engine_part,
    )


def batch_slices(n_samples: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """(start, stop) positions of each batch in an epoch's index order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stop = n_samples - n_samples % batch_size if drop_last else n_samples
    return [(s, min(s + batch_size, n_samples)) for s in range(0, stop, batch_size)]
