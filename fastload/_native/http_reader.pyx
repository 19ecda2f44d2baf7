# distutils: sources = csrc/fl_http_reader.c csrc/fl_http_retry.c csrc/fl_curl.c
"""Bridge to csrc/fl_http_reader.c: parallel ranged GETs with libcurl into one buffer.

``load_libcurl(path)`` binds libcurl once per process; an ``HttpContext``
owns a curl multi handle (and so its pool of kept-alive connections) and
serves one read at a time with the GIL released.
"""

from cpython.buffer cimport PyBuffer_Release
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc

from fastload._native.includes.curl cimport (
    fl_curl_abi_count,
    fl_curl_abi_name,
    fl_curl_abi_value,
    fl_curl_load,
    fl_curl_version,
    fl_http_backoff,
    fl_http_classify_curl,
    fl_http_classify_s3_code,
    fl_http_classify_status,
    fl_http_config,
    fl_http_ctx,
    fl_http_ctx_free,
    fl_http_ctx_new,
    fl_http_ctx_stats,
    fl_http_opts,
    fl_http_read,
    fl_http_stats,
)
from fastload._native.file_reader cimport CancelToken
from fastload._native.includes.fl cimport fl_error, fl_error_clear, fl_range

include "native_error.pxi"
include "out_buffer.pxi"

import os
import sys

import numpy as np


def _src_to_low_bytes(table):
    """Big-endian machines: move src into the first 4 bytes of each row (fl_range.src)."""
    fixed = np.array(table, dtype=np.int64)
    fixed[:, 0] <<= 32
    return fixed


cdef uint64_t _jitter_state = 0x2545F4914F6CDD1D ^ <uint64_t>os.getpid()


def load_libcurl(str path):
    """Bind the libcurl at ``path`` (idempotent); returns its version string."""
    cdef char why[512]
    cdef bytes p = os.fsencode(path)
    if fl_curl_load(p, why, sizeof(why)) != 0:
        raise OSError(f"cannot load libcurl from {path}: {why.decode('utf-8', 'replace')}")
    return fl_curl_version().decode()


def abi_constants():
    """The libcurl constants compiled into the driver, {name: value}."""
    return {fl_curl_abi_name(i).decode(): fl_curl_abi_value(i) for i in range(fl_curl_abi_count())}


def classify_status(long status):
    """(fl_status, transient) for an HTTP status: the one table the data plane uses."""
    cdef int transient = 0
    cdef int code = fl_http_classify_status(status, &transient)
    return code, bool(transient)


def classify_curl(int curl_code):
    """(fl_status, transient) for a CURLcode."""
    cdef int transient = 0
    cdef int code = fl_http_classify_curl(curl_code, &transient)
    return code, bool(transient)


def classify_s3_code(str s3_code):
    """(fl_status, transient) for an S3 error code, or None when it says nothing more."""
    cdef int transient = 0
    cdef bytes b = s3_code.encode()
    cdef int code = fl_http_classify_s3_code(b, &transient)
    return None if code < 0 else (code, bool(transient))


def backoff(int attempt, double base, double cap, double retry_after=0.0):
    """Seconds before retry ``attempt`` (0-based): capped exponential with jitter."""
    global _jitter_state
    return fl_http_backoff(attempt, base, cap, retry_after, &_jitter_state)


