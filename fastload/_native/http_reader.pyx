# distutils: sources = csrc/fl_http_reader.c csrc/fl_http_retry.c csrc/fl_curl.c
"""Bridge to csrc/fl_http_reader.c: parallel ranged GETs with libcurl into one buffer.

``load_libcurl(path)`` binds libcurl once per process; an ``HttpContext``
owns a curl multi handle (and so its pool of kept-alive connections) and
serves one read at a time with the GIL released.
"""

from cpython.buffer cimport PyBuffer_Release
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport strncpy
from posix.unistd cimport getpid

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
    fl_http_etag_key,
    fl_http_opts,
    fl_http_pin,
    FL_RANGE_IGNORED,
    FL_HTTP_MAX_REDIRECTS,
    fl_http_read,
    fl_http_stats,
)
from fastload._native.file_reader cimport CancelToken
from fastload._native.includes.fl cimport fl_error, fl_error_clear, fl_range

include "native_error.pxi"
include "out_buffer.pxi"

import os
import sys
import threading

import numpy as np


def _src_to_low_bytes(table):
    """Big-endian machines: move src into the first 4 bytes of each row (fl_range.src)."""
    fixed = np.array(table, dtype=np.int64)
    fixed[:, 0] <<= 32
    return fixed


# redirects one request follows (follow_redirects), data plane and control plane alike
MAX_REDIRECTS = FL_HTTP_MAX_REDIRECTS

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


cdef class _SignalWatch:
    """Polled by the transfer loop on the main thread: a pending Ctrl-C stops the read."""
    cdef object exc

    cdef int poll(self):
        try:
            PyErr_CheckSignals()
        except BaseException as exc:  # KeyboardInterrupt, or what a signal handler raised
            self.exc = exc
            return 1
        return 0


cdef int _poll_signals(void *arg) noexcept nogil:
    with gil:
        return (<_SignalWatch>arg).poll()


cdef void _fill_pin(fl_http_pin *pin, object known):
    """``known``: None, or (total, etag, last_modified, range_ignored) from a HEAD or listing."""
    cdef bytes text
    pin.total = -1
    if known is None:
        return
    total, etag, last_modified, range_ignored = known
    pin.total = total if total is not None and total >= 0 else -1
    if etag:
        text = etag.encode("latin-1", "replace")
        fl_http_etag_key(pin.etag, text, len(text))  # the form responses are compared in
    if last_modified:
        text = last_modified.encode("latin-1", "replace")
        strncpy(pin.last_modified, text, sizeof(pin.last_modified) - 1)
    if range_ignored:
        pin.range_mode = FL_RANGE_IGNORED


