"""A thread pool whose threads end when it has had nothing to do for a while.

fsspec keeps filesystems for the life of the process, so the threads of a filesystem's
background reads would too: a program that read a Parquet file through
``fastload.filesystem()`` and later forks worker processes would fork with them idle (the
loader warns about threads at a fork). This pool shuts its threads down ``idle_seconds``
after its last task ended, and makes new ones for the next task; in a forked child it
makes its own (the parent's threads are not there).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fastload.checks import check_int, check_number

_pools: weakref.WeakSet[IdleThreadPool] = weakref.WeakSet()


def _renew_locks() -> None:
    for pool in list(_pools):  # a parent's thread may have held one at the fork
        pool._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_locks)


class IdleThreadPool:
    """``threads`` threads named ``name``, started at the first :meth:`submit` and ended
    ``idle_seconds`` after the last task finished with none waiting."""

    def __init__(self, threads: int, name: str, idle_seconds: float = 10.0) -> None:
        self.threads = check_int("threads", threads, 1)
        self.name = name
        self.idle_seconds = check_number("idle_seconds", idle_seconds)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._running = 0  # tasks submitted and not finished
        self._last = 0.0  # when the last task finished (monotonic)
        self._timer: threading.Timer | None = None
        self.started = 0  # executors started (a new one after each idle shutdown)
        _pools.add(self)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads are not here
                self._pid, self._executor, self._timer, self._running = os.getpid(), None, None, 0
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, self.name)
                self.started += 1
            self._running += 1
            executor = self._executor
        try:
            fut = executor.submit(fn, *args)
        except BaseException:
            self._finished(None)
            raise
        fut.add_done_callback(self._finished)
        return fut

    @property
    def alive(self) -> bool:
        """True while the pool has threads (or may start them at once)."""
        return self._executor is not None and self._pid == os.getpid()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """End the threads now (the next :meth:`submit` starts new ones)."""
        with self._lock:
            executor, self._executor = self._executor, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if executor is not None and self._pid == os.getpid():
            executor.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _finished(self, _fut: Future[Any] | None) -> None:
        with self._lock:
            self._running -= 1
            self._last = time.monotonic()
            if self._running == 0 and self._timer is None and self._executor is not None:
                self._arm(self.idle_seconds)

    def _arm(self, wait: float) -> None:
        timer = threading.Timer(wait, _expire, (weakref.ref(self),))
        timer.daemon = True
        timer.name = f"{self.name}-idle"
        self._timer = timer
        timer.start()

    def _expire(self) -> None:
        with self._lock:
            self._timer = None
            if self._running or self._executor is None:
                return  # busy again: the last task to finish arms a new timer
            left = self.idle_seconds - (time.monotonic() - self._last)
            if left > 0:
                self._arm(left)
                return
            executor, self._executor = self._executor, None
        executor.shutdown(wait=False)  # idle: its threads end now

    def __del__(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        executor = getattr(self, "_executor", None)
        if executor is not None and getattr(self, "_pid", None) == os.getpid():
            executor.shutdown(wait=False, cancel_futures=True)


def _expire(ref: weakref.ref[IdleThreadPool]) -> None:
    pool = ref()
    if pool is not None:
        pool._expire()


__all__ = ["IdleThreadPool"]