cdef class HttpContext:
    """A long-lived libcurl multi handle with its connection pool and easy handles.

    Not thread-safe: one read at a time (the backend keeps a pool of contexts).
    """
    cdef fl_http_ctx *ctx
    cdef int owner_pid

    def __cinit__(self, *, ca_bundle=None, bint verify=True, double connect_timeout=10.0,
                  long low_speed_limit=1024, long low_speed_time=30, long buffer_size=1 << 20,
                  bint http2=True, bint follow_redirects=False, int max_retries=5,
                  double retry_deadline=60.0, double backoff_base=0.1, double backoff_cap=5.0,
                  str user_agent="fastload"):
        cdef fl_http_config cfg
        cdef fl_error err
        cdef bytes ca = os.fsencode(ca_bundle) if ca_bundle is not None else None
        cdef bytes ua = user_agent.encode()
        cfg.ca_bundle = <const char *>ca if ca is not None else NULL
        cfg.verify = verify
        cfg.connect_timeout_ms = <long>(connect_timeout * 1000)
        cfg.low_speed_limit = low_speed_limit
        cfg.low_speed_time = low_speed_time
        cfg.buffer_size = buffer_size
        cfg.http2 = http2
        cfg.follow_redirects = follow_redirects
        cfg.max_retries = max_retries
        cfg.retry_deadline = retry_deadline
        cfg.backoff_base = backoff_base
        cfg.backoff_cap = backoff_cap
        cfg.user_agent = <const char *>ua
        fl_error_clear(&err)
        self.ctx = fl_http_ctx_new(&cfg, &err)  # copies the strings
        if self.ctx == NULL:
            _raise_fl_error(&err, None)
        self.owner_pid = os.getpid()

    def __dealloc__(self):
        # After fork the child must not tear down the parent's connections (shared sockets).
        if self.ctx != NULL and self.owner_pid == os.getpid():
            fl_http_ctx_free(self.ctx)
        self.ctx = NULL

    def close(self):
        if self.ctx != NULL and self.owner_pid == os.getpid():
            fl_http_ctx_free(self.ctx)
        self.ctx = NULL

    def stats(self):
        """Counters since creation: requests, retries, connects (new connections), bytes, writes."""
        cdef fl_http_stats st
        if self.ctx == NULL:
            raise ValueError("the HTTP context is closed")
        fl_http_ctx_stats(self.ctx, &st)
        return {"requests": st.requests, "retries": st.retries, "connects": st.connects,
                "bytes": st.bytes, "writes": st.writes}

    def read(self, list urls, list headers, list uris, const int64_t[:, ::1] table, object out,
             int64_t part_size, int max_inflight, double timeout, CancelToken cancel=None):
        """GET rows (src, offset, length, dst) of ``table`` from ``urls[src]`` into ``out``.

        ``urls`` and ``headers`` (None, or '\\n'-joined header lines) are bytes per
        source; ``uris`` name the sources in errors; ``cancel`` (a CancelToken) stops
        the read within 20 ms of being set. Releases the GIL throughout.
        """
        cdef Py_ssize_t n = table.shape[0], i
        cdef int nsrc = len(urls)
        cdef const char **curls = NULL
        cdef const char **chdrs = NULL
        cdef const fl_range *cranges = NULL
        cdef const int64_t[:, ::1] rows
        cdef Py_buffer view
        cdef fl_http_opts opts
        cdef fl_error err
        cdef int rc
        if self.ctx == NULL or self.owner_pid != os.getpid():
            raise ValueError("the HTTP context is closed (or was inherited through fork)")
        if table.shape[1] != 4:
            raise ValueError("the range table must have 4 columns: src, offset, length, dst")
        if len(headers) != nsrc or len(uris) != nsrc:
            raise ValueError("urls, headers and uris must have one entry per source")
        for i in range(n):
            if table[i, 0] < 0 or table[i, 0] >= nsrc:
                raise ValueError(f"range table row {i} names source {table[i, 0]}, not one of 0..{nsrc - 1}")
        if sizeof(fl_range) != 4 * sizeof(int64_t):
            raise RuntimeError("fl_range does not have the layout of an int64 table row")
        rows = table if sys.byteorder == "little" else _src_to_low_bytes(table)
        curls = <const char **>malloc(sizeof(char *) * max(nsrc, 1))
        chdrs = <const char **>malloc(sizeof(char *) * max(nsrc, 1))
        if n > 0:
            # An int64 row (src, offset, length, dst) has fl_range's layout: on a
            # little-endian machine src's low half is fl_range.src and its high half
            # (zero for any valid index) the padding, so the table is passed as is.
            cranges = <const fl_range *>&rows[0, 0]
        try:
            if curls == NULL or chdrs == NULL:
                raise MemoryError("cannot allocate the request table")
            for i in range(nsrc):
                curls[i] = <const char *>(<bytes>urls[i])
                h = headers[i]
                chdrs[i] = <const char *>(<bytes>h) if h is not None else NULL
            _get_out_buffer(out, &view)
            opts.part_size = part_size
            opts.max_inflight = max_inflight
            opts.timeout = timeout
            # C polls the token's flag itself, without the GIL (``cancel`` keeps the token alive).
            opts.cancel = &cancel.flag if cancel is not None else NULL
            try:
                with nogil:
                    rc = fl_http_read(self.ctx, curls, chdrs, nsrc, cranges, n, <char *>view.buf,
                                      view.len, &opts, &err)
            finally:
                PyBuffer_Release(&view)
            if rc != 0:
                uri = uris[err.src_index] if 0 <= err.src_index < nsrc else (uris[0] if nsrc == 1 else f"{nsrc} sources")
                _raise_fl_error(&err, uri)
        finally:
            free(curls)
            free(chdrs)
