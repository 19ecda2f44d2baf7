# distutils: sources = csrc/fl_file_reader.c csrc/fl_buffer.c csrc/fl_parallel.c
"""Bridge to csrc/fl_file_reader.c: parallel pread / O_DIRECT into one buffer."""

from cpython.buffer cimport PyBUF_ANY_CONTIGUOUS, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastload.includes.fl cimport fl_error, fl_error_clear, fl_file_opts, fl_file_read, fl_file_size, fl_range

include "_native_error.pxi"

import os


cdef class CancelToken:
    """A flag the reading threads poll between parts; set it to stop a read early.

    Declared in _file_engine.pxd so that every native reader polls the same flag
    without the GIL."""

    def cancel(self):
        self.flag = 1

    @property
    def cancelled(self):
        return self.flag != 0


def file_size(str path, str uri):
    """Size of a local file in bytes."""
    cdef fl_error err
    cdef bytes p = os.fsencode(path)
    fl_error_clear(&err)
    cdef int64_t n = fl_file_size(p, &err)
    if n < 0:
        _raise_fl_error(&err, uri)
    return n


def read_file_ranges(list paths, list uris, const int64_t[:, ::1] ranges, object out,
                     int64_t part_size, int max_inflight, bint direct, int cache_mode,
                     CancelToken cancel=None):
    """Read ranges (rows of src, offset, length, dst) of the files ``paths`` into ``out``.

    The GIL is released for the whole transfer. Errors name ``uris[src]``.
    """
    cdef Py_ssize_t n = ranges.shape[0], i
    cdef int npaths = len(paths)
    if ranges.shape[1] != 4:
        raise ValueError("ranges must have 4 columns: src, offset, length, dst")
    encoded = [os.fsencode(p) for p in paths]
    cdef const char **cpaths = <const char **>malloc(sizeof(char *) * max(npaths, 1))
    cdef fl_range *cranges = <fl_range *>malloc(sizeof(fl_range) * max(n, 1))
    cdef Py_buffer view
    cdef fl_file_opts opts
    cdef fl_error err
    cdef int rc
    if cpaths == NULL or cranges == NULL:
        free(cpaths)
        free(cranges)
        raise MemoryError("cannot allocate the range table")
    try:
        for i in range(npaths):
            cpaths[i] = <const char *>(<bytes>encoded[i])
        for i in range(n):
            cranges[i].src = <int>ranges[i, 0]
            cranges[i].offset = ranges[i, 1]
            cranges[i].length = ranges[i, 2]
            cranges[i].dst = ranges[i, 3]
        try:
            PyObject_GetBuffer(out, &view, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS)
        except BufferError as exc:
            raise ValueError(f"the destination buffer must be writable and contiguous: {exc}") from None
        opts.part_size = part_size
        opts.max_inflight = max_inflight
        opts.direct = direct
        opts.cache_mode = cache_mode
        opts.cancel = &cancel.flag if cancel is not None else NULL
        try:
            with nogil:
                rc = fl_file_read(cpaths, npaths, cranges, n, <char *>view.buf, view.len, &opts, &err)
        finally:
            PyBuffer_Release(&view)
        if rc != 0:
            uri = uris[err.src_index] if 0 <= err.src_index < len(uris) else (uris[0] if uris else None)
            _raise_fl_error(&err, uri)
    finally:
        free(cpaths)
        free(cranges)
