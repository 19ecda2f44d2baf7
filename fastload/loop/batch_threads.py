"""How many threads one batch may keep busy: the native thread budget of a reader thread.

A loader with one reader thread per CPU (or more) already keeps every core busy with
whole batches. Had each batch's read and collate also woken pool threads, those would
only take turns with the other readers on the same cores, and each hand-off costs
wake-ups and moves the batch's bytes to another core's cache: measured on 2 CPUs at
prefetch 2 (224x224x3 uint8 -> float32), batches of 32 took ~25% less CPU and wall time
per sample, batches of 256 ~10% less wall time, made on their reader thread alone.
So each reader thread gets ``cpus // readers`` threads (itself included) for its
kernels' CPU work; a read whose parts wait for the disk still brings in more threads
(they wait, they take no CPU). A batch ``next()`` makes itself (the readers parked) and
a loader with one reader keep the kernels' own choice.
"""

from __future__ import annotations

from fastload._native import collate as _collate
from fastload._native import file_reader as _file_reader
from fastload._native import jpeg as _jpeg


def reader_thread_budget(readers: int, cpus: int | None = None) -> int:
    """Threads (itself included) each of ``readers`` reader threads may keep busy in
    the native kernels on ``cpus`` CPUs (default: those this process may use); 0: no cap
    (a lone reader)."""
    cpus = _collate.cpu_count() if cpus is None else cpus
    if readers <= 1:
        return 0
    return max(1, cpus // readers)


def hold_thread_budget(nthreads: int) -> None:
    """Give the calling thread a budget of ``nthreads`` (0: none) in every native module
    whose kernels run on a thread pool (each holds its own copy of the budget)."""
    _collate.set_thread_budget(nthreads)
    _file_reader.set_thread_budget(nthreads)
    _jpeg.set_thread_budget(nthreads)  # image batches decode on their own pool
