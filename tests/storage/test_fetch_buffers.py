"""Read buffers kept for reuse: what is reused and when, what is never overwritten, the two
bounds on idle memory (bytes and time), knobs, and a forked child."""

from __future__ import annotations

import gc
import os
import threading
import time
import weakref

import numpy as np
import pytest

from fastload.storage.fetch_buffers import HUGE_PAGE, FetchBufferPool
from tests.support.waiting import wait_for

MiB = 1 << 20


def _address(view: memoryview) -> int:
    return np.frombuffer(view, dtype=np.uint8).ctypes.data


def test_a_buffer_nothing_views_is_reused_and_one_still_viewed_is_not():
    pool = FetchBufferPool(64 * MiB)
    a = pool.take(3 * MiB)
    assert len(a) == 3 * MiB and not a.readonly
    where = _address(a)
    a[:4] = b"abcd"
    kept = np.frombuffer(a, dtype=np.uint8)[:4]  # a view made from it keeps it busy
    del a
    b = pool.take(3 * MiB)
    other = _address(b)
    assert other != where and pool.allocated == 2 and pool.reused == 0
    b[:4] = b"wxyz"
    assert kept.tobytes() == b"abcd"  # a result still held was not overwritten
    del kept, b
    c = pool.take(3 * MiB)
    assert pool.reused == 1 and pool.allocated == 2
    assert _address(c) in (where, other)  # one of the two, both free now
    assert pool.held_bytes == 2 * 4 * MiB  # 3 MiB rounded to whole huge pages


def test_reads_of_other_sizes_take_a_close_fit_only():
    pool = FetchBufferPool(256 * MiB)
    big = pool.take(32 * MiB)
    del big
    small = pool.take(2 * MiB)  # the 32 MiB buffer is too big for it
    assert pool.reused == 0 and pool.allocated == 2
    del small
    fits = pool.take(31 * MiB)
    assert pool.reused == 1 and len(fits) == 31 * MiB


def test_small_reads_and_a_pool_of_nothing_allocate_every_time():
    pool = FetchBufferPool(64 * MiB, min_bytes=MiB)
    for _ in range(3):
        view = pool.take(MiB - 1)
        del view
    off = FetchBufferPool(0)
    for _ in range(3):
        view = off.take(4 * MiB)
        del view
    assert pool.held_bytes == off.held_bytes == 0 and pool.reused == off.reused == 0


def test_a_read_bigger_than_the_idle_bound_is_not_kept():
    pool = FetchBufferPool(8 * MiB)
    view = pool.take(9 * MiB)
    assert len(view) == 9 * MiB and pool.held_bytes == 0
    del view
    view = pool.take(8 * MiB)
    assert pool.held_bytes == 8 * MiB and len(view) == 8 * MiB


def test_idle_bytes_beyond_the_bound_are_freed_at_the_next_allocation():
    pool = FetchBufferPool(8 * MiB)
    views = [pool.take(4 * MiB) for _ in range(3)]  # all in use: the caller's memory
    assert pool.held_bytes == 12 * MiB and pool.idle_bytes == 0
    del views
    assert pool.idle_bytes == 12 * MiB
    big = pool.take(6 * MiB)  # no idle buffer fits: allocating trims the idle ones first
    assert pool.held_bytes - len(big) <= 8 * MiB
    assert pool.idle_bytes <= 8 * MiB - _round(6 * MiB)
    del big
    assert pool.idle_bytes <= 8 * MiB


def _round(n: int) -> int:
    return -(-n // HUGE_PAGE) * HUGE_PAGE


def _timer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fastload-fetch-buffers"]


def test_idle_buffers_are_freed_after_idle_seconds_and_the_timer_ends():
    pool = FetchBufferPool(64 * MiB, idle_seconds=0.2)
    held = pool.take(4 * MiB)
    idle = pool.take(4 * MiB)
    del idle
    wait_for(lambda: pool.held_bytes == 4 * MiB, "the idle buffer freed")
    held[:1] = b"x"  # the one in use stays, and is freed once idle long enough
    del held
    wait_for(lambda: pool.held_bytes == 0, "the last buffer freed")
    wait_for(lambda: not _timer_threads(), "the timer thread gone")


def test_a_dropped_pool_frees_its_buffers_and_its_timer_does_not_keep_it():
    pool = FetchBufferPool(64 * MiB, idle_seconds=30)
    view = pool.take(4 * MiB)
    del view
    assert len(_timer_threads()) == 1
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    wait_for(lambda: not _timer_threads(), "its timer thread gone")


def test_threads_taking_at_once_never_share_a_buffer():
    pool = FetchBufferPool(64 * MiB)
    errors = []

    def work(k: int) -> None:
        for _ in range(40):
            view = pool.take(2 * MiB + k)
            arr = np.frombuffer(view, dtype=np.uint8)
            arr[:] = k
            time.sleep(0.001)
            if not (arr == k).all():  # another thread wrote into the same memory
                errors.append(k)
            del arr, view

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.reused > 0 and pool.allocated <= 6 + 6  # each thread's buffer, mostly reused


def test_bad_knobs_name_themselves():
    with pytest.raises(ValueError, match="max_idle_bytes=-1 is invalid"):
        FetchBufferPool(-1)
    with pytest.raises(ValueError, match="idle_seconds=0 is invalid"):
        FetchBufferPool(MiB, idle_seconds=0)
    with pytest.raises(ValueError, match="min_bytes=-5 is invalid"):
        FetchBufferPool(MiB, min_bytes=-5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_with_no_buffers_and_reads_with_its_own():
    pool = FetchBufferPool(64 * MiB)
    view = pool.take(4 * MiB)
    del view
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        ok = pool.held_bytes == 0
        v = pool.take(4 * MiB)
        v[:2] = b"ok"
        ok = ok and pool.allocated == 2 and bytes(v[:2]) == b"ok"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool.held_bytes == 4 * MiB  # the parent's own are untouched
