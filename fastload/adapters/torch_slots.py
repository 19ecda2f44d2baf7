"""Batches from torch's worker processes to the main process through shared memory.

torch pickles every tensor a worker yields: it moves the storage to shared memory and
passes a file descriptor per tensor through a socket handshake with the worker (about
0.7 ms each here), which caps a DataLoader at ~1500 tensors/s whatever the data. A
worker of TorchIterableDataset instead copies each batch into a slot of a shared
segment that the main process maps once; only (segment, slot, layout) is pickled.
The main process marks the slot free when the last tensor viewing it is gone.
"""

from __future__ import annotations

import errno
import multiprocessing.util
import os
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from fastload.errors import SharedMemoryFull
from fastload.loop.shared_memory import Segment
from fastload.storage.pids import pid_alive

_HEADER = 4096  # the segment starts with one "busy" byte per slot
_SLOTS = 2  # per ring; a worker adds rings while the main process holds more batches
_ALIGN = 64


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def dense(t: Any) -> Any:
    """``t`` if its strides describe a dense block of ``numel`` elements (so the same strides
    fit a slot of that size), else a contiguous copy."""
    dense = t.is_contiguous() or (
        t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    )
    return t if dense else t.contiguous()


class SlotRing:
    """Worker side: ``slots`` batch slots of ``slot_bytes`` in one shared segment."""

    def __init__(self, slots: int, slot_bytes: int) -> None:
        self.slots = slots
        self.slot_bytes = _round_up(max(slot_bytes, 1), 4096)
        self.segment = Segment(_HEADER + slots * self.slot_bytes)
        # The main process unlinks the file once it has mapped it; this covers the rest.
        multiprocessing.util.Finalize(self, self.segment.unlink, exitpriority=0)
        _reserve(self.segment)
        self.busy = np.frombuffer(self.segment.mm, dtype=np.uint8, count=slots)

    def slot(self, k: int) -> Any:
        start = _HEADER + k * self.slot_bytes
        return torch.from_numpy(
            np.frombuffer(self.segment.mm, dtype=np.uint8, count=self.slot_bytes, offset=start)
        )


def _reserve(segment: Segment) -> None:
    """Allocate the segment's pages now: a full /dev/shm then fails here, with a clear
    error, instead of a SIGBUS/SIGSEGV on the first write into the mapping."""
    fd = os.open(segment.path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, segment.nbytes)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # a filesystem without fallocate: pages come on first touch
        segment.unlink()
        raise SharedMemoryFull(
            exc.errno,
            f"fastload: no room for {segment.nbytes} bytes of batch slots in "
            f"{os.path.dirname(segment.path)} ({exc.strerror}); enlarge it "
            "(docker: --shm-size) or use smaller batches",
        ) from None
    finally:
        os.close(fd)


class Reservation:
    """A slot taken for one batch; ``slot`` is a uint8 tensor over it.

    The slot stays busy while any worker-side view of it lives; once the batch is
    pickled to the main process (``handed_over``) only the main process frees it.
    """

    def __init__(self, ring: SlotRing, k: int, offsets: list[int]) -> None:
        ring.busy[k] = 1
        start = _HEADER + k * ring.slot_bytes
        anchor = np.frombuffer(ring.segment.mm, dtype=np.uint8, count=ring.slot_bytes, offset=start)
        self.handed_over = [False]
        weakref.finalize(anchor, _release_unless_handed_over, ring.busy, k, self.handed_over)
        self.slot = torch.from_numpy(anchor)
        self.offsets = offsets
        self.where = (ring.segment.name, os.getpid(), ring.slot_bytes, k)

    def place(self, i: int, t: Any) -> Any:
        """Copy tensor ``t`` to its place ``i`` in the slot; returns the slot-side tensor."""
        off, n = self.offsets[i], t.numel() * t.element_size()
        dst = self.slot[off : off + n].view(t.dtype).as_strided(t.shape, t.stride())
        return dst.copy_(t)

    def reduce(self, tensors: Sequence[Any], single: bool) -> tuple[Any, ...]:
        """Pickle form of ``tensors`` (views of this slot): the main process rebuilds them."""
        self.handed_over[0] = True
        specs = [
            (
                t.data_ptr() - self.slot.data_ptr(),
                t.numel() * t.element_size(),
                str(t.dtype).removeprefix("torch."),
                tuple(t.shape),
                t.stride(),
            )
            for t in tensors
        ]
        return _rebuild_shared, (*self.where, specs, single)


def _release_unless_handed_over(busy: np.ndarray, k: int, handed_over: list[bool]) -> None:
    if not handed_over[0]:
        busy[k] = 0