cdef class HttpContext:
    """A long-lived libcurl multi handle with its connection pool and easy handles.

    Not thread-safe: one read at a time (the backend keeps a pool of contexts).
    """
    cdef fl_http_ctx *ctx
    cdef int owner_pid

    def __cinit__(self, *, ca_bundle=None, bint verify=True, double connect_timeout=10.0,
                  long low_speed_limit=1024, long low_speed_time=30, long buffer_size=1 << 20,
                  bint http2=True, bint follow_redirects=False, bint pin_version=True,
                  object max_retries=None, double retry_deadline=180.0, double backoff_base=0.1,
                  double backoff_cap=15.0, str user_agent="fastload"):
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
        cfg.pin_version = pin_version
        cfg.max_retries = -1 if max_retries is None else max_retries  # -1: no count limit
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
        # getpid() from C: at interpreter exit the os module may already be torn down.
        if self.ctx != NULL and self.owner_pid == getpid():
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
                "bytes": st.bytes, "writes": st.writes, "streams": st.streams}

    def read(self, object urls, object headers, list uris, const int64_t[:, ::1] table, object out,
             int64_t part_size, int max_inflight, double timeout, CancelToken cancel=None,
             object pins=None):
        """GET rows (src, offset, length, dst) of ``table`` from ``urls[src]`` into ``out``.

        ``urls`` and ``headers`` (None, or '\\n'-joined header lines) are sequences of bytes
        per source; ``uris`` name the sources in errors; ``cancel`` (a CancelToken) stops
        the read within 20 ms of being set, and so does Ctrl-C on the main thread.
        ``pins``: None, or per source None or (total, etag, last_modified, range_ignored)
        that every response must agree with. Releases the GIL throughout. Returns the
        sources whose server ignored Range (each was read with one whole-object GET).
        """
        cdef Py_ssize_t n = table.shape[0], i
        cdef int nsrc = len(urls)
        cdef const char **curls = NULL
        cdef const char **chdrs = NULL
        cdef fl_http_pin *cpins = NULL
        cdef const fl_range *cranges = NULL
        cdef const int64_t[:, ::1] rows
        cdef Py_buffer view
        cdef fl_http_opts opts
        cdef fl_error err
        cdef int rc
        cdef _SignalWatch watch = None
        if self.ctx == NULL or self.owner_pid != os.getpid():
            raise ValueError("the HTTP context is closed (or was inherited through fork)")
        if table.shape[1] != 4:
            raise ValueError("the range table must have 4 columns: src, offset, length, dst")
        if len(headers) != nsrc or len(uris) != nsrc or (pins is not None and len(pins) != nsrc):
            raise ValueError("urls, headers, uris and pins must have one entry per source")
        for i in range(n):
            if table[i, 0] < 0 or table[i, 0] >= nsrc:
                raise ValueError(f"range table row {i} names source {table[i, 0]}, not one of 0..{nsrc - 1}")
        if sizeof(fl_range) != 4 * sizeof(int64_t):
            raise RuntimeError("fl_range does not have the layout of an int64 table row")
        rows = table if sys.byteorder == "little" else _src_to_low_bytes(table)
        url_list = [bytes(u) for u in urls]  # held until the read ends: C keeps the pointers
        hdr_list = [None if h is None else bytes(h) for h in headers]
        curls = <const char **>malloc(sizeof(char *) * max(nsrc, 1))
        chdrs = <const char **>malloc(sizeof(char *) * max(nsrc, 1))
        cpins = <fl_http_pin *>calloc(max(nsrc, 1), sizeof(fl_http_pin))
        if n > 0:
            # An int64 row (src, offset, length, dst) has fl_range's layout: on a
            # little-endian machine src's low half is fl_range.src and its high half
            # (zero for any valid index) the padding, so the table is passed as is.
            cranges = <const fl_range *>&rows[0, 0]
        try:
            if curls == NULL or chdrs == NULL or cpins == NULL:
                raise MemoryError("cannot allocate the request table")
            for i in range(nsrc):
                curls[i] = <const char *>(<bytes>url_list[i])
                h = hdr_list[i]
                chdrs[i] = <const char *>(<bytes>h) if h is not None else NULL
                _fill_pin(&cpins[i], None if pins is None else pins[i])
            _get_out_buffer(out, &view)
            opts.part_size = part_size
            opts.max_inflight = max_inflight
            opts.timeout = timeout
            # C polls the token's flag itself, without the GIL (``cancel`` keeps the token alive).
            opts.cancel = &cancel.flag if cancel is not None else NULL
            opts.pins = cpins
            opts.interrupt = NULL
            opts.interrupt_arg = NULL
            if threading.get_ident() == threading.main_thread().ident:
                # only the main thread receives Ctrl-C: poll for it there (the GIL is taken
                # for a moment every 20 ms), so a stalled server cannot hold the user up
                watch = _SignalWatch()
                opts.interrupt = _poll_signals
                opts.interrupt_arg = <void *>watch
            try:
                with nogil:
                    rc = fl_http_read(self.ctx, curls, chdrs, nsrc, cranges, n, <char *>view.buf,
                                      view.len, &opts, &err)
            finally:
                PyBuffer_Release(&view)
            if watch is not None and watch.exc is not None:
                raise watch.exc
            if rc != 0:
                uri = uris[err.src_index] if 0 <= err.src_index < nsrc else (uris[0] if nsrc == 1 else f"{nsrc} sources")
                _raise_fl_error(&err, uri)
            return [i for i in range(nsrc) if cpins[i].range_mode == FL_RANGE_IGNORED]
        finally:
            free(curls)
            free(chdrs)
            free(cpins)
