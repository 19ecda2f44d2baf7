# Included by the bridges whose kernels run on fl_parallel's pool: each extension module
# links its own copy of csrc/fl_parallel.c, so each holds its own per-thread budget and
# exposes these two (fastload.loop.batch_threads sets them all).
from fastload._native.includes.fl cimport fl_thread_budget, fl_thread_budget_set


def set_thread_budget(int nthreads):
    """Cap the threads (this one included) that this module's kernels called from the
    calling thread keep busy (0: no cap; see fl_parallel.h). Returns the previous one."""
    if nthreads < 0:
        raise ValueError(f"nthreads={nthreads} is invalid: must be >= 0")
    cdef int before = fl_thread_budget()
    fl_thread_budget_set(nthreads)
    return before


def thread_budget():
    """The calling thread's budget for this module's kernels (0: no cap)."""
    return fl_thread_budget()
