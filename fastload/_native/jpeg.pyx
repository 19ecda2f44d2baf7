# distutils: sources = csrc/fl_jpeg.c csrc/fl_resample.c csrc/fl_image_batch.c csrc/fl_collate.c csrc/fl_parallel.c
"""Bridge to csrc/fl_jpeg.c and csrc/fl_image_batch.c: images -> one batch on native threads.

``load_libjpeg(path)`` binds libjpeg once per process (fastload.batch.libjpeg finds the
one Pillow's wheel ships). ``probe`` reads each image's header (format, size, EXIF
orientation) from a slab of encoded files; ``DecodePlan`` holds the C arguments that
fastload.batch.image_pipeline decided once per loader, and ``run`` decodes a batch with
the per-sample crop/flip table it computed, with the GIL released. This layer re-checks
every size and box it hands to C, so a bug above cannot make C read or write out of
bounds; C never raises: each image gets a status code and a message.
"""

from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer,
)
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc

from fastload._native.includes.collate cimport FL_DT_RAW, FL_ISA_AUTO, FL_ISA_AVX2, FL_ISA_GENERIC
from fastload._native.includes.fl cimport (
    fl_error, fl_error_clear,
)
from fastload._native.includes.jpeg cimport (
    FL_DCT_SCALE_ANY, FL_DCT_SCALE_OFF, FL_DCT_SCALE_POW2, FL_IMG_JPEG, FL_IMG_PIXELS,
    FL_IMG_PNG, FL_IMG_UNKNOWN, fl_image_batch_args, fl_image_batch_stats, fl_image_decode_batch,
    fl_image_info, fl_image_probe, fl_jpeg_abi_count, fl_jpeg_abi_name, fl_jpeg_abi_value,
    fl_jpeg_decoder, fl_jpeg_decoder_free, fl_jpeg_decoder_new, fl_jpeg_entropy_only,
    fl_jpeg_load, fl_jpeg_loaded,
)

include "thread_budget.pxi"

import os

import numpy as np

IMG_UNKNOWN = FL_IMG_UNKNOWN
IMG_JPEG = FL_IMG_JPEG
IMG_PNG = FL_IMG_PNG
IMG_PIXELS = FL_IMG_PIXELS
DCT_SCALING = {"off": FL_DCT_SCALE_OFF, "pow2": FL_DCT_SCALE_POW2, "any": FL_DCT_SCALE_ANY}
DCT_METHODS = {"islow": 0, "ifast": 1, "float": 2}
INFO_FIELDS = ("format", "width", "height", "components", "orientation", "progressive")
_ISA = {"auto": FL_ISA_AUTO, "generic": FL_ISA_GENERIC, "avx2": FL_ISA_AVX2}

assert sizeof(fl_image_info) == 4 * len(INFO_FIELDS)



def load_libjpeg(str path):
    """Bind the libjpeg at ``path`` (once per process; later calls keep the first)."""
    cdef char why[512]
    cdef bytes p = os.fsencode(path)
    if fl_jpeg_load(p, why, sizeof(why)) != 0:
        raise OSError(f"cannot load libjpeg from {path}: {why.decode('utf-8', 'replace')}")


def libjpeg_loaded():
    return bool(fl_jpeg_loaded())


def abi_table():
    """Sizes and field offsets of the libjpeg structs as compiled (for tests)."""
    return {fl_jpeg_abi_name(i).decode(): fl_jpeg_abi_value(i) for i in range(fl_jpeg_abi_count())}


cdef int _get_buffer(object obj, Py_buffer *view, int flags, str what) except -1:
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, TypeError) as exc:
        raise ValueError(f"{what}: {exc}") from None
    return 0


