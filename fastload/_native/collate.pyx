# distutils: sources = csrc/fl_collate.c csrc/fl_parallel.c
"""Bridge to csrc/fl_collate.c: the fused gather / transpose / convert kernel.

fastload.batch.collate checks every argument first and builds one CollatePlan per
batch layout; this layer only re-checks the sizes it hands to C (so a bug above cannot
make C read or write out of bounds), holds the buffers, and releases the GIL around
the kernel.
"""

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
    PyObject_GetBuffer,
)
from libc.stdint cimport INT64_MAX, int64_t
from libc.stdlib cimport calloc, free, malloc

from fastload._native.includes.collate cimport (
    FL_DT_BF16, FL_DT_F16, FL_DT_F32, FL_DT_RAW, FL_DT_U8, FL_DT_U16, FL_ISA_AUTO, FL_ISA_AVX2,
    FL_ISA_GENERIC, FL_STORES_AUTO, FL_STORES_PLAIN, FL_STORES_STREAM, fl_collate, fl_collate_args, fl_collate_best_isa, fl_collate_cpu_count,
    fl_collate_stats, fl_gather_bytes,
)
from fastload._native.includes.fl cimport (
    fl_error, fl_error_clear,
)

include "native_error.pxi"
include "thread_budget.pxi"
include "plain_buffer.pxi"

import numpy as np

DT_RAW = FL_DT_RAW
DT_U8 = FL_DT_U8
DT_U16 = FL_DT_U16
DT_F32 = FL_DT_F32
DT_F16 = FL_DT_F16
DT_BF16 = FL_DT_BF16

ISA_CODES = {"auto": FL_ISA_AUTO, "generic": FL_ISA_GENERIC, "avx2": FL_ISA_AVX2}
_ISA_NAMES = {FL_ISA_GENERIC: "generic", FL_ISA_AVX2: "avx2"}
# how the kernel writes the batch (fl_collate.h: fl_stores)
STORES_CODES = {"auto": FL_STORES_AUTO, "plain": FL_STORES_PLAIN, "stream": FL_STORES_STREAM}


def best_isa():
    """The instruction set the kernel uses on this CPU: "avx2" or "generic"."""
    return _ISA_NAMES[fl_collate_best_isa()]


def cpu_count():
    """CPUs this process may run on (what num_threads=0 may use)."""
    return fl_collate_cpu_count()



