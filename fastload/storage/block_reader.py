"""Reads through blocks: each block of a remote object fetched once, with one request.

``BlockReader.read_into`` takes the engine's arguments (sources, a range table, a buffer),
so the loader reads through it exactly as through the engine. Rows of remote objects that
fall inside known blocks (``blocks``: per URI, sorted block extents) are served from whole
blocks: a block not at hand is fetched with ONE ranged GET (every block missing from one
call in one engine call, in parallel) and kept, in memory (least recently used first out,
up to ``memory_bytes``) or in the node-local cache (``fastload.storage.cache``), where other
processes find it too and later epochs read it from disk. Other rows go straight to the
engine.

``plan(keys, uses=...)`` hands over the order in which an epoch will first need its
blocks (and how many bytes the epoch reads from each); two background threads then fetch
them ahead of the readers (up to ``ahead_bytes`` past the latest block a read touched, and
never past ``memory_bytes`` held), so the network works while batches are consumed. A
block whose planned bytes were all served is let go at once: memory holds only blocks
still to be read, so none is fetched twice in one epoch unless the readers alone need more
than ``memory_bytes`` (then the evicted block's second fetch is counted in ``refetches``,
and the eviction in ``evicted_unread``). ``stop_ahead()`` ends an epoch: its threads stop
and its blocks are let go.

A source whose expected version is given is checked once, at its first read: a shard that
vanished or changed since it was indexed raises ``ShardChangedError``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastload.errors import (
    CacheError,
    CancelledReadError,
    ObjectNotFoundError,
    ShardChangedError,
)
from fastload.storage.buffer_pool import BufferPool
from fastload.storage.cache import NodeCache
from fastload.storage.cache_entries import EntryReads
from fastload.storage.engine import RangeEngine, writable_view
from fastload.storage.object_version import Version, object_version
from fastload.storage.read_settings import WHOLE_RANGES, ReadSettings
from fastload.storage.uri import ParsedURI, parse_uri, redact

Key = tuple[str, int]  # (URI, block start)
Pieces = dict[Key, list[tuple[int, int, int]]]  # block -> (offset in block, length, dst)
_WAIT_S = 0.02
_PREFETCH_CALL_BYTES = 32 << 20  # blocks fetched ahead per engine call
_AHEAD_THREADS = 2
_SPARE_BUFFERS = 4
_MIN_BUFFER = 4 << 20


def _buffer_class(nbytes: int) -> int:
    """The size of fetch buffer ``nbytes`` gets: the next power of two (from 4 MiB), so
    that calls of varying sizes find a kept buffer that fits."""
    return max(_MIN_BUFFER, 1 << max(nbytes - 1, 0).bit_length())


class BlockReader:
    """The engine's ``read_into``, through blocks (see the module notes)."""

    def __init__(
        self,
        engine: RangeEngine,
        blocks: dict[str, tuple[np.ndarray, np.ndarray]],
        *,
        memory_bytes: int = 0,
        cache: NodeCache | None = None,
        versions: dict[str, Version] | None = None,
        ahead_bytes: int = 0,
    ) -> None:
        self.engine = engine
        self.blocks = blocks
        self.memory_bytes = memory_bytes
        self.ahead_bytes = ahead_bytes
        self.cache = cache if cache is not None and cache.disabled is None else None
        self._entries = None if self.cache is None else EntryReads(self.cache, engine)
        self._any_cache = cache  # a disabled cache still reports why
        self.expected = dict(versions or {})
        self._checked: dict[str, Version] = {}
        self._lock = threading.Lock()
        self._memory: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._held = 0
        self._peak = 0  # the most block bytes memory held at once
        self._pending: dict[Key, threading.Event] = {}
        # Fetch buffers, kept for reuse: a fresh one costs the kernel zeroing every page
        # (measured: about a quarter of the client's CPU per MB over S3). Enough are kept
        # for the blocks memory holds (a buffer lives until its last block is let go).
        # Bounded by bytes too (what memory holds plus the spares), and a call takes a
        # buffer of its own size class or the next only, so a small fetch never pins a big
        # buffer that memory_bytes would not count.
        spare = _SPARE_BUFFERS * _PREFETCH_CALL_BYTES
        self._pool = BufferPool(
            keep=_SPARE_BUFFERS + memory_bytes // _PREFETCH_CALL_BYTES,
            keep_bytes=memory_bytes + spare,
        )
        self._fetched: set[Key] = set()  # this epoch's fetches (a second one is a refetch)
        # this epoch: bytes served per block, and (once planned) bytes still to serve
        self._served: dict[Key, int] = {}
        self._left: dict[Key, int] | None = None
        self.counters = dict.fromkeys(
            (
                "block_fetches",
                "block_bytes",
                "memory_hits",
                "refetches",
                "direct_rows",
                "prefetched",
                "evicted_unread",
            ),
            0,
        )
        # the prefetcher: the epoch's blocks in order of first use, and how far reads got
        self._cond = threading.Condition()
        self._schedule: dict[Key, int] = {}
        self._progress = -1
        self._generation = 0
        self._cursor = 0
        self._reserved = 0  # bytes the prefetchers are fetching now (memory they will take)
        self._threads: list[threading.Thread] = []

    # -- versions ------------------------------------------------------------------------
    def _version(self, src: ParsedURI) -> Version:
        """The version of ``src`` this reader serves (checked against the index once)."""
        v = self._checked.get(src.uri)
        if v is not None:
            return v
        want = self.expected.get(src.uri)
        try:
            now = object_version(self.engine, src, fresh=want is not None)
        except (FileNotFoundError, ObjectNotFoundError) as exc:
            if want is None:
                raise
            err = ShardChangedError(f"{src.display}: the shard vanished after it was indexed")
            err.uri = src.uri
            raise err from exc
        if want is not None and now != want:
            err = ShardChangedError(
                f"{src.display}: the shard changed after it was indexed (size, version: "
                f"{want[0]}, {want[1]} then; {now[0]}, {now[1]} now); index it again"
            )
            err.uri = src.uri
            raise err
        with self._lock:
            self._checked[src.uri] = now
        return now

    # -- the read ------------------------------------------------------------------------
    def read_into(
        self,
        sources: Sequence[Any],
        table: np.ndarray,
        out: Any,
        *,
        settings: ReadSettings | None = None,
        cancel: Any = None,
    ) -> None:
        settings = settings or self.engine.settings
        srcs = [s if isinstance(s, ParsedURI) else parse_uri(s) for s in sources]
        table = np.ascontiguousarray(table, dtype=np.int64).reshape(-1, 4)
        used = _sources_of(table)
        for i in used:
            if srcs[i].uri in self.expected or self.cache is not None:
                self._version(srcs[i])
        direct, keys, inside, crossing = self._locate(srcs, table, used)
        if len(direct):
            with self._lock:
                self.counters["direct_rows"] += len(direct)
            self.engine.read_into(srcs, direct, out, settings=settings, cancel=cancel)
        if not keys:
            return
        view = writable_view(out, int((table[:, 3] + table[:, 2]).max()), "BlockReader")
        dst = np.frombuffer(view, dtype=np.uint8)
        deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
        if self.cache is not None and self._entries is not None:
            self._touched(keys)
            # the rows of every entry at hand in one local read; the others as pieces
            by_uri = {s.uri: s for s in srcs}
            missed = self._entries.read_rows(
                keys, lambda k: self._meta(by_uri, k), inside, dst, settings, cancel
            )
            if len(missed) < len(keys):
                inside = inside[np.isin(inside[:, 0], missed)]
            pieces = _pieces(keys, inside, crossing)
            if pieces:
                self._cached(srcs, pieces, dst, settings, cancel, deadline)
            return
        pieces = _pieces(keys, inside, crossing)
        # the memory this read may fetch into is reserved before the readers' progress
        # moves, so a prefetcher woken by it never counts on that memory itself
        with self._lock:
            need = sum(self._extent(k) for k in pieces if k not in self._memory)
        with self._cond:
            self._reserved += need
        try:
            self._touched(pieces)
            blocks = self._in_memory(list(pieces), settings, cancel, deadline)
        finally:
            with self._cond:
                self._reserved -= need
        for key, parts in pieces.items():
            block = blocks[key]
            for off, length, d in parts:
                dst[d : d + length] = block[off : off + length]
        del blocks
        self._consumed(pieces)
        self._trim()

    def _locate(
        self, srcs: list[ParsedURI], table: np.ndarray, used: list[int]
    ) -> tuple[np.ndarray, list[Key], np.ndarray, Pieces]:
        """Where ``table``'s rows are: (rows to read directly, the blocks touched, rows
        wholly inside one block as (block index in that list, offset in the block, length,
        dst), and the pieces of rows across block ends). One pass of numpy per source."""
        direct = []
        keys: list[Key] = []
        inside = []
        crossing: Pieces = {}
        for i in used:
            rows = table if len(used) == 1 else table[table[:, 0] == i]
            ext = self.blocks.get(srcs[i].uri)
            if ext is None or srcs[i].is_local:
                direct.append(rows)
                continue
            starts, ends = ext
            k = np.searchsorted(starts, rows[:, 1], side="right") - 1
            kk = np.maximum(k, 0)
            within = (k >= 0) & (rows[:, 1] < ends[kk])
            whole = within & (rows[:, 1] + rows[:, 2] <= ends[kk])
            direct.append(rows[~within])
            uri = srcs[i].uri
            blocks, which = np.unique(k[whole], return_inverse=True)
            w = rows[whole]
            inside.append(
                np.column_stack(
                    (which + len(keys), w[:, 1] - starts[k[whole]], w[:, 2], w[:, 3])
                ).astype(np.int64)
            )
            keys.extend((uri, int(starts[b])) for b in blocks.tolist())
            for _, off, length, d in rows[within & ~whole].tolist():  # rows across block ends
                while length > 0:
                    b = int(np.searchsorted(starts, off, side="right")) - 1
                    if b < 0 or off >= ends[b]:
                        direct.append(np.array([[i, off, length, d]], dtype=np.int64))
                        break
                    n = min(length, int(ends[b]) - off)
                    crossing.setdefault((uri, int(starts[b])), []).append(
                        (off - int(starts[b]), n, d)
                    )
                    off, length, d = off + n, length - n, d + n
        flat = np.concatenate(direct) if direct else np.empty((0, 4), np.int64)
        rows_in = np.concatenate(inside) if inside else np.empty((0, 4), np.int64)
        seen = set(keys)
        keys.extend(k for k in crossing if k not in seen)
        return flat, keys, rows_in, crossing

    def _extent(self, key: Key) -> int:
        starts, ends = self.blocks[key[0]]
        k = int(np.searchsorted(starts, key[1]))
        return int(ends[k] - starts[k])

    def _fetch(self, keys: list[Key], settings: ReadSettings, cancel: Any) -> dict[Key, np.ndarray]:
        """Blocks ``keys`` from the remote store: one request each, all in one engine call."""
        uris = sorted({u for u, _ in keys})
        index = {u: n for n, u in enumerate(uris)}
        lengths = np.array([self._extent(k) for k in keys], dtype=np.int64)
        dst = np.concatenate(([0], np.cumsum(lengths)))
        table = np.array(
            [(index[u], s, n, d) for (u, s), n, d in zip(keys, lengths, dst[:-1], strict=True)],
            dtype=np.int64,
        ).reshape(-1, 4)
        # a pooled buffer: reused once every block viewing it was dropped (no page faults)
        size = _buffer_class(int(dst[-1]))
        raw: Any = self._pool.acquire(size, at_most=2 * size)
        try:
            buf = np.frombuffer(raw, dtype=np.uint8, count=int(dst[-1]))
            one_request = settings.replace(part_size=WHOLE_RANGES)  # never cut a block in parts
            self.engine.read_into(
                [parse_uri(u) for u in uris], table, buf, settings=one_request, cancel=cancel
            )
        finally:
            self._pool.release(raw)
        with self._lock:
            self.counters["block_fetches"] += len(keys)
            self.counters["block_bytes"] += int(dst[-1])
            self.counters["refetches"] += sum(1 for k in keys if k in self._fetched)
            self._fetched.update(keys)
        return {k: buf[dst[i] : dst[i + 1]] for i, k in enumerate(keys)}

    # -- blocks in memory --------------------------------------------------------------
    def _in_memory(
        self,
        keys: list[Key],
        settings: ReadSettings,
        cancel: Any,
        deadline: float | None,
        ahead: bool = False,
    ) -> dict[Key, np.ndarray]:
        """Blocks ``keys``: kept ones, ones another thread is fetching (waited for), and
        the rest fetched now in one call. ``ahead``: for the prefetcher, which only fetches
        what nobody fetched this epoch yet (and returns nothing)."""
        mine, waits, have = [], [], {}
        with self._lock:
            for key in keys:
                if ahead:
                    if key not in self._fetched and key not in self._pending:
                        self._pending[key] = threading.Event()
                        mine.append(key)
                elif key in self._memory:
                    self._memory.move_to_end(key)
                    have[key] = self._memory[key]
                    self.counters["memory_hits"] += 1
                elif key in self._pending:
                    waits.append((key, self._pending[key]))
                else:
                    self._pending[key] = threading.Event()
                    mine.append(key)
        try:
            if mine:
                got = self._fetch(mine, settings, cancel)
                have.update(got)
                self._keep(got)
        finally:
            with self._lock:
                for key in mine:
                    self._pending.pop(key).set()
        for key, event in waits:
            while not event.wait(_WAIT_S):
                _check_wait(cancel, deadline, key)
            with self._lock:
                block = self._memory.get(key)
            have[key] = block if block is not None else self._fetch([key], settings, cancel)[key]
        return have

    def _keep(self, got: dict[Key, np.ndarray]) -> None:
        with self._lock:
            left = self._left
            for key, block in got.items():
                if left is not None and left.get(key, 1) <= 0:
                    continue  # read beyond the plan: served, not kept
                self._memory[key] = block
                self._held += len(block)
            self._peak = max(self._peak, self._held)

    def _trim(self) -> None:
        """Least recently used blocks out, down to ``memory_bytes`` (called once the blocks
        a read needed were served, so only blocks still to be read count as evicted)."""
        with self._lock:
            left = self._left
            while self._held > self.memory_bytes and self._memory:
                key, old = self._memory.popitem(last=False)
                self._held -= len(old)
                if left is not None and left.get(key, 0) > 0:
                    self.counters["evicted_unread"] += 1  # the readers alone exceed memory

    def _consumed(self, pieces: Pieces) -> None:
        """Count the bytes just served; let go of blocks the epoch will not read again."""
        freed = False
        with self._lock:
            left = self._left
            for key, parts in pieces.items():
                n = sum(length for _, length, _ in parts)
                self._served[key] = self._served.get(key, 0) + n
                if left is not None and key in left:
                    left[key] -= n
                    if left[key] <= 0:
                        block = self._memory.pop(key, None)
                        if block is not None:
                            self._held -= len(block)
                            freed = True
        if freed and self._threads:
            with self._cond:  # room in memory: a prefetcher waiting for it goes on
                self._cond.notify_all()

    # -- blocks in the node-local cache --------------------------------------------------
    def _meta(self, by_uri: dict[str, ParsedURI], key: Key) -> dict[str, Any]:
        size, tag = self._version(by_uri[key[0]])
        return {
            "uri": key[0],
            "start": key[1],
            "length": self._extent(key),
            "size": size,
            "tag": tag,
        }

    def _cached(
        self,
        srcs: list[ParsedURI],
        pieces: Pieces,
        dst: np.ndarray | None,
        settings: ReadSettings,
        cancel: Any,
        deadline: float | None,
    ) -> None:
        """Serve ``pieces`` from the cache (``dst`` None: only make sure the blocks are
        there). Blocks nobody else is fetching are locked and fetched in one call; the
        others are waited for one by one, holding no lock meanwhile (no lock-order
        deadlock between processes)."""
        try:
            self._through_cache(srcs, pieces, dst, settings, cancel, deadline)
        except CacheError:
            cache = self.cache
            if cache is None or cache.on_error == "raise":
                raise
            # on_error="skip": the folder failed under a running epoch (deleted and not made
            # again, a file in the way, locks gone): these blocks are read around it, counted
            cache.count("skipped", len(pieces))
            if dst is None:
                return
            got = self._fetch(list(pieces), settings, cancel)
            for key, parts in pieces.items():
                for off, length, d in parts:
                    dst[d : d + length] = got[key][off : off + length]

    def _through_cache(
        self,
        srcs: list[ParsedURI],
        pieces: Pieces,
        dst: np.ndarray | None,
        settings: ReadSettings,
        cancel: Any,
        deadline: float | None,
    ) -> None:
        cache = self.cache
        assert cache is not None
        by_uri = {s.uri: s for s in srcs}
        metas = {key: self._meta(by_uri, key) for key in pieces}
        names = {key: cache.key(key[0], key[1], metas[key]["length"]) for key in pieces}
        todo = [k for k in pieces if not self._from_entry(names[k], metas[k], pieces[k], dst)]
        if not todo:
            return
        held: dict[Key, int] = {}
        waits = []
        try:
            for key in todo:
                fd = cache.try_lock(names[key])
                if fd is None:
                    waits.append(key)
                elif self._from_entry(names[key], metas[key], pieces[key], dst):
                    cache.unlock(fd)  # written while we looked
                else:
                    held[key] = fd
            if held:
                self._fill(held, names, metas, pieces, dst, settings, cancel)
        finally:
            for fd in held.values():
                cache.unlock(fd)
        for key in waits:
            fd = cache.lock(
                names[key], deadline, None if cancel is None else lambda: cancel.cancelled
            )
            one = {key: fd}
            try:
                if not self._from_entry(names[key], metas[key], pieces[key], dst):
                    self._fill(one, names, metas, pieces, dst, settings, cancel)
            finally:
                for left in one.values():
                    cache.unlock(left)

    def _from_entry(
        self,
        name: str,
        meta: dict[str, Any],
        parts: list[tuple[int, int, int]],
        dst: np.ndarray | None,
    ) -> bool:
        cache = self.cache
        assert cache is not None
        fd = cache.lookup(name, meta)
        if fd is None:
            return False
        try:
            if dst is not None:
                for off, length, d in parts:
                    cache.read(fd, off, dst[d : d + length].data)
        finally:
            cache.unlock(fd)
        if dst is not None:
            cache.count("hits")
            cache.count("bytes_read", sum(n for _, n, _ in parts))
        return True

    def _fill(
        self,
        held: dict[Key, int],
        names: dict[Key, str],
        metas: dict[Key, dict[str, Any]],
        pieces: Pieces,
        dst: np.ndarray | None,
        settings: ReadSettings,
        cancel: Any,
    ) -> None:
        """Fetch the blocks of ``held`` (key -> its lock), store each and release its lock
        (so the limit can be kept while the others are stored), serve their pieces."""
        cache = self.cache
        assert cache is not None
        got = self._fetch(list(held), settings, cancel)
        for key in list(held):
            cache.count("misses")
            try:
                if cache.store(names[key], metas[key], got[key]):
                    cache.count("bytes", len(got[key]))
            finally:
                cache.unlock(held.pop(key))
            if dst is not None:
                block = got[key]
                for off, length, d in pieces[key]:
                    dst[d : d + length] = block[off : off + length]
        cache.trim()

    # -- reading ahead -------------------------------------------------------------------
    def plan(
        self,
        keys: list[Key],
        settings: ReadSettings,
        cancel: Any,
        uses: Sequence[int] | None = None,
    ) -> None:
        """The blocks an epoch will need, in order of first use, and (``uses``) how many
        bytes it reads from each: fetch them ahead of the readers from now on (a previous
        plan's threads stop). With ``uses``, a block is let go once they were all served.
        Reads the epoch made before its plan arrived count: their blocks are kept, and the
        prefetcher starts past them."""
        self._stop_threads()
        with self._lock:
            touched = set(self._served) | self._fetched | set(self._pending)
            if uses is None:
                self._left = None
            else:
                self._left = {
                    k: int(n) - self._served.get(k, 0) for k, n in zip(keys, uses, strict=True)
                }
                for k, n in self._left.items():
                    if n <= 0 and k in self._memory:
                        self._held -= len(self._memory.pop(k))
        if not keys or self.ahead_bytes <= 0:
            return
        sizes = np.array([self._extent(k) for k in keys], dtype=np.int64)
        with self._cond:
            self._generation += 1
            self._schedule = {k: i for i, k in enumerate(keys)}
            self._progress = max((i for i, k in enumerate(keys) if k in touched), default=-1)
            self._cursor = 0
            gen = self._generation
        prefix = np.concatenate(([0], np.cumsum(sizes)))
        # two fetchers: one call's slowest block does not leave the network idle
        self._threads = [
            threading.Thread(
                target=self._ahead,
                args=(keys, prefix, settings, cancel, gen),
                name=f"fastload-blocks-ahead-{n}",
                daemon=True,
            )
            for n in range(_AHEAD_THREADS)
        ]
        for t in self._threads:
            t.start()

    def _touched(self, keys: Iterable[Key]) -> None:
        if not self._schedule:
            return
        pos = max((self._schedule.get(k, -1) for k in keys), default=-1)
        with self._cond:
            if pos > self._progress:
                self._progress = pos
                self._cond.notify_all()

    def _ahead(
        self, keys: list[Key], prefix: np.ndarray, settings: ReadSettings, cancel: Any, gen: int
    ) -> None:
        # in memory (no cache), what is fetched ahead waits for room: blocks still to be read
        # are never evicted to make it
        bounded = self.cache is None
        while True:
            with self._cond:
                while gen == self._generation:
                    # blocks the readers already reached are theirs (fetched, or being
                    # fetched, on demand): fetching them again would only repeat the GET
                    i = self._cursor = max(self._cursor, self._progress + 1)
                    if i >= len(keys):
                        return
                    done = self._progress + 1
                    room = self.ahead_bytes - (prefix[i] - prefix[min(done, i)])
                    if bounded:
                        used = self._held + self._reserved
                        free = self.memory_bytes - used
                        if used > 0 and free < prefix[i + 1] - prefix[i]:
                            room = 0
                        room = min(room, max(free, prefix[i + 1] - prefix[i]))
                    if room > 0:
                        break
                    self._cond.wait(0.1)
                if gen != self._generation:
                    return
                # one call for as many blocks as the room ahead allows (at least one)
                budget = min(room, _PREFETCH_CALL_BYTES)
                j = i + 1
                while j < len(keys) and prefix[j + 1] - prefix[i] <= budget:
                    j += 1
                self._cursor = j
                taken = int(prefix[j] - prefix[i])
                self._reserved += taken
            chunk = keys[i:j]
            try:
                if self.cache is not None:
                    srcs = [parse_uri(u) for u in sorted({u for u, _ in chunk})]
                    self._cached(srcs, {k: [] for k in chunk}, None, settings, cancel, None)
                else:
                    self._in_memory(chunk, settings, cancel, None, ahead=True)
                    self._trim()
            except Exception:
                return  # the readers meet the same error themselves, with their context
            finally:
                with self._cond:
                    self._reserved -= taken
            with self._lock:
                self.counters["prefetched"] += len(chunk)

    def _stop_threads(self) -> None:
        with self._cond:
            self._generation += 1
            self._schedule = {}
            self._cond.notify_all()
        threads, self._threads = self._threads, []
        for t in threads:
            if t is not threading.current_thread():
                t.join(10.0)

    def stop_ahead(self) -> None:
        """An epoch ended: its prefetchers stop and its blocks are let go (the next epoch
        needs other ones first)."""
        self._stop_threads()
        if self._entries is not None:
            self._entries.forget()
        with self._lock:
            self._memory.clear()
            self._held = 0
            self._fetched.clear()
            self._served.clear()
            self._left = None

    # -- reporting -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counters)
            out["memory_held"] = self._held
            out["memory_peak"] = self._peak
        out["buffer_allocations"] = self._pool.allocations  # fetch buffers made (page faults)
        c = self._any_cache
        out["cache"] = None if c is None else c.stats()
        return out

    def close(self) -> None:
        self.stop_ahead()
        self._pool.close()


def _sources_of(table: np.ndarray) -> list[int]:
    """The sources ``table``'s rows read, ascending (one source: no sort)."""
    if not len(table):
        return []
    col = table[:, 0]
    lo, hi = int(col.min()), int(col.max())
    return [lo] if lo == hi else np.unique(col).tolist()


def _pieces(keys: list[Key], inside: np.ndarray, crossing: Pieces) -> Pieces:
    """Block -> its (offset, length, dst) parts, from ``_locate``'s rows and pieces."""
    pieces: Pieces = {}
    for b, off, length, d in inside.tolist():
        pieces.setdefault(keys[b], []).append((off, length, d))
    for key, parts in crossing.items():
        pieces.setdefault(key, []).extend(parts)
    return pieces


def _check_wait(cancel: Any, deadline: float | None, key: Key) -> None:
    if cancel is not None and cancel.cancelled:
        raise CancelledReadError(
            f"{redact(key[0])}: cancelled while another reader fetched a block"
        )
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"{redact(key[0])}: timed out waiting for block at byte {key[1]}")
