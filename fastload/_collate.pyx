# distutils: sources = csrc/fl_collate.c csrc/fl_parallel.c
"""Bridge to csrc/fl_collate.c: the fused gather / transpose / convert kernel.

fastload.collate checks every argument first; this layer only re-checks the
sizes it hands to C (so a bug above cannot make C read or write out of bounds),
holds the buffers, and releases the GIL around the kernel.
"""

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer,
)
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free, malloc

from fastload.includes.collate cimport (
    FL_DT_BF16, FL_DT_F16, FL_DT_F32, FL_DT_RAW, FL_DT_U8, FL_DT_U16, FL_ISA_AUTO, FL_ISA_AVX2,
    FL_ISA_GENERIC, fl_collate, fl_collate_args, fl_collate_best_isa, fl_collate_cpu_count,
    fl_collate_stats, fl_gather_bytes,
)
from fastload.includes.fl cimport fl_error, fl_error_clear

include "_native_error.pxi"

import numpy as np

DT_RAW = FL_DT_RAW
DT_U8 = FL_DT_U8
DT_U16 = FL_DT_U16
DT_F32 = FL_DT_F32
DT_F16 = FL_DT_F16
DT_BF16 = FL_DT_BF16

ISA_CODES = {"auto": FL_ISA_AUTO, "generic": FL_ISA_GENERIC, "avx2": FL_ISA_AVX2}
_ISA_NAMES = {FL_ISA_GENERIC: "generic", FL_ISA_AVX2: "avx2"}


def best_isa():
    """The instruction set the kernel uses on this CPU: "avx2" or "generic"."""
    return _ISA_NAMES[fl_collate_best_isa()]


def cpu_count():
    """CPUs this process may run on (what num_threads=0 may use)."""
    return fl_collate_cpu_count()


cdef int _get_buffer(object obj, Py_buffer *view, int flags, str what) except -1:
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from None
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


def collate_native(object samples, object slab, const int64_t[::1] offsets, object out,
                   int64_t n, int64_t pixels, int64_t channels, bint src_channels_last,
                   bint dst_channels_last, int src_dtype, int dst_dtype, int elem_size,
                   int src_itemsize, int dst_itemsize, const float[::1] scale,
                   const float[::1] shift, int64_t unit_bytes, int nthreads, str isa):
    """Collate n samples into ``out``: either ``samples`` (n contiguous buffers)
    or ``slab`` with one byte offset per sample. Returns the kernel's stats."""
    cdef int64_t sample_in = pixels * channels * src_itemsize
    cdef int64_t sample_out = pixels * channels * dst_itemsize
    cdef Py_buffer out_view, slab_view
    cdef Py_buffer *views = NULL
    cdef const char **ptrs = NULL
    cdef int64_t i, acquired = 0
    cdef bint have_out = False, have_slab = False
    cdef fl_collate_args args
    cdef fl_collate_stats stats
    cdef fl_error err
    cdef int rc
    if src_dtype != FL_DT_RAW and (scale is None or shift is None or
                                   scale.shape[0] != channels or shift.shape[0] != channels):
        raise ValueError(f"scale and shift must hold {channels} values")
    ptrs = <const char **>malloc(sizeof(char *) * max(n, 1))
    if ptrs == NULL:
        raise MemoryError("cannot allocate the sample table")
    try:
        _get_buffer(out, &out_view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
        have_out = True
        if out_view.len != n * sample_out:
            raise ValueError(f"out holds {out_view.len} bytes, the batch needs {n * sample_out}")
        if slab is not None:
            _get_buffer(slab, &slab_view, PyBUF_SIMPLE, "src")
            have_slab = True
            if offsets is None or offsets.shape[0] != n:
                raise ValueError(f"need {n} sample offsets")
            for i in range(n):
                # len - sample_in, not offset + sample_in: a huge offset would overflow
                if offsets[i] < 0 or offsets[i] > slab_view.len - sample_in:
                    raise ValueError(f"sample {i} at byte offset {offsets[i]} (+{sample_in} "
                                     f"bytes) lies outside src ({slab_view.len} bytes)")
                ptrs[i] = <const char *>slab_view.buf + offsets[i]
            if _overlaps(<const char *>slab_view.buf, slab_view.len, &out_view):
                raise ValueError("out overlaps src")
        else:
            if len(samples) != n:
                raise ValueError(f"need {n} samples, got {len(samples)}")
            views = <Py_buffer *>calloc(max(n, 1), sizeof(Py_buffer))
            if views == NULL:
                raise MemoryError("cannot allocate the sample table")
            for i in range(n):
                _get_buffer(samples[i], &views[i], PyBUF_C_CONTIGUOUS, f"sample {i}")
                acquired += 1
                if views[i].len < sample_in:
                    raise ValueError(f"sample {i} holds {views[i].len} bytes, expected {sample_in}")
                ptrs[i] = <const char *>views[i].buf
                if _overlaps(ptrs[i], sample_in, &out_view):
                    raise ValueError(f"out overlaps sample {i}")
        args.src = ptrs
        args.dst = <char *>out_view.buf
        args.n = n
        args.pixels = pixels
        args.channels = channels
        args.src_channels_last = src_channels_last
        args.dst_channels_last = dst_channels_last
        args.src_dtype = src_dtype
        args.dst_dtype = dst_dtype
        args.elem_size = elem_size
        args.scale = &scale[0] if scale is not None and scale.shape[0] > 0 else NULL
        args.shift = &shift[0] if shift is not None and shift.shape[0] > 0 else NULL
        args.unit_bytes = unit_bytes
        args.nthreads = nthreads
        args.isa = ISA_CODES[isa]
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
                PyObject_GetBuffer(samples[i], &views[i], PyBUF_C_CONTIGUOUS)
            except (BufferError, TypeError) as exc:
                raise TypeError(f"sample {i} ({type(samples[i]).__name__}) is not a contiguous "
                                f"bytes-like object: {exc}") from None
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
