# distutils: sources = csrc/fl_file_reader.c csrc/fl_buffer.c csrc/fl_parallel.c
"""Bridge to csrc/fl_file_reader.c: parallel pread / O_DIRECT into one buffer."""

from cpython.buffer cimport PyBuffer_Release
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport strlen

from fastload._native.includes.fl cimport (
    FL_DIRECT_MIN_PART, FL_INLINE_MAX_BYTES, fl_cancel_request, fl_cancel_requested, fl_error, fl_error_clear,
    fl_file_opts, fl_file_read, fl_file_reader, fl_file_reader_close, fl_file_reader_free,
    fl_file_reader_new, fl_file_reader_stats, fl_file_size, fl_file_stats, fl_range,
)

include "native_error.pxi"
include "thread_budget.pxi"
include "out_buffer.pxi"

import os
import sys

# Bytes a read may total and still run on the calling thread alone (fl_file_reader.h).
INLINE_MAX_BYTES = FL_INLINE_MAX_BYTES
# Parts at least this long of a cold large read (page_cache_mode auto) go O_DIRECT.
DIRECT_MIN_PART = FL_DIRECT_MIN_PART

# Where the file system encoding is UTF-8 a str's cached UTF-8 form is its path as C sees
# it (no copy per call); paths holding surrogate escapes go through os.fsencode.
cdef bint _FS_UTF8 = sys.getfilesystemencoding().lower().replace("-", "") == "utf8"



cdef class CancelToken:
    """A flag the reading threads poll between parts; set it to stop a read early.

    Declared in _file_engine.pxd so that every native reader polls the same flag
    without the GIL."""

    def cancel(self):
        fl_cancel_request(&self.flag)

    @property
    def cancelled(self):
        return bool(fl_cancel_requested(&self.flag))


cdef class FileReader:
    """What local reads keep between calls: a pool of native reader threads (made on
    demand, up to the parts in flight the calls ask for) and at most ``max_open_files``
    open descriptors, each used only while the path still names the file it was opened
    on. ``close()`` joins the threads and closes the descriptors; the reader stays
    usable. A child process after ``fork`` starts with neither."""

    cdef fl_file_reader *reader
    cdef readonly int max_open_files

    def __cinit__(self, int max_open_files=256):
        if max_open_files < 0:
            raise ValueError(f"max_open_files={max_open_files} is invalid: must be >= 0")
        self.max_open_files = max_open_files
        self.reader = fl_file_reader_new(max_open_files)
        if self.reader == NULL:
            raise MemoryError("cannot allocate a file reader")

    def __dealloc__(self):
        if self.reader != NULL:
            with nogil:
                fl_file_reader_free(self.reader)
            self.reader = NULL

    def close(self):
        """Wait for reads in flight, join the threads, close the cached descriptors."""
        with nogil:
            fl_file_reader_close(self.reader)

    def stats(self):
        """Counters since creation (reads, parts, bytes, inline_reads, inline_starts,
        opens, reopens, hits, direct_parts, ahead_parts) and the state now (open_files,
        threads)."""
        cdef fl_file_stats st
        with nogil:
            fl_file_reader_stats(self.reader, &st)
        return {
            "reads": st.reads, "parts": st.parts, "bytes": st.bytes,
            "inline_reads": st.inline_reads, "inline_starts": st.inline_starts,
            "opens": st.opens, "reopens": st.reopens,
            "hits": st.hits, "direct_parts": st.direct_parts, "ahead_parts": st.ahead_parts,
            "open_files": st.open_files, "threads": st.threads,
        }


cdef bytes _encode_path(str path, object uri):
    """The path as C sees it; a NUL byte would silently cut it short there."""
    cdef bytes p = os.fsencode(path)
    if b"\0" in p:
        raise ValueError(f"{uri}: the path contains a NUL byte")
    return p


cdef const char *_c_path(object path, object uris, Py_ssize_t i, list keep) except NULL:
    """``path`` as a C string that lives as long as ``path`` (or ``keep``)."""
    cdef Py_ssize_t n
    cdef const char *c
    if _FS_UTF8 and type(path) is str:
        try:
            c = PyUnicode_AsUTF8AndSize(path, &n)
        except UnicodeEncodeError:
            c = NULL
        if c != NULL:
            if <Py_ssize_t>strlen(c) != n:
                raise ValueError(f"{uris[i]}: the path contains a NUL byte")
            return c
    b = _encode_path(path, uris[i])
    keep.append(b)
    return <const char *>(<bytes>b)


def file_size(str path, str uri):
    """Size of a local file in bytes."""
    cdef fl_error err
    cdef bytes p = _encode_path(path, uri)
    fl_error_clear(&err)
    cdef int64_t n = fl_file_size(p, &err)
    if n < 0:
        _raise_fl_error(&err, uri)
    return n


def read_file_ranges(list paths, object uris, const int64_t[:, ::1] ranges, object out,
                     int64_t part_size, int max_inflight, bint direct, int cache_mode,
                     CancelToken cancel=None, double timeout=0.0, FileReader reader=None,
                     int64_t cache_fit=0):
    """Read ranges (rows of src, offset, length, dst) of the files ``paths`` into ``out``.

    The GIL is released for the whole transfer. Errors name ``uris[src]`` (any sequence
    of names, looked up only on an error). ``timeout`` (seconds, 0 = none) is checked
    between parts: a part once started runs to its end. ``reader`` keeps threads and
    open descriptors between calls (None: open and close every file, threads of a
    process-wide pool). ``cache_fit``: with cache_mode auto, cold sources of at most this
    many bytes are read through the page cache (read ahead) and larger ones with O_DIRECT
    (see fl_file_reader.h). Returns how many parts (preads) the ranges were cut into.
    """
    cdef Py_ssize_t n = ranges.shape[0], i
    cdef int npaths = len(paths)
    if ranges.shape[1] != 4:
        raise ValueError("ranges must have 4 columns: src, offset, length, dst")
    if len(uris) != npaths:
        raise ValueError(f"{npaths} paths but {len(uris)} URIs")
    cdef const char **cpaths = <const char **>malloc(sizeof(char *) * max(npaths, 1))
    cdef fl_range *cranges = <fl_range *>malloc(sizeof(fl_range) * max(n, 1))
    cdef Py_buffer view
    cdef fl_file_opts opts
    cdef fl_error err
    cdef int rc
    cdef int64_t nparts = 0
    cdef fl_file_reader *c_reader = reader.reader if reader is not None else NULL
    cdef list keep = []
    if cpaths == NULL or cranges == NULL:
        free(cpaths)
        free(cranges)
        raise MemoryError("cannot allocate the range table")
    try:
        for i in range(npaths):
            cpaths[i] = _c_path(paths[i], uris, i, keep)
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
        opts.cache_fit = cache_fit
        try:
            with nogil:
                rc = fl_file_read(c_reader, cpaths, npaths, cranges, n, <char *>view.buf,
                                  view.len, &opts, &err, &nparts)
        finally:
            PyBuffer_Release(&view)
        if rc != 0:
            uri = uris[err.src_index] if 0 <= err.src_index < npaths else (uris[0] if npaths else None)
            _raise_fl_error(&err, uri)
    finally:
        free(cpaths)
        free(cranges)
    return nparts
