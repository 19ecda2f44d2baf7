"""Read-ahead of Parquet column chunks for an open fsspec file that pyarrow reads.

pyarrow reads any Python file through ``PythonFile``, whose reads hold one lock each, so a
file object sees one read at a time however many IO threads pyarrow has: its own S3
filesystem has several ranged GETs in flight, a Python file one. This read-ahead gives the
file that concurrency back. It keeps the bytes of the file's tail that pyarrow read (the
footer) and parses them once; when a read is exactly the column chunks ``j1..j2`` of row
group ``g`` (a reader reading columns, not guessing), it starts background engine reads of
the same chunks in the next ``ROW_GROUPS_AHEAD`` row groups, as far as ``budget`` bytes allow
(in flight and waiting together; all open files of a filesystem share a second, total
budget), and later reads of those ranges take the fetched buffer.

Bytes read ahead and never asked for (a reader that stops after a few row groups, or skips
them by statistics) are bounded by ``budget``; chunks of row groups the reader has passed
are dropped. A background read that failed is dropped too, and the read is done again in the
caller's thread, where its error is raised.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_MAGIC = b"PAR1"
# Row groups behind the latest whole-chunk read whose read-ahead is kept: pyarrow's IO
# threads take the file's lock in no set order, so a reader working on row groups 3 and 4
# at once may ask for 4's chunks before 3's.
_KEEP_BEHIND = 4
# Row groups read ahead of each whole-chunk read: the budget is shared by all the columns
# read, so none takes it all (reading 4 columns of bench_fsspec's file, the first column
# alone filled 128 MiB with 7 row groups and the other 3 read one at a time again).
ROW_GROUPS_AHEAD = 2
_MAX_FOOTER = 16 << 20  # footers kept and parsed at most (tens of thousands of chunks)
_NO_FOOTER: dict[int, tuple[int, int, int]] = {}  # parsed: not a Parquet file (or malformed)
_shared: weakref.WeakSet[SharedReadAhead] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for shared in list(_shared):
        shared._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _chunk_spans(tail: bytes) -> dict[int, tuple[int, int, int]] | None:
    """{chunk start: (row group, column, end)} from a file tail holding the whole footer;
    None when the tail is too short to hold it, ``_NO_FOOTER`` when it is no Parquet footer."""
    if len(tail) < 8 or tail[-4:] != _MAGIC:
        return _NO_FOOTER
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > len(tail):
        return None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        md = pq.read_metadata(pa.BufferReader(tail[-need:]))
    except (ImportError, OSError, ValueError):
        return _NO_FOOTER
    spans: dict[int, tuple[int, int, int]] = {}
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in range(rg.num_columns):
            col = rg.column(j)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None:
                start = min(start, col.dictionary_page_offset)
            spans[int(start)] = (g, j, int(start) + int(col.total_compressed_size))
    return spans


class SharedReadAhead:
    """What the open files of one filesystem share: the chunk layouts of the last
    ``capacity`` Parquet files parsed, by the caller's key (path and size), counts of
    chunks read ahead and taken, and ``budget``: bytes all its files together read ahead
    at most (in flight and held; None: no bound but each file's own). Files are used from
    one thread at a time each, but many files at once, hence the lock."""

    def __init__(self, capacity: int = 64, budget: int | None = None) -> None:
        self.capacity = capacity
        self.budget = budget
        self._items: OrderedDict[Any, dict[int, tuple[int, int, int]]] = OrderedDict()
        self._lock = threading.Lock()
        self.started = 0  # background reads started
        self.taken = 0  # reads served from a background read
        self._held = 0  # bytes of the files' background reads in flight or held
        # bytes given back by files that garbage collection finalised: a finaliser may run
        # on a thread that holds this lock (or a pool's), so it only appends here (atomic)
        # and the next caller under the lock subtracts them
        self._dropped: deque[int] = deque()
        _shared.add(self)

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return self._drain()

    def _drain(self) -> int:  # under the lock
        while self._dropped:
            self._held -= self._dropped.popleft()
        return self._held

    def release_later(self, nbytes: int) -> None:
        """From a finaliser: give ``nbytes`` back without taking any lock."""
        self._dropped.append(nbytes)

    def _after_fork_in_child(self) -> None:
        # a parent's thread may have held the lock at the fork; the files forget the
        # parent's background reads in the child (ColumnChunkReadAhead._after_fork), so
        # the bytes they held are the parent's
        self._lock = threading.Lock()
        self._held = 0
        self._dropped.clear()

    def reserve(self, nbytes: int) -> bool:
        """Count ``nbytes`` more read ahead, when the budget has room for them."""
        with self._lock:
            if self.budget is not None and self._drain() + nbytes > self.budget:
                return False
            self._held += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes

    def get(self, key: Any) -> dict[int, tuple[int, int, int]] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def forget_layouts(self) -> None:
        """Drop every parsed layout (the files may have changed); the budget and what the
        open files hold against it stay."""
        with self._lock:
            self._items.clear()

    def put(self, key: Any, spans: dict[int, tuple[int, int, int]]) -> None:
        with self._lock:
            self._items[key] = spans
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def count(self, started: int = 0, taken: int = 0) -> None:
        with self._lock:
            self.started += started
            self.taken += taken


class ColumnChunkReadAhead:
    """Background reads of the column chunks a Parquet reader will ask for next.

    ``fetch(start, end)``: the file's read (a buffer of those bytes); ``size``: the file's
    size; ``budget``: bytes read ahead at most (in flight and held; ``shared.budget``
    bounds all files of ``shared`` together); ``pool``: gives the threads that run the
    background reads (anything with ``submit``)."""

    def __init__(
        self,
        fetch: Callable[[int, int], Any],
        size: int,
        budget: int,
        pool: Callable[[], Any],
        shared: SharedReadAhead | None = None,
        key: Any = None,
    ) -> None:
        self.fetch = fetch
        self.size = size
        self.budget = int(budget)
        self.pool = pool
        self.tail = b""
        self.tail_start = size
        self.shared = shared if shared is not None else SharedReadAhead(1)
        self.key = key
        # pyarrow reads a file's footer through the first file it opens and its chunks
        # through a second one: the footer parsed by the first serves the second
        self.spans = self.shared.get(key)
        self.ahead: dict[tuple[int, int], tuple[int, Future[Any]]] = {}  # (a, b): group, read
        self._groups: list[dict[int, tuple[int, int]]] | None = None
        self.read: set[tuple[int, int]] = set()  # whole-chunk reads done: never read ahead
        self.held_bytes = 0
        self.pid = os.getpid()  # background reads belong to this process's threads

    # -- what the file calls ----------------------------------------------------------
    def take(self, start: int, end: int) -> Any:
        """The buffer of a background read of exactly [start, end), or None."""
        self._after_fork()
        hit = self.ahead.pop((start, end), None)
        if hit is None:
            return None
        self._release(end - start)
        try:
            view = hit[1].result()
        except Exception:  # noqa: BLE001  # the caller's own read raises it with its context
            return None
        self.shared.count(taken=1)
        return view

    def saw(self, start: int, end: int, view: Any) -> None:
        """The file read [start, end) (``view``: its bytes): keep the footer, start reads
        of what comes next when it was whole column chunks."""
        if self.budget <= 0:
            return
        self._after_fork()
        if self.spans is None:
            self._keep_tail(start, end, view)
            if self.spans is None:
                return
        if not self.spans:
            return
        first = self.spans.get(start)
        if first is None:
            return
        g, j1, stop = first
        j2 = j1
        while stop < end:  # chunks j1..j2 of row group g, back to back, end exactly at end
            nxt = self.spans.get(stop)
            if nxt is None or nxt[0] != g:
                return
            j2, stop = nxt[1], nxt[2]
        if stop != end:
            return
        self.read.add((start, end))
        self._drop_passed(g)
        self._schedule(g, j1, j2)

    def close(self) -> None:
        self._after_fork()
        for _, fut in self.ahead.values():
            fut.cancel()
        self.ahead.clear()
        self._release(self.held_bytes)

    def __del__(self) -> None:
        # pyarrow drops files unclosed: what they held ahead leaves the shared budget. A
        # finaliser takes no lock (garbage collection may run it on a thread holding one):
        # the background reads in flight finish on their own, unused.
        held = getattr(self, "held_bytes", 0)
        if held and getattr(self, "pid", None) == os.getpid():
            self.held_bytes = 0
            self.shared.release_later(held)

    # -- inside ---------------------------------------------------------------------
    def _after_fork(self) -> None:
        """In a forked child the parent's background reads never finish (their threads
        are not in it): forget them, so the child reads those bytes itself."""
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.ahead.clear()
            self.held_bytes = 0

    def _release(self, nbytes: int) -> None:
        self.held_bytes -= nbytes
        self.shared.release(nbytes)

    def _keep_tail(self, start: int, end: int, view: Any) -> None:
        """Keep the file's last bytes (at most _MAX_FOOTER) until they hold the footer."""
        if end == self.size:
            if bytes(view[-4:]) != _MAGIC:  # no Parquet file: nothing to keep
                self.spans = _NO_FOOTER
                return
            keep = bytes(view[-_MAX_FOOTER:])  # a whole-file read copies only its tail
            self.tail, self.tail_start = keep, end - len(keep)
        elif end == self.tail_start and start < end:  # a longer footer, read in front
            if len(view) + len(self.tail) > _MAX_FOOTER:
                self.spans = _NO_FOOTER
                self.tail = b""
                return
            self.tail, self.tail_start = bytes(view) + self.tail, start
        else:
            return
        self.spans = _chunk_spans(self.tail)
        if self.spans is None and len(self.tail) >= _MAX_FOOTER:
            self.spans = _NO_FOOTER  # a footer this large: no read-ahead for this file
        if self.spans is not None:
            self.tail = b""
            self.shared.put(self.key, self.spans)

    def _drop_passed(self, group: int) -> None:
        """Chunks of row groups well before ``group``: the reader went past them."""
        for key in [k for k, (g, _) in self.ahead.items() if g < group - _KEEP_BEHIND]:
            self.ahead.pop(key)[1].cancel()
            self._release(key[1] - key[0])

    def _schedule(self, group: int, j1: int, j2: int) -> None:
        assert self.spans is not None
        by_group = self._group_starts()
        for g in range(group + 1, min(group + 1 + ROW_GROUPS_AHEAD, len(by_group))):
            span = self._span(by_group[g], j1, j2)
            if span is None:
                return  # another layout of columns: stop guessing
            if span in self.ahead or span in self.read:
                continue  # pyarrow's IO threads may have asked for a later one first
            n = span[1] - span[0]
            if self.held_bytes + n > self.budget or not self.shared.reserve(n):
                return
            self.held_bytes += n
            try:
                fut = self.pool().submit(self.fetch, *span)
            except RuntimeError:  # the pool was shut down (the filesystem is going)
                self._release(n)
                return
            self.shared.count(started=1)
            self.ahead[span] = (g, fut)

    def _group_starts(self) -> list[dict[int, tuple[int, int]]]:
        """Per row group: {column: (start, end)} (built once)."""
        cached = self._groups
        if cached is None:
            assert self.spans is not None
            count = 1 + max(g for g, _, _ in self.spans.values())
            cached = [{} for _ in range(count)]
            for start, (g, j, end) in self.spans.items():
                cached[g][j] = (start, end)
            self._groups = cached
        return cached

    @staticmethod
    def _span(columns: dict[int, tuple[int, int]], j1: int, j2: int) -> tuple[int, int] | None:
        """[start, end) of chunks j1..j2 of one row group when they lie back to back."""
        if any(j not in columns for j in range(j1, j2 + 1)):
            return None
        for j in range(j1, j2):
            if columns[j][1] != columns[j + 1][0]:
                return None
        return columns[j1][0], columns[j2][1]


__all__ = ["ColumnChunkReadAhead", "SharedReadAhead"]