cdef int _get_buffer(object obj, Py_buffer *view, int flags, str what) except -1:
    """``obj``'s memory in ``view``; only plain data (never object or pointer arrays)."""
    try:
        PyObject_GetBuffer(obj, view, flags | PyBUF_FORMAT)
    except (BufferError, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from None
    _check_plain(view, what)
    return 0


cdef void _release_samples(Py_buffer *views, Py_ssize_t acquired, const char **ptrs):
    """Release the sample views taken so far and free the sample tables."""
    cdef Py_ssize_t i
    for i in range(acquired):
        PyBuffer_Release(&views[i])
    free(views)
    free(<void *>ptrs)


cdef inline bint _overlaps(const char *p, Py_ssize_t n, Py_buffer *out):
    cdef const char *o = <const char *>out.buf
    return n > 0 and out.len > 0 and p < o + out.len and o < p + n


cdef class CollatePlan:
    """One batch layout for csrc/fl_collate.c: the C argument struct, checked once.

    fastload.batch.collate decides every field (layout, dtypes, per-channel affine,
    threads) when a loader starts or a batch shape is first seen; each batch then only
    hands its sample pointers and output buffer to :meth:`run`. The sizes handed to C are
    re-checked per batch, so a bug above cannot make C read or write out of bounds.
    """
    cdef fl_collate_args args
    cdef readonly int64_t sample_in
    cdef readonly int64_t sample_out
    cdef object _scale   # float32 arrays whose memory args.scale / args.shift point into
    cdef object _shift

    def __init__(self, *, int64_t pixels, int64_t channels, bint src_channels_last,
                 bint dst_channels_last, int src_dtype, int dst_dtype, int src_itemsize,
                 int dst_itemsize, scale=None, shift=None, int64_t unit_bytes=0,
                 int nthreads=0, str isa="auto"):
        cdef const float[::1] sc
        cdef const float[::1] sh
        if pixels < 0 or channels < 0:
            raise ValueError(f"pixels={pixels} and channels={channels} must be >= 0")
        if isa not in ISA_CODES:
            raise ValueError(f"isa={isa!r} is not one of {', '.join(ISA_CODES)}")
        self.args.src = NULL
        self.args.dst = NULL
        self.args.n = 0
        self.args.pixels = pixels
        self.args.channels = channels
        self.args.src_channels_last = src_channels_last
        self.args.dst_channels_last = dst_channels_last
        self.args.src_dtype = src_dtype
        self.args.dst_dtype = dst_dtype
        self.args.elem_size = src_itemsize
        self.args.scale = NULL
        self.args.shift = NULL
        self.args.unit_bytes = unit_bytes
        self.args.nthreads = nthreads
        self.args.isa = ISA_CODES[isa]
        self.args.stores = FL_STORES_AUTO
        # Python ints: an int64 product of a huge shape would wrap around to a small size
        # that the checks of run() would then pass, and C would move the real one
        for what, itemsize in (("in", src_itemsize), ("out", dst_itemsize)):
            if itemsize < 0 or int(pixels) * int(channels) * int(itemsize) > INT64_MAX:
                raise ValueError(f"a sample of {pixels} pixels x {channels} channels x "
                                 f"{itemsize} bytes is more than {INT64_MAX} bytes ({what})")
        self.sample_in = pixels * channels * src_itemsize
        self.sample_out = pixels * channels * dst_itemsize
        if src_dtype != FL_DT_RAW:
            if scale is None or shift is None:
                raise ValueError(f"scale and shift must hold {channels} values")
            self._scale = np.ascontiguousarray(scale, dtype=np.float32)
            self._shift = np.ascontiguousarray(shift, dtype=np.float32)
            sc = self._scale
            sh = self._shift
            # an empty channel dimension still has one (unused) value
            if sc.shape[0] != max(channels, 1) or sh.shape[0] != max(channels, 1):
                raise ValueError(f"scale and shift must hold {channels} values")
            self.args.scale = &sc[0]
            self.args.shift = &sh[0]

    def run(self, object samples, object slab, const int64_t[::1] offsets, object out,
            str stores="auto"):
        """Collate into ``out``: either ``samples`` (contiguous buffers, one per sample) or
        ``slab`` with one byte offset per sample; ``stores``: "auto", "plain" or "stream"
        (fl_collate.h). Returns the kernel's stats."""
        cdef Py_buffer out_view, slab_view
        cdef Py_buffer *views = NULL
        cdef const char **ptrs = NULL
        cdef int64_t i, n, acquired = 0
        cdef bint have_out = False, have_slab = False
        cdef fl_collate_args args = self.args
        cdef fl_collate_stats stats
        cdef fl_error err
        cdef int rc
        if stores not in STORES_CODES:
            raise ValueError(f"stores={stores!r} is not one of {', '.join(STORES_CODES)}")
        args.stores = STORES_CODES[stores]
        n = len(samples) if slab is None else (offsets.shape[0] if offsets is not None else 0)
        if self.sample_out and n > INT64_MAX // self.sample_out:
            # n * sample_out would wrap around (and a small `out` would pass the size check)
            raise ValueError(f"a batch of {n} samples of {self.sample_out} bytes is more than "
                             f"{INT64_MAX} bytes")
        ptrs = <const char **>malloc(sizeof(char *) * max(n, 1))
        if ptrs == NULL:
            raise MemoryError("cannot allocate the sample table")
        try:
            _get_buffer(out, &out_view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
            have_out = True
            if out_view.len != n * self.sample_out:
                raise ValueError(f"out holds {out_view.len} bytes, the batch needs {n * self.sample_out}")
            if slab is not None:
                _get_buffer(slab, &slab_view, PyBUF_SIMPLE, "src")
                have_slab = True
                for i in range(n):
                    # len - sample_in, not offset + sample_in: a huge offset would overflow
                    if offsets[i] < 0 or offsets[i] > slab_view.len - self.sample_in:
                        raise ValueError(f"sample {i} at byte offset {offsets[i]} (+{self.sample_in} "
                                         f"bytes) lies outside src ({slab_view.len} bytes)")
                    ptrs[i] = <const char *>slab_view.buf + offsets[i]
                if _overlaps(<const char *>slab_view.buf, slab_view.len, &out_view):
                    raise ValueError("out overlaps src")
            else:
                views = <Py_buffer *>calloc(max(n, 1), sizeof(Py_buffer))
                if views == NULL:
                    raise MemoryError("cannot allocate the sample table")
                for i in range(n):
                    _get_buffer(samples[i], &views[i], PyBUF_C_CONTIGUOUS, f"sample {i}")
                    acquired += 1
                    if views[i].len < self.sample_in:
                        raise ValueError(f"sample {i} holds {views[i].len} bytes, expected {self.sample_in}")
                    ptrs[i] = <const char *>views[i].buf
                    if _overlaps(ptrs[i], self.sample_in, &out_view):
                        raise ValueError(f"out overlaps sample {i}")
            args.src = ptrs
            args.dst = <char *>out_view.buf
            args.n = n
            fl_error_clear(&err)
            with nogil:
                rc = fl_collate(&args, &stats, &err)
            if rc != 0:
                _raise_fl_error(&err, "collate")
        finally:
            _release_samples(views, acquired, ptrs)
            if have_slab:
                PyBuffer_Release(&slab_view)
            if have_out:
                PyBuffer_Release(&out_view)
        return {
            "work_units": stats.units,
            "unit_bytes": stats.unit_bytes,
            "threads": stats.threads,
            "isa": _ISA_NAMES.get(stats.isa, "generic"),
            "transposed": bool(stats.transposed),
            "streamed": bool(stats.streamed),
        }


def gather_ragged(object samples, int nthreads, int64_t unit_bytes):
    """Pack the bytes of each buffer in ``samples`` back to back.

    Returns (packed uint8 array, int64 offsets of length n + 1)."""
    cdef Py_ssize_t n = len(samples), i, acquired = 0
    cdef Py_buffer *views = <Py_buffer *>calloc(max(n, 1), sizeof(Py_buffer))
    cdef const char **ptrs = <const char **>malloc(sizeof(char *) * max(n, 1))
    cdef int64_t[::1] offsets_view
    cdef unsigned char[::1] packed_view
    cdef fl_error err
    cdef int rc
    if views == NULL or ptrs == NULL:
        free(views)
        free(ptrs)
        raise MemoryError("cannot allocate the sample table")
    try:
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets_view = offsets
        for i in range(n):
            try:
                PyObject_GetBuffer(samples[i], &views[i], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
            except (BufferError, TypeError) as exc:
                raise TypeError(f"sample {i} ({type(samples[i]).__name__}) is not a contiguous "
                                f"bytes-like object: {exc}") from None
            _check_plain(&views[i], f"sample {i}")
            acquired += 1
            ptrs[i] = <const char *>views[i].buf
            offsets_view[i + 1] = offsets_view[i] + views[i].len
        packed = np.empty(offsets_view[n], dtype=np.uint8)
        if offsets_view[n] > 0:
            packed_view = packed
            fl_error_clear(&err)
            with nogil:
                rc = fl_gather_bytes(ptrs, &offsets_view[0], n, <char *>&packed_view[0],
                                     nthreads, unit_bytes, &err)
            if rc != 0:
                _raise_fl_error(&err, "collate_ragged")
    finally:
        _release_samples(views, acquired, ptrs)
    return packed, offsets