class SharedBatch:
    """What a TorchIterableDataset worker yields: torch's ``default_convert`` passes it
    through untouched, and it unpickles in the main process as the tensors themselves."""

    def __init__(self, res: Reservation, tensors: list[Any], single: bool) -> None:
        self.res, self.tensors, self.single = res, tensors, single

    def __reduce__(self) -> tuple[Any, ...]:
        return self.res.reduce(self.tensors, self.single)


class SharedTuple(tuple):
    """What TorchCollate returns in a worker: a plain tuple of slot tensors to any code
    that looks at it, pickled compactly like SharedBatch."""

    res: Reservation

    def __reduce__(self) -> tuple[Any, ...]:
        return self.res.reduce(self, False)


class SlotSender:
    """Worker side: slots for batches, adding a ring of slots when all are held by the main
    process (it never waits for them, so a caller keeping batches cannot deadlock it)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.rings: list[SlotRing] = []

    def reserve(self, tensors: Sequence[Any], first_nbytes: int | None = None) -> Reservation:
        """A slot with room for ``tensors`` (and, when given, ``first_nbytes`` before them)."""
        sizes = ([] if first_nbytes is None else [first_nbytes]) + [
            t.numel() * t.element_size() for t in tensors
        ]
        offsets, end = [], 0
        for n in sizes:
            offsets.append(end)
            end = _round_up(end + n, _ALIGN)
        for ring in self.rings:
            if ring.slot_bytes >= end:
                free = np.flatnonzero(ring.busy == 0)
                if free.size:
                    return Reservation(ring, int(free[0]), offsets)
        # Rings too small for this batch serve no later one of this size: drop the idle ones.
        self.rings = [r for r in self.rings if r.slot_bytes >= end or r.busy.any()]
        self.rings.append(SlotRing(_SLOTS, end))
        return Reservation(self.rings[-1], 0, offsets)

    def pack(self, batch: Any) -> Any:
        """A tensor or tuple of CPU tensors -> a SharedBatch; anything else as it is."""
        single = isinstance(batch, torch.Tensor)
        parts = [batch] if single else list(batch) if isinstance(batch, tuple) else [None]
        if not all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in parts):
            return batch  # e.g. string labels or a RaggedBatch: torch's own pickling
        parts = [dense(t) for t in parts]
        try:
            res = self.reserve(parts)
        except SharedMemoryFull as exc:
            warn_once_shm(exc)
            return batch
        return SharedBatch(res, [res.place(i, t) for i, t in enumerate(parts)], single)

    def send_all(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield self.pack(batch)


_shm_warned = False


def warn_once_shm(exc: OSError) -> None:
    global _shm_warned
    if not _shm_warned:
        _shm_warned = True
        warnings.warn(
            f"{exc.strerror}: handing batches to torch's own pickling instead",
            RuntimeWarning,
            stacklevel=3,
        )


_sender: SlotSender | None = None


def worker_sender() -> SlotSender:
    """This process's SlotSender (a forked child makes its own)."""
    global _sender
    if _sender is None or _sender.pid != os.getpid():
        _sender = SlotSender()
    return _sender


_mapped: dict[str, tuple[int, Any]] = {}
_mapped_lock = threading.Lock()
_SWEEP_S = 1.0
_swept = 0.0


_pid_alive = pid_alive  # the name this module's callers use


def _mapping(name: str, pid: int) -> Any:
    """Main process: the worker segment ``name`` mapped (once; its file unlinked then)."""
    global _swept
    with _mapped_lock:
        now = time.monotonic()
        if now - _swept > _SWEEP_S:
            # Forget segments of workers that have exited (their batches keep the mapping alive).
            _swept = now
            for old in [n for n, (p, _) in _mapped.items() if not _pid_alive(p)]:
                del _mapped[old]
        entry = _mapped.get(name)
        if entry is None:
            seg = Segment(0, name)
            seg.unlink()
            entry = _mapped[name] = (pid, seg.mm)
        return entry[1]


def _release_slot(busy: np.ndarray, slot: int) -> None:
    busy[slot] = 0


def _rebuild_shared(
    name: str, pid: int, slot_bytes: int, slot: int, specs: list[tuple[Any, ...]], single: bool
) -> Any:
    mm = _mapping(name, pid)
    anchor = np.frombuffer(mm, dtype=np.uint8, count=slot_bytes, offset=_HEADER + slot * slot_bytes)
    # Every tensor below views one storage that holds ``anchor``: it dies with the last of them.
    weakref.finalize(anchor, _release_slot, np.frombuffer(mm, dtype=np.uint8, count=slot + 1), slot)
    base = torch.from_numpy(anchor)
    out = tuple(
        base[off : off + n].view(getattr(torch, dtype)).as_strided(shape, stride)
        for off, n, dtype, shape, stride in specs
    )
    return out[0] if single else out
