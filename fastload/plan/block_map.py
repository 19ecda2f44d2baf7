"""Blocks: runs of consecutive samples of one source that are read as one ranged request.

Sample ``i`` starts a new block when it lies in another source than sample ``i - 1``, or
its first byte falls in another ``block_size`` cell of the source than the previous
sample's. A block holds whole samples (so it may end up to one sample past its cell), and
its byte extent runs from its first sample's first byte to its last sample's last byte,
with whatever lies between (tar headers, other fields) read along. The block sampler
permutes these blocks and the block reader fetches each with one request, so both
use this one map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastload.plan.datasets import Dataset


@dataclass(frozen=True)
class BlockMap:
    """``bounds[b]:bounds[b + 1]`` are block b's samples; ``src``/``start``/``end`` its
    source index and byte extent ``[start, end)``; ``uris`` the dataset's sources."""

    block_size: int
    bounds: np.ndarray
    src: np.ndarray
    start: np.ndarray
    end: np.ndarray
    uris: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.src)

    @property
    def counts(self) -> np.ndarray:
        """Samples per block."""
        return np.diff(self.bounds)

    @property
    def nbytes(self) -> np.ndarray:
        """Bytes each block's read covers."""
        return self.end - self.start

    def extents_by_uri(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per source URI: the (start, end) arrays of its blocks, sorted by start."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        order = np.lexsort((self.start, self.src))
        src, start, end = self.src[order], self.start[order], self.end[order]
        cuts = np.flatnonzero(np.diff(src)) + 1
        for s, a, b in zip(
            np.split(src, cuts), np.split(start, cuts), np.split(end, cuts), strict=True
        ):
            if len(s):
                out[self.uris[int(s[0])]] = (a, b)
        return out

    @classmethod
    def of(cls, dataset: Dataset, block_size: int) -> BlockMap:
        """The blocks of ``dataset`` for ``block_size``-byte cells."""
        n = len(dataset)
        src, off, length = dataset.sample_ranges(np.arange(n, dtype=np.int64))
        if n == 0:
            empty = np.empty(0, np.int64)
            return cls(block_size, np.zeros(1, np.int64), empty, empty, empty, tuple(dataset.uris))
        cell = off // block_size
        new = np.ones(n, dtype=bool)
        new[1:] = (src[1:] != src[:-1]) | (cell[1:] != cell[:-1]) | (off[1:] < off[:-1])
        first = np.flatnonzero(new)
        return cls(
            block_size=int(block_size),
            bounds=np.append(first, n).astype(np.int64),
            src=src[first].astype(np.int64),
            start=np.minimum.reduceat(off, first).astype(np.int64),
            end=np.maximum.reduceat(off + length, first).astype(np.int64),
            uris=tuple(dataset.uris),
        )