cdef int _sample_pointers(Py_buffer *slab, const int64_t[::1] offsets,
                          const int64_t[::1] lengths, const uint8_t **ptrs,
                          int64_t *lens) except -1:
    cdef Py_ssize_t i
    if offsets.shape[0] != lengths.shape[0]:
        raise ValueError(f"{offsets.shape[0]} offsets but {lengths.shape[0]} lengths")
    for i in range(offsets.shape[0]):
        # len - length, not offset + length: huge values must not overflow
        if lengths[i] < 0 or offsets[i] < 0 or offsets[i] > slab.len - lengths[i]:
            raise ValueError(f"image {i} at byte {offsets[i]} (+{lengths[i]} bytes) lies "
                             f"outside the slab ({slab.len} bytes)")
        ptrs[i] = <const uint8_t *>slab.buf + offsets[i]
        lens[i] = lengths[i]
    return 0


cdef dict _failures(fl_error *errs, int64_t n, int32_t[::1] codes):
    cdef dict messages = {}
    cdef int64_t i
    for i in range(n):
        codes[i] = errs[i].code
        if errs[i].code != 0:
            messages[i] = errs[i].msg.decode("utf-8", "replace")
    return messages


def probe(object slab, const int64_t[::1] offsets, const int64_t[::1] lengths, bint strict,
          int64_t max_pixels):
    """Headers of the encoded images at ``offsets`` of ``slab``.

    Returns (info int32 (n, 6) with columns INFO_FIELDS, codes int32 (n,), {i: message})."""
    cdef Py_buffer view
    cdef int64_t n = offsets.shape[0]
    cdef const uint8_t **ptrs = <const uint8_t **>malloc(sizeof(uint8_t *) * max(n, 1))
    cdef int64_t *lens = <int64_t *>malloc(sizeof(int64_t) * max(n, 1))
    cdef fl_error *errs = <fl_error *>calloc(max(n, 1), sizeof(fl_error))
    cdef int32_t[:, ::1] info_view
    cdef bint have_view = False
    if ptrs == NULL or lens == NULL or errs == NULL:
        free(ptrs)
        free(lens)
        free(errs)
        raise MemoryError("cannot allocate the probe tables")
    info = np.zeros((n, len(INFO_FIELDS)), dtype=np.int32)
    codes = np.zeros(n, dtype=np.int32)
    try:
        _get_buffer(slab, &view, PyBUF_SIMPLE, "slab")
        have_view = True
        _sample_pointers(&view, offsets, lengths, ptrs, lens)
        if n:
            info_view = info
            with nogil:
                fl_image_probe(ptrs, lens, n, strict, max_pixels,
                               <fl_image_info *>&info_view[0, 0], errs)
        messages = _failures(errs, n, codes)
    finally:
        if have_view:
            PyBuffer_Release(&view)
        free(ptrs)
        free(lens)
        free(errs)
    return info, codes, messages


