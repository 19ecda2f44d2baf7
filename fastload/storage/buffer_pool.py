"""A pool of aligned (optionally pinned) buffers that batches are views of.

Allocating a fresh slab per batch costs page faults (about 0.9 GB/s here,
against 8+ GB/s into a pre-faulted buffer), so slabs are allocated once and
reused. A buffer is reused only when nothing can still see it:

- the loader is not writing it (its lease was returned),
- no numpy array (or other buffer-protocol view) of it is alive: a batch the
  caller kept is never overwritten, the pool allocates another buffer instead,
- its "still in use" hook, when one is set, says it is free (the torch side
  sets one per buffer that polls the CUDA event of an asynchronous copy).

A hook also keeps its buffer alive: a DMA engine reading a buffer holds no
Python reference to it, so a buffer the pool drops (beyond ``keep``, or at
``close``) is freed only once its copy has finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastload._native.buffer import AlignedBuffer

BusyHook = Callable[[], bool]

# Buffers whose copy was still running when their pool closed: held here until it is done.
_draining: list[tuple[AlignedBuffer, BusyHook]] = []
_draining_lock = threading.Lock()


def _still_busy(
    hooks: list[tuple[AlignedBuffer, BusyHook]],
) -> list[tuple[AlignedBuffer, BusyHook]]:
    return [(buf, busy) for buf, busy in hooks if busy()]


class BufferPool:
    """Aligned buffers for batches, reused once nothing views them.

    ``pin``: allocate page-locked buffers (``pin_mode`` reports what the OS
    granted); ``keep``: idle buffers kept for reuse beyond that are freed.
    """

    def __init__(self, *, pin: bool = False, keep: int = 4, keep_bytes: int | None = None) -> None:
        self.pin = bool(pin)
        self.keep = max(1, int(keep))
        # bytes of buffers kept at most (None: ``keep`` alone bounds them); the newest
        # buffer is always kept, so one larger than this lives while it is used
        self.keep_bytes = None if keep_bytes is None else max(0, int(keep_bytes))
        self._lock = threading.Lock()
        self._buffers: list[AlignedBuffer] = []
        self._leased: set[int] = set()
        self._hooks: dict[
            int, tuple[AlignedBuffer, BusyHook]
        ] = {}  # id -> (the buffer, kept alive; hook)
        self.allocations = 0
        self.pin_mode = "none"
        self.pin_error: str | None = None if pin else "pin_memory is off"

    def _reusable(self, buf: AlignedBuffer) -> bool:
        return id(buf) not in self._leased and not buf.views and id(buf) not in self._hooks

    def acquire(self, nbytes: int, at_most: int | None = None) -> AlignedBuffer:
        """A buffer of at least ``nbytes`` that nothing views, leased until :meth:`release`.
        ``at_most``: never hand out a kept buffer larger than this (a small request must
        not pin a big buffer while the big ones allocate afresh)."""
        limit = None if at_most is None else int(at_most)
        with self._lock:
            if self._hooks:  # forget finished copies, also of buffers the pool no longer holds
                self._hooks = {
                    id(b): (b, busy) for b, busy in _still_busy(list(self._hooks.values()))
                }
            best = None
            for buf in self._buffers:
                if (
                    buf.nbytes >= nbytes
                    and (limit is None or buf.nbytes <= limit)
                    and (best is None or buf.nbytes < best.nbytes)
                    and self._reusable(buf)
                ):
                    best = buf
            if best is None:
                best = self._allocate(nbytes)
            self._leased.add(id(best))
            return best

    def _allocate(self, nbytes: int) -> AlignedBuffer:
        buf = AlignedBuffer(max(int(nbytes), 1), pin=self.pin)
        self.allocations += 1
        if self.pin:
            self.pin_mode, self.pin_error = buf.pin_mode, buf.pin_error
        self._buffers.append(buf)
        # Forget buffers beyond ``keep`` that are not leased: idle ones are freed now,
        # ones the caller still views are freed by Python when the last view goes.
        excess = len(self._buffers) - self.keep
        if excess > 0:
            drop = [b for b in self._buffers if b is not buf and id(b) not in self._leased][:excess]
            for b in drop:  # one with a copy in flight lives on in its hook entry
                self._buffers.remove(b)
        if self.keep_bytes is not None:  # then the oldest unleased ones, down to the bytes
            held = sum(b.nbytes for b in self._buffers)
            for b in [b for b in self._buffers if b is not buf and id(b) not in self._leased]:
                if held <= self.keep_bytes:
                    break
                self._buffers.remove(b)
                held -= b.nbytes
        return buf

    def release(self, buf: AlignedBuffer) -> None:
        """End the lease of ``buf``: from now on only its views and hook keep it busy."""
        with self._lock:
            self._leased.discard(id(buf))

    def set_busy_hook(self, buf: AlignedBuffer, is_busy: BusyHook) -> None:
        """Do not reuse ``buf`` while ``is_busy()`` is true (e.g. a CUDA copy not finished)."""
        with self._lock:
            self._hooks[id(buf)] = (buf, is_busy)

    def close(self) -> None:
        """Drop every buffer (memory is freed once no view of it is alive and its copy is done)."""
        with self._lock:
            busy = _still_busy(list(self._hooks.values()))
            self._buffers.clear()
            self._leased.clear()
            self._hooks.clear()
        with _draining_lock:
            _draining[:] = _still_busy(_draining) + busy

    def __len__(self) -> int:
        return len(self._buffers)

    @property
    def nbytes(self) -> int:
        """Bytes the pool holds."""
        return sum(b.nbytes for b in self._buffers)
