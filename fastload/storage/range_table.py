"""Range tables: int64 rows of (src, offset, length, dst), split by a key of their source."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

SRC, OFFSET, LENGTH, DST = range(4)


def split_by_source(
    sources: Sequence[T], table: np.ndarray, key: Callable[[T], Hashable]
) -> Iterator[tuple[Hashable, list[T], np.ndarray]]:
    """Yield ``(key, sources, table)`` per distinct key, source indices renumbered."""
    keys = [key(s) for s in sources]
    distinct = sorted(set(keys), key=str)
    if len(distinct) == 1:
        yield distinct[0], list(sources), table
        return
    for k in distinct:
        idx = [i for i, kk in enumerate(keys) if kk == k]
        remap = np.full(len(sources), -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        sub = np.ascontiguousarray(table[np.isin(table[:, SRC], idx)])
        if len(sub):
            sub[:, SRC] = remap[sub[:, SRC]]
            yield k, [sources[i] for i in idx], sub
