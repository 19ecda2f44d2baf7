"""BufferPool: buffers are reused, and a busy hook keeps one from reuse (and from being
freed) while an asynchronous copy still reads it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import fastload
from fastload.storage.buffer_pool import BufferPool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))


def test_busy_hook_delays_reuse():
    pool = BufferPool(keep=2)
    a = pool.acquire(100)
    pool.release(a)
    busy = [True]
    pool.set_busy_hook(a, lambda: busy[0])
    b = pool.acquire(100)
    assert b is not a
    pool.release(b)
    busy[0] = False
    assert pool.acquire(100) in (a, b)


COPY_AFTER_DROP = """
import ctypes, gc, sys, threading
import numpy as np
from fastload.storage.buffer_pool import BufferPool

NBYTES = 4 << 20  # a private mapping: freeing it unmaps it
pool = BufferPool(keep=1)
buf = pool.acquire(NBYTES)
src = np.frombuffer(buf, dtype=np.uint8)
src[:] = np.arange(NBYTES) % 251
expected = src.copy()
gate, finished = threading.Event(), threading.Event()
dst = np.zeros(NBYTES, dtype=np.uint8)
address = buf.address

def copy():  # a DMA engine: reads the buffer by address, holds no reference to it
    gate.wait(30)
    ctypes.memmove(dst.ctypes.data, address, NBYTES)
    finished.set()

worker = threading.Thread(target=copy)
worker.start()
pool.set_busy_hook(buf, lambda: not finished.is_set())
del src
pool.release(buf)
del buf
if sys.argv[1] == "excess":  # more buffers than keep: idle ones are dropped
    for _ in range(3):
        other = pool.acquire(NBYTES)
        np.frombuffer(other, dtype=np.uint8)[:] = 255
        pool.release(other)
    del other
else:  # the loader closed while the copy runs
    pool.close()
    del pool
    fresh = [np.full(NBYTES, 255, dtype=np.uint8) for _ in range(3)]
gc.collect()
gate.set()
worker.join(30)
print(finished.is_set() and bool(np.array_equal(dst, expected)))
"""


@pytest.mark.parametrize("how", ["excess", "close"])
def test_a_buffer_with_a_copy_in_flight_is_never_freed(how):
    """The pool may drop a buffer (beyond ``keep``, or at close) while its copy is still
    running: the busy hook must keep the memory alive until the copy has finished."""
    r = subprocess.run(
        [sys.executable, "-c", COPY_AFTER_DROP, how],
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 0 and r.stdout.split() == ["True"], (
        r.returncode,
        r.stdout,
        r.stderr[-2000:],
    )


def test_a_finished_hook_is_forgotten_even_for_a_buffer_the_pool_does_not_hold():
    pool = BufferPool(keep=2)
    foreign = fastload.AlignedBuffer(4096)  # e.g. a ragged batch's own buffer
    done = threading.Event()
    pool.set_busy_hook(foreign, lambda: not done.is_set())
    pool.release(pool.acquire(4096))
    assert len(pool._hooks) == 1  # still copying: kept
    done.set()
    pool.release(pool.acquire(4096))
    assert not pool._hooks  # finished: dropped (one entry per batch would grow without end)


def test_without_a_guard_the_pool_reuses_a_buffer_nothing_views():
    """The control for test_pool_keeps_a_buffer_until_its_copy_has_finished
    (tests/batch/test_torch_output.py): the same steps without the hook reuse the buffer."""
    pool = BufferPool(keep=8)
    buf = pool.acquire(4096)
    pool.release(buf)
    assert pool.acquire(4096) is buf


def test_a_request_never_takes_a_kept_buffer_past_its_bound():
    pool = BufferPool(keep=4)
    big = pool.acquire(8 << 20)
    pool.release(big)
    small = pool.acquire(1 << 20, at_most=2 << 20)  # the 8 MiB one is idle, yet too big
    assert small is not big and small.nbytes >= 1 << 20 and pool.allocations == 2
    pool.release(small)
    assert pool.acquire(4 << 20) is big  # no bound: the smallest that fits


def test_kept_buffers_are_bounded_by_bytes():
    pool = BufferPool(keep=10, keep_bytes=3 << 20)
    bufs = [pool.acquire(1 << 20) for _ in range(3)]
    for b in bufs:
        pool.release(b)
    newest = pool.acquire(2 << 20, at_most=2 << 20)  # 5 MiB held: the oldest idle go
    kept = pool._buffers
    assert newest in kept and sum(b.nbytes for b in kept) <= 3 << 20
    assert bufs[0] not in kept
