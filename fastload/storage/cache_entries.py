"""Rows of many node-cache entries read in one local engine call.

Reading a batch from the cache one entry and one row at a time costs a lookup per block
(open, read and parse the header, refresh the LRU time, close) and a Python ``preadv`` per
row: ~2.5 ms a batch of 256 records of 12 KiB, 4x a read of the same rows from a local
file. ``EntryReads`` checks an entry once (``NodeCache.lookup``: complete, written for
exactly this URI, range and version), remembers the identity of the file it checked
(device, inode, size, mtime: an entry is never rewritten in place, a new one is a new
file renamed over it), and then reads the rows of all entries of a call through the
engine's local reader (its threads and cached descriptors), in one native call. The
paths' identities are compared again after the read: an entry replaced meanwhile (another
process re-fetched a changed object) is read again the slow way, on the descriptor of a
fresh lookup. What was checked is forgotten at each epoch's end (``forget``), so each
epoch refreshes an entry's LRU time once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from fastload.errors import ShortReadError
from fastload.storage.cache import HEADER, NodeCache
from fastload.storage.read_settings import ReadSettings
from fastload.storage.uri import ParsedURI, parse_uri

Key = tuple[str, int]  # (URI, block start)
Identity = tuple[int, int, int, int]


def _identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _identity_of(path: str) -> Identity | None:
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


class EntryReads:
    """Batched reads of node-cache entries (see the module notes)."""

    def __init__(self, cache: NodeCache, engine: Any) -> None:
        self.cache = cache
        self.engine = engine
        self._lock = threading.Lock()
        self._checked: dict[Key, tuple[Identity, ParsedURI]] = {}  # block -> its entry

    def forget(self) -> None:
        """An epoch ended: entries are checked (and their LRU time refreshed) afresh."""
        with self._lock:
            self._checked.clear()

    def _checked_uri(self, key: Key, meta_of: Callable[[Key], dict[str, Any]]) -> ParsedURI | None:
        """Block ``key``'s entry as a URI once it is known good, or None (a miss)."""
        with self._lock:
            known = self._checked.get(key)
        if known is not None and _identity_of(known[1].path) == known[0]:
            return known[1]
        meta = meta_of(key)
        name = self.cache.key(key[0], key[1], meta["length"])
        fd = self.cache.lookup(name, meta)
        if fd is None:
            return None
        try:
            ident = _identity(os.fstat(fd))  # after lookup's LRU refresh
        finally:
            self.cache.unlock(fd)
        uri = parse_uri(self.cache.entry_path(name))
        with self._lock:
            self._checked[key] = (ident, uri)
        return uri

    def read_rows(
        self,
        keys: list[Key],
        meta_of: Callable[[Key], dict[str, Any]],
        rows: np.ndarray,
        dst: np.ndarray,
        settings: ReadSettings,
        cancel: Any,
    ) -> list[int]:
        """Read ``rows`` (block index into ``keys``, offset in the block, length, dst) from
        the blocks' entries into ``dst``; returns the indices of ``keys`` not served here
        (no good entry, or replaced during the read: the caller takes their rows the slow
        way). ``meta_of(key)``: what the entry must have been written for."""
        uris = [self._checked_uri(k, meta_of) for k in keys]
        missed = [b for b, u in enumerate(uris) if u is None]
        if not len(rows) or len(missed) == len(keys):
            return missed
        src = np.full(len(keys), -1, dtype=np.int64)  # block index -> source of the read
        good = [b for b, u in enumerate(uris) if u is not None]
        src[good] = np.arange(len(good))
        table = rows[src[rows[:, 0]] >= 0].copy()
        table[:, 0] = src[table[:, 0]]
        table[:, 1] += HEADER
        read_uris = [u for u in uris if u is not None]
        try:
            self.engine.read_into(read_uris, table, dst, settings=settings, cancel=cancel)
        except (FileNotFoundError, ShortReadError):
            # an entry evicted under the read (cancels and timeouts go up as they are):
            # each is looked up again the slow way, which names what is wrong
            return sorted(missed + good)
        with self._lock:
            known = [self._checked.get(keys[b]) for b in good]
        replaced = [
            b
            for b, u, k in zip(good, read_uris, known, strict=True)
            if k is None or _identity_of(u.path) != k[0]  # what was read may be another's
        ]
        served = np.isin(table[:, 0], src[replaced], invert=True)
        self.cache.count("hits", len(good) - len(replaced))
        self.cache.count("bytes_read", int(table[served, 2].sum()))
        return sorted(missed + replaced)
