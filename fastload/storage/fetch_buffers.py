"""Destination buffers of big reads, kept and reused instead of allocated fresh per read.

A fresh buffer of 2 MiB or more is a new mapping of huge pages that the kernel zeroes and
faults in; freed, it goes back to the kernel. In a virtual machine whose balloon reports
free pages to the host (firecracker, KVM with free page reporting), the host takes such
freed 2 MiB blocks back within seconds, and faulting them in again costs far more than
zeroing: measured here, 578 MB of fresh buffers took 0.03 s when the same pages had just
been freed and 0.3-1.4 s of system time when the host had taken them back in between
(a pause of 0.5-3 s, or another client's read). Buffers kept by the process stay backed.

A buffer is reused only when nothing can see it any more: no buffer-protocol view of it
is alive (a bytes-like result a caller still holds is never overwritten). Idle buffers are
bounded twice: by ``max_idle_bytes`` (beyond it the oldest are freed at once) and by time
(a buffer idle for ``idle_seconds`` is freed by a timer thread that lives only while the
pool holds buffers).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any

from fastload._native.buffer import AlignedBuffer
from fastload.checks import check_int, check_number

HUGE_PAGE = 2 << 20  # buffers are whole huge pages: the rounding costs nothing extra
DEFAULT_MIN_BYTES = 1 << 20  # smaller reads come from the heap, which keeps its pages
DEFAULT_IDLE_SECONDS = 10.0
# a buffer of more than twice the read (plus one huge page) is not used for it: a small
# read must not pin a big buffer while the big reads allocate afresh
_SLACK = 2

_pools: weakref.WeakSet[FetchBufferPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


class FetchBufferPool:
    """Aligned buffers for reads of ``min_bytes`` or more, reused once nothing views them.

    :meth:`take` gives a writable memoryview of exactly ``nbytes`` (a slice of a pooled
    buffer); the buffer is busy while that view, or anything made from it, lives.
    ``max_idle_bytes``: idle bytes kept at most (0: keep none, every read allocates);
    ``idle_seconds``: an idle buffer is freed this long after it was last taken.
    """

    def __init__(
        self,
        max_idle_bytes: int,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        min_bytes: int = DEFAULT_MIN_BYTES,
    ) -> None:
        self.max_idle_bytes = check_int("max_idle_bytes", max_idle_bytes, 0)
        self.idle_seconds = check_number("idle_seconds", idle_seconds)
        self.min_bytes = check_int("min_bytes", min_bytes, 0)
        self._lock = threading.Lock()
        self._buffers: list[list[Any]] = []  # [AlignedBuffer, monotonic time last taken]
        self._timer: threading.Timer | None = None
        self.allocated = 0  # buffers allocated
        self.reused = 0  # takes served by a pooled buffer
        _pools.add(self)

    # -- use ----------------------------------------------------------------------------
    def take(self, nbytes: int) -> memoryview:
        """A writable view of ``nbytes`` bytes (contents undefined: the caller fills it)."""
        n = int(nbytes)
        size = _round_up(n, HUGE_PAGE)
        if n < self.min_bytes or size > self.max_idle_bytes:
            return memoryview(AlignedBuffer(n))  # not kept: it could never wait idle
        now = time.monotonic()
        with self._lock:
            best = None
            for entry in self._buffers:
                cap = entry[0].nbytes
                if n <= cap <= _SLACK * n + HUGE_PAGE and not entry[0].views:
                    if best is None or cap < best[0].nbytes:
                        best = entry
            if best is not None:
                self.reused += 1
                best[1] = now
                view = memoryview(best[0])[:n]  # the buffer is busy from here
                self._arm()
                return view
            self._trim(now, size)
        # faulting a new buffer in takes milliseconds: other threads' takes go on meanwhile
        buf = AlignedBuffer(size)
        view = memoryview(buf)[:n]
        with self._lock:
            self._buffers.append([buf, now])
            self.allocated += 1
            self._arm()
        return view

    @property
    def idle_bytes(self) -> int:
        """Bytes of buffers the pool holds that nothing views."""
        with self._lock:
            return sum(e[0].nbytes for e in self._buffers if not e[0].views)

    @property
    def held_bytes(self) -> int:
        """Bytes of every buffer the pool holds (idle, and in use by views of them)."""
        with self._lock:
            return sum(e[0].nbytes for e in self._buffers)

    def clear(self) -> None:
        """Forget every buffer (views still alive keep theirs until they go)."""
        with self._lock:
            self._buffers.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def __del__(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:  # a dropped pool leaves no timer thread waiting
            timer.cancel()

    # -- inside -------------------------------------------------------------------------
    def _trim(self, now: float, room: int = 0) -> None:
        """Free idle buffers taken ``idle_seconds`` ago or more, then the oldest idle
        ones until the idle bytes plus ``room`` (a buffer about to be made; it is idle
        as soon as its reader lets go) fit ``max_idle_bytes``. Under the lock."""
        keep = []
        idle = room
        for entry in sorted(self._buffers, key=lambda e: e[1], reverse=True):  # newest first
            buf, last = entry
            if buf.views:
                keep.append(entry)  # in use: its reader's memory, not the pool's
            elif now - last < self.idle_seconds and idle + buf.nbytes <= self.max_idle_bytes:
                idle += buf.nbytes
                keep.append(entry)
            # else: dropped; the last reference goes and its memory with it
        self._buffers = keep

    def _arm(self, wait: float | None = None) -> None:
        if self._timer is None and self._buffers:
            timer = threading.Timer(
                self.idle_seconds if wait is None else wait, _expire, (weakref.ref(self),)
            )
            timer.daemon = True
            timer.name = "fastload-fetch-buffers"
            self._timer = timer
            timer.start()

    def _expire(self) -> None:
        with self._lock:
            self._timer = None
            now = time.monotonic()
            self._trim(now)
            # look again when the next idle buffer is due; buffers in use only: a full
            # period (they are idle from some time after now)
            due = [self.idle_seconds - (now - e[1]) for e in self._buffers if not e[0].views]
            self._arm(max(min(due), 0.01) if due else None)

    def _after_fork(self) -> None:
        # the parent's lock may have been held by one of its threads, and its timer thread
        # is not in the child; the child keeps none of the parent's buffers (views of them
        # keep theirs) and starts a timer only when it reads
        self._lock = threading.Lock()
        self._timer = None
        self._buffers = []


def _expire(ref: weakref.ref[FetchBufferPool]) -> None:
    pool = ref()
    if pool is not None:
        pool._expire()


__all__ = ["FetchBufferPool"]
