"""The node-local cache: blocks of remote objects kept on local disk for later epochs.

Layout under ``cache_dir``: ``blocks/<xx>/<key>`` (entries), ``locks/<key>`` (one lock file
per entry) and ``tmp/`` (entries being written). An entry is a 4 KiB header (magic, then
JSON: the URI's SHA-256, byte range, and the object's size and version tag) followed by
the block's bytes. Rules that keep it safe to share and to crash:

- Entries appear only complete: written under ``tmp/``, fsynced, renamed into ``blocks/``.
  Nothing under ``tmp/`` is ever read; a later run removes what dead processes left there.
  An entry whose header or length does not check out is treated as absent and replaced.
- Processes (ranks, workers) and threads share the folder: an entry is fetched by whoever
  holds its lock (``flock`` on ``locks/<key>``, one open file description per holder, so
  threads exclude each other too); the others wait for the lock and then find it.
- An entry records the object's (size, tag); one read for another version invalidates it.
- ``cache_limit``: least recently used entries (by modification time, refreshed on every
  hit) are evicted, never one another process holds locked.

Problems of the folder itself (read-only, full, no file locks) raise a ``CacheError``
subclass, or with ``on_error="skip"`` are counted in ``skipped`` and read around.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import threading
import time
import warnings
from typing import Any

import numpy as np

from fastload.errors import (
    CacheError,
    CacheFullError,
    CacheLockError,
    CacheReadOnlyError,
    CancelledReadError,
)
from fastload.storage.pids import pid_alive

HEADER = 4096
MAGIC = b"FLCACHE1"
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_LOCK_POLL_S = 0.005


def entry_bytes(nbytes: int) -> int:
    """What an entry of an ``nbytes`` block takes against ``cache_limit``."""
    return HEADER + nbytes


class NodeCache:
    """A cache folder shared by the processes of one node (see the module notes)."""

    def __init__(
        self, directory: str | os.PathLike[str], limit: int | None = None, on_error: str = "raise"
    ) -> None:
        self.dir = os.path.abspath(os.fspath(directory))
        self.limit = limit
        self.on_error = on_error
        self.counters = dict.fromkeys(
            ("hits", "misses", "bytes", "bytes_read", "evictions", "invalidated", "skipped"), 0
        )
        self.disabled: str | None = None  # why the cache is read around (on_error="skip")
        self._lock = threading.Lock()
        self._estimate = 0
        try:
            self._prepare()
        except CacheError as exc:
            if on_error == "raise":
                raise
            self.disabled = str(exc)
            warnings.warn(
                f"cache_dir: {exc}; reading without the cache (on_error='skip')",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- set-up ----------------------------------------------------------------------
    def _prepare(self) -> None:
        try:
            self._ensure_dirs()
            probe = os.path.join(self.dir, "tmp", f"probe.{os.getpid()}.{threading.get_ident()}")
            fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            if exc.errno in _READ_ONLY:
                raise CacheReadOnlyError(
                    f"{self.dir}: the cache folder cannot be written ({exc.strerror})"
                ) from None
            if exc.errno in _FULL:
                raise CacheFullError(
                    f"{self.dir}: no room for the cache ({exc.strerror})"
                ) from None
            raise CacheError(f"{self.dir}: cannot use the cache folder ({exc})") from None
        fd = os.open(os.path.join(self.dir, "locks", ".probe"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            pass  # another process holds the probe: locks work
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                raise CacheLockError(
                    f"{self.dir}: the file system refuses file locks ({exc.strerror}); a cache "
                    f"shared without them could fetch blocks twice or read evicted ones"
                ) from None
            raise
        finally:
            os.close(fd)
        self._remove_dead_temporaries()
        self._estimate = sum(size for _, size, _ in self._entries())

    def _ensure_dirs(self) -> None:
        for sub in ("blocks", "locks", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)

    def _failure(self, exc: OSError, what: str) -> CacheError:
        """The CacheError of a file operation of the cache that failed (``what`` it was)."""
        if exc.errno in _READ_ONLY:
            return CacheReadOnlyError(f"{self.dir}: {what}: the folder cannot be written ({exc})")
        if exc.errno in _FULL:
            return CacheFullError(f"{self.dir}: {what}: no room ({exc})")
        return CacheError(f"{self.dir}: {what} ({exc})")

    def _open_lock(self, path: str) -> int:
        # the folder may have been deleted under a running epoch (a cleaner, a user): it is
        # made again once, and the entries it held are misses
        for attempt in (0, 1):
            try:
                return os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            except FileNotFoundError as exc:
                if attempt == 1:
                    raise self._failure(exc, "cannot create a lock file") from None
                try:
                    self._ensure_dirs()
                except OSError as again:
                    raise self._failure(again, "cannot make the cache folder again") from None
            except OSError as exc:
                raise self._failure(exc, "cannot create a lock file") from None
        raise AssertionError("unreachable")

    def _remove_dead_temporaries(self) -> None:
        tmp = os.path.join(self.dir, "tmp")
        for name in os.listdir(tmp):
            parts = name.split(".")
            pid = int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None
            if pid is None or not pid_alive(pid):
                try:
                    os.unlink(os.path.join(tmp, name))
                except OSError:
                    pass  # gone already, a folder, another user's: never read, left there

    # -- names -------------------------------------------------------------------------
    @staticmethod
    def key(uri: str, start: int, length: int) -> str:
        return hashlib.sha256(f"{uri}\n{start}\n{length}".encode()).hexdigest()[:40]

    @staticmethod
    def stored_meta(meta: dict[str, Any]) -> dict[str, Any]:
        """What an entry's header records of ``meta``: the URI by its SHA-256, so that a
        long URL still fits the 4 KiB header (a longer one never matched again) and no
        presigned credentials are written to disk. Idempotent."""
        if "uri" not in meta:
            return meta
        out = {k: v for k, v in meta.items() if k != "uri"}
        out["uri_sha256"] = hashlib.sha256(str(meta["uri"]).encode()).hexdigest()
        return out

    def entry_path(self, key: str) -> str:
        return os.path.join(self.dir, "blocks", key[:2], key)

    def _lock_path(self, key: str) -> str:
        return os.path.join(self.dir, "locks", key)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    # -- locks -------------------------------------------------------------------------
    def try_lock(self, key: str) -> int | None:
        """The locked fd of ``key``'s lock file, or None when someone else holds it."""
        path = self._lock_path(key)
        while True:
            fd = self._open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as exc:
                os.close(fd)
                raise self._failure(exc, "cannot lock a cache entry") from None
            try:  # evicted (unlinked) between open and flock: lock the new file instead
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def lock(self, key: str, deadline: float | None, cancelled: Any = None) -> int:
        """Wait for ``key``'s lock (polling, so a cancel or the read's deadline is seen)."""
        while True:
            fd = self.try_lock(key)
            if fd is not None:
                return fd
            if cancelled is not None and cancelled():
                raise CancelledReadError(f"{self.dir}: cancelled while waiting for a cache entry")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.dir}: timed out waiting for another process to write cache entry {key}"
                )
            time.sleep(_LOCK_POLL_S)

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)  # closing the description releases the flock

    # -- entries -----------------------------------------------------------------------
    def lookup(self, key: str, meta: dict[str, Any]) -> int | None:
        """An open fd of a complete entry for exactly ``meta`` (URI, range, version), or None.
        A hit refreshes the entry's place in the LRU order."""
        path = self.entry_path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # absent, or something else in its place (a file, no permission)
            return None
        try:
            head = os.pread(fd, HEADER, 0)
            n = int.from_bytes(head[8:12], "little") if head[:8] == MAGIC else -1
            stored = json.loads(head[12 : 12 + n]) if 0 < n <= HEADER - 12 else None
            want = self.stored_meta(meta)
            if stored == want and os.fstat(fd).st_size == HEADER + int(meta["length"]):
                try:
                    os.utime(path)
                except OSError:
                    pass  # another user's entry: a hit all the same, only its LRU place stays
                return fd
        except (OSError, ValueError):
            pass
        os.close(fd)
        return None

    def read(self, fd: int, offset: int, view: memoryview) -> None:
        """``len(view)`` bytes of the entry at ``fd`` from block offset ``offset``."""
        got = os.preadv(fd, [view], HEADER + offset)
        while got < len(view):  # a short pread: keep going (never expected on local files)
            more = os.preadv(fd, [view[got:]], HEADER + offset + got)
            if more <= 0:
                raise CacheError(f"{self.dir}: a cache entry ended early")
            got += more

    def store(self, key: str, meta: dict[str, Any], data: np.ndarray) -> bool:
        """Write ``data`` as ``key``'s entry (the caller holds its lock). False when it was
        not kept (on_error="skip": too large or the disk is full); raises CacheFullError."""
        need = entry_bytes(len(data))
        if self.limit is not None and need > self.limit:
            return self._refuse(
                f"{self.dir}: a {len(data)}-byte block is larger than cache_limit={self.limit}"
            )
        remade = evicted = False  # each remedy is tried once
        while True:
            try:
                self._write(key, meta, data)
                break
            except FileNotFoundError as exc:  # the folder was deleted under us: make it again
                if remade:
                    return self._fail(self._failure(exc, "cannot write a cache entry"))
                remade = True
                try:
                    self._ensure_dirs()
                except OSError as again:
                    return self._fail(self._failure(again, "cannot make the cache folder again"))
            except OSError as exc:
                if exc.errno not in _FULL:
                    return self._fail(self._failure(exc, "cannot write a cache entry"))
                if evicted or self._evict(max(self._estimate - 2 * need, 0), {key}) == 0:
                    return self._refuse(
                        f"{self.dir}: no room for a {len(data)}-byte cache entry "
                        f"({exc.strerror}), even after evicting"
                    )
                evicted = True
        with self._lock:
            self._estimate += need
        self.trim(keep={key})
        return True

    def trim(self, keep: frozenset[str] | set[str] = frozenset()) -> None:
        """Evict down to 90% of ``cache_limit`` when the folder holds more than the limit."""
        with self._lock:
            over = self.limit is not None and self._estimate > self.limit
        if over:
            assert self.limit is not None
            self._evict(int(self.limit * 0.9), set(keep))

    def _refuse(self, message: str) -> bool:
        return self._fail(CacheFullError(message))

    def _fail(self, exc: CacheError) -> bool:
        """An entry not kept: raised, or with on_error="skip" counted (the read goes on)."""
        if self.on_error == "raise":
            raise exc
        self.count("skipped")
        return False

    def _write(self, key: str, meta: dict[str, Any], data: np.ndarray) -> None:
        tmp = os.path.join(self.dir, "tmp", f"{key}.{os.getpid()}.{threading.get_ident()}")
        blob = json.dumps(self.stored_meta(meta)).encode()
        head = MAGIC + len(blob).to_bytes(4, "little") + blob
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            try:
                view = np.ascontiguousarray(data).data.cast("B")
                os.pwrite(fd, head.ljust(HEADER, b"\0"), 0)
                done = 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], HEADER + done)
                os.fsync(fd)
            finally:
                os.close(fd)
            final = self.entry_path(key)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if os.path.exists(final):  # under the lock, an entry there is a stale version
                self.count("invalidated")
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def remove(self, key: str) -> None:
        """Drop ``key``'s entry (the caller holds its lock)."""
        try:
            size = os.stat(self.entry_path(key)).st_size
            os.unlink(self.entry_path(key))
        except FileNotFoundError:
            return
        with self._lock:
            self._estimate -= size

    # -- eviction ----------------------------------------------------------------------
    def _entries(self) -> list[tuple[float, int, str]]:
        """(last use, bytes, key) of every entry."""
        out: list[tuple[float, int, str]] = []
        root = os.path.join(self.dir, "blocks")
        try:
            subs = list(os.scandir(root))
        except FileNotFoundError:  # the folder was deleted: it holds nothing
            return out
        for sub in subs:
            if not sub.is_dir():
                continue
            try:
                found = list(os.scandir(sub.path))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in found:
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime, st.st_size, e.name))
        return out

    def _evict(self, target: int, keep: set[str]) -> int:
        """Evict least recently used entries until the folder holds at most ``target``
        bytes; returns the bytes freed."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _, size, key in entries:
            if total - freed <= target:
                break
            if key in keep:
                continue
            try:
                fd = self.try_lock(key)
            except CacheError:
                fd = None
            if fd is None:
                continue  # someone is writing or reading it through its lock: leave it
            try:
                try:
                    os.unlink(self.entry_path(key))
                except FileNotFoundError:
                    continue
                try:
                    os.unlink(self._lock_path(key))
                except FileNotFoundError:
                    pass  # the lock file went with a deleted folder: the entry is gone
                freed += size
                self.count("evictions")
            finally:
                self.unlock(fd)
        with self._lock:
            self._estimate = total - freed
        return freed

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.counters,
                "dir": self.dir,
                "limit": self.limit,
                "stored_bytes": self._estimate,
                "disabled": self.disabled,
            }
