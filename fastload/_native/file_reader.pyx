# distutils: sources = csrc/fl_file_reader.c csrc/fl_buffer.c csrc/fl_parallel.c
"""Bridge to csrc/fl_file_reader.c: parallel pread / O_DIRECT into one buffer."""

from cpython.buffer cimport PyBuffer_Release
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastload._native.includes.fl cimport fl_cancel_request, fl_cancel_requested, fl_error, fl_error_clear, fl_file_opts, fl_file_read, fl_file_size, fl_range

include "native_error.pxi"
include "out_buffer.pxi"

import os


cdef class CancelToken:
    """A flag the reading threads poll between parts; set it to stop a read early.

    Declared in _file_engine.pxd so that every native reader polls the same flag
    without the GIL."""

    def cancel(self):
        fl_cancel_request(&self.flag)

    @property
    def cancelled(self):
        return bool(fl_cancel_requested(&self.flag))


cdef bytes _encode_path(str path, object uri):
    """The path as C sees it; a NUL byte would silently cut it short there."""
    cdef bytes p = os.fsencode(path)
    if b"\0" in p:
        raise ValueError(f"{uri}: the path contains a NUL byte")
    return p


def file_size(str path, str uri):
    """Size of a local file in bytes."""
    cdef fl_error err
    cdef bytes p = _encode_path(path, uri)
    fl_error_clear(&err)
    cdef int64_t n = fl_file_size(p, &err)
    if n < 0:
        _raise_fl_error(&err, uri)
    return n


def read_file_ranges(list paths, list uris, const int64_t[:, ::1] ranges, object out,
                     int64_t part_size, int max_inflight, bint direct, int cache_mode,
                     CancelToken cancel=None, double timeout=0.0):
    """Read ranges (rows of src, offset, length, dst) of the files ``paths`` into ``out``.

    The GIL is released for the whole transfer. Errors name ``uris[src]``. ``timeout``
    (seconds, 0 = none) is checked between parts: a part once started runs to its end.
    Returns how many parts (preads) the ranges were cut into.
    """
    cdef Py_ssize_t n = ranges.shape[0], i
    cdef int npaths = len(paths)
    if ranges.shape[1] != 4:
        raise ValueError("ranges must have 4 columns: src, offset, length, dst")
    if len(uris) != npaths:
        raise ValueError(f"{npaths} paths but {len(uris)} URIs")
    encoded = [_encode_path(p, u) for p, u in zip(paths, uris)]
    cdef const char **cpaths = <const char **>malloc(sizeof(char *) * max(npaths, 1))
    cdef fl_range *cranges = <fl_range *>malloc(sizeof(fl_range) * max(n, 1))
    cdef Py_buffer view
    cdef fl_file_opts opts
    cdef fl_error err
    cdef int rc
    cdef int64_t nparts = 0
    if cpaths == NULL or cranges == NULL:
        free(cpaths)
        free(cranges)
        raise MemoryError("cannot allocate the range table")
    try:
        for i in range(npaths):
            cpaths[i] = <const char *>(<bytes>encoded[i])
        for i in range(n):
            if not 0 <= ranges[i, 0] < npaths:  # checked here: the cast to int32 would wrap
                raise ValueError(f"range {i}: source index {ranges[i, 0]} is not one of the "
                                 f"{npaths} sources")
            cranges[i].src = <int>ranges[i, 0]
            cranges[i].offset = ranges[i, 1]
            cranges[i].length = ranges[i, 2]
            cranges[i].dst = ranges[i, 3]
        _get_out_buffer(out, &view)
        opts.part_size = part_size
        opts.max_inflight = max_inflight
        opts.direct = direct
        opts.cache_mode = cache_mode
        opts.cancel = &cancel.flag if cancel is not None else NULL
        opts.timeout_s = timeout
        try:
            with nogil:
                rc = fl_file_read(cpaths, npaths, cranges, n, <char *>view.buf, view.len, &opts, &err,
                                  &nparts)
        finally:
            PyBuffer_Release(&view)
        if rc != 0:
            uri = uris[err.src_index] if 0 <= err.src_index < npaths else (uris[0] if uris else None)
            _raise_fl_error(&err, uri)
    finally:
        free(cpaths)
        free(cranges)
    return nparts
