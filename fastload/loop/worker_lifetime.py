"""Worker processes live exactly as long as the loader's process, and only it touches them.

- A worker dies with its parent: ``PR_SET_PDEATHSIG`` (Linux; the kernel sends SIGKILL when
  the thread that started it ends, so it is asked for only when that thread is the main
  thread, which ends with the process) and, on every platform, a check of ``os.getppid()``
  whenever the worker waits for work; a worker without the signal also checks from a
  watchdog thread while its transform runs (one that never returns included). A loader killed by SIGKILL, SIGTERM or ``os._exit``
  leaves no worker behind.
- A ``fork`` worker closes the descriptors it inherited from the loader's end of every pipe
  (its own and its siblings'): the loader's pipes then see EOF when the loader goes.
- A process made with ``os.fork()`` while a loader had workers gets a copy of the loader,
  not its workers: ``multiprocessing`` forgets them in the child (its exit handler would
  otherwise terminate the parent's daemon workers), and the pools check their owner's pid.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

_PR_SET_PDEATHSIG = 1
PARENT_WATCH_S = 0.25  # how often a worker without PR_SET_PDEATHSIG checks its parent


def want_death_signal(context: str) -> bool:
    """Whether a worker started now may ask for PR_SET_PDEATHSIG (see the module doc)."""
    if not sys.platform.startswith("linux"):
        return False
    # forkserver: the parent is the single-threaded fork server, which ends with the loader
    return context == "forkserver" or threading.current_thread() is threading.main_thread()


def die_with_parent(parent_pid: int, death_signal: bool) -> None:
    """In a worker, first thing: be killed when the parent dies; leave now if it already has."""
    if death_signal:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the parent-pid checks remain
            pass
    if parent_gone(parent_pid):  # it died before prctl took effect
        os._exit(0)
    if not death_signal:
        # The checks between batches alone would leave a worker whose transform runs long
        # (or never returns) orphaned: a watchdog thread checks while it runs.
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="fastload-parent-watch", daemon=True
        ).start()


def _watch_parent(parent_pid: int) -> None:
    while not parent_gone(parent_pid):
        time.sleep(PARENT_WATCH_S)
    os._exit(0)  # nothing to report to, nobody to wait for


def parent_gone(parent_pid: int) -> bool:
    """True once the process that started this one has exited (we were re-parented)."""
    return os.getppid() != parent_pid


def close_inherited(fds: Iterable[int]) -> None:
    """Close descriptors a forked worker inherited but must not hold (the loader's pipe ends)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_registered = False


def track_pool(pool: Any) -> None:
    """Make a forked child forget ``pool``'s processes (``pool.processes()``)."""
    global _registered
    _pools.add(pool)
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_pools)
        _registered = True


def _forget_pools() -> None:
    import multiprocessing.process as mp_process

    children = getattr(mp_process, "_children", None)  # what multiprocessing's exit handler ends
    for pool in list(_pools):
        for proc in pool.processes():
            if children is not None:
                children.discard(proc)
    _pools.clear()