cdef class DecodePlan:
    """One output layout for csrc/fl_image_batch.c: the C arguments, checked once.

    fastload.batch.image_pipeline decides every field (orientation, crop semantics,
    DCT scaling, decoder settings, pixel limit, output dtype/layout/affine, threads);
    each batch then hands its encoded bytes, crop table and output to :meth:`run`.
    """
    cdef fl_image_batch_args args
    cdef readonly int dst_itemsize
    cdef object _scale
    cdef object _shift

    def __init__(self, *, bint apply_orientation, bint clip_to_box, bint antialias,
                 str dct_scaling, str dct_method, bint fancy_upsampling, bint strict,
                 int64_t max_pixels, bint convert, int dst_dtype, bint dst_channels_last,
                 int dst_itemsize, scale=None, shift=None, str isa="auto", int nthreads=0,
                 bint timing=False):
        cdef const float[::1] sc
        cdef const float[::1] sh
        if dct_scaling not in DCT_SCALING:
            raise ValueError(f"dct_scaling={dct_scaling!r} is not one of {', '.join(DCT_SCALING)}")
        if dct_method not in DCT_METHODS:
            raise ValueError(f"dct_method={dct_method!r} is not one of {', '.join(DCT_METHODS)}")
        if isa not in _ISA:
            raise ValueError(f"isa={isa!r} is not one of {', '.join(_ISA)}")
        if max_pixels < 0 or nthreads < 0 or dst_itemsize not in (1, 2, 4):
            raise ValueError("max_pixels and nthreads must be >= 0, dst_itemsize 1, 2 or 4")
        self.args.apply_orientation = apply_orientation
        self.args.clip_to_box = clip_to_box
        self.args.antialias = antialias
        self.args.dct_scaling = DCT_SCALING[dct_scaling]
        self.args.jpeg.dct_method = DCT_METHODS[dct_method]
        self.args.jpeg.fancy_upsampling = fancy_upsampling
        self.args.jpeg.strict = strict
        self.args.max_pixels = max_pixels
        self.args.convert = convert
        self.args.dst_dtype = dst_dtype
        self.args.dst_channels_last = dst_channels_last
        self.args.isa = _ISA[isa]
        self.args.nthreads = nthreads
        self.args.timing = timing
        self.args.scale = NULL
        self.args.shift = NULL
        self.dst_itemsize = dst_itemsize
        if not convert and dst_itemsize != 1:
            raise ValueError("unconverted (uint8 HWC) output has 1-byte elements")
        if convert and dst_dtype != FL_DT_RAW:
            if scale is None or shift is None:
                raise ValueError("scale and shift must hold 3 values")
            self._scale = np.ascontiguousarray(scale, dtype=np.float32)
            self._shift = np.ascontiguousarray(shift, dtype=np.float32)
            sc = self._scale
            sh = self._shift
            if sc.shape[0] != 3 or sh.shape[0] != 3:
                raise ValueError("scale and shift must hold 3 values")
            self.args.scale = &sc[0]
            self.args.shift = &sh[0]

    def run(self, object slab, const int64_t[::1] offsets, const int64_t[::1] lengths,
            list pixels, const int32_t[:, ::1] info, const double[:, ::1] boxes,
            const uint8_t[::1] flips, const int32_t[:, ::1] out_size,
            const int64_t[::1] dst_offsets, object out):
        """Decode image i (``pixels[i]`` when not None: a decoded (h, w, 3) uint8 array,
        else the JPEG at ``offsets[i]`` of ``slab``) into ``out`` at ``dst_offsets[i]``.

        Returns (codes int32 (n,), {i: message} of the failures, stats dict)."""
        cdef Py_buffer slab_view, out_view
        cdef Py_buffer *pviews = NULL
        cdef bint have_slab = False, have_out = False
        cdef int64_t n = offsets.shape[0], i, acquired = 0, need, w, h, dw, dh
        cdef const uint8_t **ptrs = NULL
        cdef int64_t *lens = NULL
        cdef fl_error *errs = NULL
        cdef fl_image_batch_args args = self.args
        cdef fl_image_batch_stats st
        cdef int o
        for name, rows in (("lengths", lengths.shape[0]), ("info", info.shape[0]),
                           ("boxes", boxes.shape[0]), ("flips", flips.shape[0]),
                           ("out_size", out_size.shape[0]), ("dst_offsets", dst_offsets.shape[0]),
                           ("pixels", len(pixels))):
            if rows != n:
                raise ValueError(f"{name} has {rows} rows for {n} images")
        if n and (info.shape[1] != len(INFO_FIELDS) or boxes.shape[1] != 4 or out_size.shape[1] != 2):
            raise ValueError("info must be (n, 6), boxes (n, 4), out_size (n, 2)")
        codes = np.zeros(n, dtype=np.int32)
        if n == 0:
            return codes, {}, {"threads": 0, "failed": 0}
        ptrs = <const uint8_t **>malloc(sizeof(uint8_t *) * n)
        lens = <int64_t *>malloc(sizeof(int64_t) * n)
        errs = <fl_error *>calloc(n, sizeof(fl_error))
        pviews = <Py_buffer *>calloc(n, sizeof(Py_buffer))
        held = [False] * n
        try:
            if ptrs == NULL or lens == NULL or errs == NULL or pviews == NULL:
                raise MemoryError("cannot allocate the decode tables")
            _get_buffer(out, &out_view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
            have_out = True
            _get_buffer(slab, &slab_view, PyBUF_SIMPLE, "slab")
            have_slab = True
            _sample_pointers(&slab_view, offsets, lengths, ptrs, lens)
            for i in range(n):
                w = info[i, 1]
                h = info[i, 2]
                o = info[i, 4] if args.apply_orientation else 1
                dw, dh = (h, w) if o >= 5 else (w, h)
                if pixels[i] is not None:
                    _get_buffer(pixels[i], &pviews[i], PyBUF_C_CONTIGUOUS, f"pixels of image {i}")
                    held[i] = True
                    if info[i, 0] != FL_IMG_PIXELS or w < 1 or h < 1 or pviews[i].len != w * h * 3:
                        raise ValueError(f"pixels of image {i}: {pviews[i].len} bytes, info says "
                                         f"{w} x {h} x 3 (format {info[i, 0]})")
                    ptrs[i] = <const uint8_t *>pviews[i].buf
                    lens[i] = pviews[i].len
                elif info[i, 0] != FL_IMG_JPEG or w < 1 or h < 1:
                    raise ValueError(f"image {i}: format {info[i, 0]} size {w} x {h} is not a "
                                     "probed JPEG (others need decoded pixels)")
                if not (isfinite(boxes[i, 0]) and isfinite(boxes[i, 1]) and isfinite(boxes[i, 2])
                        and isfinite(boxes[i, 3]) and 0 <= boxes[i, 0] < boxes[i, 2] <= dw
                        and 0 <= boxes[i, 1] < boxes[i, 3] <= dh):
                    raise ValueError(f"image {i}: box {list(boxes[i])} is not inside its "
                                     f"{dw} x {dh} pixels")
                if out_size[i, 0] < 1 or out_size[i, 1] < 1:
                    raise ValueError(f"image {i}: output size {list(out_size[i])} is empty")
                need = <int64_t>out_size[i, 0] * out_size[i, 1] * 3 * self.dst_itemsize
                if dst_offsets[i] < 0 or dst_offsets[i] > out_view.len - need:
                    raise ValueError(f"image {i}: {need} output bytes at {dst_offsets[i]} lie "
                                     f"outside out ({out_view.len} bytes)")
            args.n = n
            args.data = ptrs
            args.len = lens
            args.info = <const fl_image_info *>&info[0, 0]
            args.box = &boxes[0, 0]
            args.flip = &flips[0]
            args.out_size = &out_size[0, 0]
            args.dst_offset = &dst_offsets[0]
            args.dst = <char *>out_view.buf
            with nogil:
                fl_image_decode_batch(&args, errs, &st)
            messages = _failures(errs, n, codes)
        finally:
            if pviews != NULL:
                for i in range(n):
                    if held[i]:
                        PyBuffer_Release(&pviews[i])
            free(pviews)
            free(ptrs)
            free(lens)
            free(errs)
            if have_slab:
                PyBuffer_Release(&slab_view)
            if have_out:
                PyBuffer_Release(&out_view)
        return codes, messages, {
            "threads": st.threads,
            "failed": st.failed,
            "dct_scaled": st.scaled,
            "decoded_pixels": st.decoded_pixels,
            "source_pixels": st.source_pixels,
            "decode_s": st.decode_ns * 1e-9,
            "resample_s": st.resample_ns * 1e-9,
            "convert_s": st.convert_ns * 1e-9,
        }


def entropy_only(object data):
    """Entropy-decode one JPEG (Huffman only, no IDCT), for per-stage benchmarks."""
    cdef Py_buffer view
    cdef fl_error err
    cdef int rc
    cdef fl_jpeg_decoder *d = fl_jpeg_decoder_new()
    if d == NULL:
        raise MemoryError("cannot allocate a JPEG decoder")
    _get_buffer(data, &view, PyBUF_SIMPLE, "data")
    fl_error_clear(&err)
    try:
        with nogil:
            rc = fl_jpeg_entropy_only(d, <const uint8_t *>view.buf, view.len, &err)
        if rc != 0:
            raise ValueError(err.msg.decode("utf-8", "replace"))
    finally:
        PyBuffer_Release(&view)
        fl_jpeg_decoder_free(d)
