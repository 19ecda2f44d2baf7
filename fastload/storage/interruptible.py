"""Ctrl-C during a long native read of local files.

The file reader runs with the GIL released, so a KeyboardInterrupt waits until the
call returns. On the main thread (the only one that receives signals), a big read is
cut into calls of at most ``SLICE_BYTES``: between two of them Python runs, raises the
KeyboardInterrupt, and the rest is never started. Small reads, and reads on other
threads (the loader's readers), stay one call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from fastload.storage.range_table import DST, LENGTH, OFFSET

# 64 MiB: ~10 ms from the page cache, ~0.6 s from a 100 MB/s disk; each slice still
# keeps several parts of the default 8 MiB in flight.
SLICE_BYTES = 64 << 20


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def one_slice(table: np.ndarray, limit: int | None = None) -> bool:
    """Whether ``table`` is read in one call (small, or not on the main thread)."""
    limit = limit or SLICE_BYTES
    if len(table) == 1 and table[0, LENGTH] <= limit:  # one small range: the most common
        return True
    # reader threads (the loader's) next: they never pay for the sum below
    return not on_main_thread() or len(table) == 0 or int(table[:, LENGTH].sum()) <= limit


def interruptible_slices(table: np.ndarray, limit: int | None = None) -> Iterator[np.ndarray]:
    """``table`` (rows src, offset, length, dst) as consecutive tables of at most ``limit``
    (default ``SLICE_BYTES``) bytes each, a longer row cut into pieces; the whole table
    when it is small or when not on the main thread."""
    limit = limit or SLICE_BYTES
    if one_slice(table, limit):
        yield table
        return
    lengths = table[:, LENGTH]
    counts = (lengths + limit - 1) // limit  # pieces per row
    rows = np.repeat(np.arange(len(table)), counts)
    starts = (np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)) * limit
    cut = table[rows]
    cut[:, OFFSET] += starts
    cut[:, DST] += starts
    cut[:, LENGTH] = np.minimum(limit, lengths[rows] - starts)
    ends = np.cumsum(cut[:, LENGTH])
    first = 0
    while first < len(cut):
        # the rows whose bytes fit in this slice (at least one)
        base = ends[first - 1] if first else 0
        last = max(int(np.searchsorted(ends, base + limit, side="right")), first + 1)
        yield np.ascontiguousarray(cut[first:last])
        first = last
