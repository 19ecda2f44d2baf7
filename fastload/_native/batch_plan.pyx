# distutils: sources = csrc/fl_plan.c
"""Bridge to csrc/fl_plan.c: a batch's sample ranges -> one packed, coalesced range table."""

from libc.stdint cimport int64_t

from fastload._native.includes.fl cimport fl_error, fl_plan_pack

include "native_error.pxi"

import numpy as np


def pack_ranges(const int64_t[::1] src, const int64_t[::1] offset, const int64_t[::1] length):
    """``(offsets, nbytes, used, table)`` for samples ``k`` of ``length[k]`` bytes at
    ``offset[k]`` of dataset source ``src[k]``, packed into a slab in order (see
    fl_plan.h): each sample's slab offset, the slab's size, the sorted distinct sources
    the batch touches, and the int64 table (src, offset, length, dst) naming them by
    their position in ``used``."""
    cdef Py_ssize_t n = src.shape[0]
    if offset.shape[0] != n or length.shape[0] != n:
        raise ValueError(f"pack_ranges: {n} sources, {offset.shape[0]} offsets and "
                         f"{length.shape[0]} lengths")
    offsets = np.empty(n, dtype=np.int64)
    used = np.empty(n, dtype=np.int64)
    table = np.empty((n, 4), dtype=np.int64)
    cdef int64_t[::1] o = offsets
    cdef int64_t[::1] u = used
    cdef int64_t[:, ::1] t = table
    cdef int64_t nbytes = 0, nused = 0, nrows = 0
    cdef fl_error err
    cdef int rc
    cdef int64_t dummy = 0
    with nogil:
        rc = fl_plan_pack(&src[0] if n else &dummy, &offset[0] if n else &dummy,
                          &length[0] if n else &dummy, n, &o[0] if n else &dummy, &nbytes,
                          &u[0] if n else &dummy, &nused, &t[0, 0] if n else &dummy, &nrows,
                          &err)
    if rc != 0:
        _raise_fl_error(&err, "batch plan")
    return offsets, nbytes, used[:nused], table[:nrows]
