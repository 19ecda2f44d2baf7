# C declarations of the image kernels: the libjpeg binding (csrc/fl_jpeg.h) and the
# batch driver that decodes, crops, resamples and converts (csrc/fl_image_batch.h).
from libc.stdint cimport int32_t, int64_t, uint8_t

from fastload._native.includes.fl cimport fl_error


cdef extern from "fl_jpeg.h" nogil:
    ctypedef struct fl_jpeg_settings:
        int dct_method
        int fancy_upsampling
        int strict

    ctypedef struct fl_jpeg_decoder:
        pass

    int fl_jpeg_load(const char *path, char *why, size_t why_len)
    int fl_jpeg_loaded()
    int fl_jpeg_abi_count()
    const char *fl_jpeg_abi_name(int i)
    long fl_jpeg_abi_value(int i)
    fl_jpeg_decoder *fl_jpeg_decoder_new()
    void fl_jpeg_decoder_free(fl_jpeg_decoder *d)
    int fl_jpeg_entropy_only(fl_jpeg_decoder *d, const uint8_t *data, int64_t len, fl_error *err)


cdef extern from "fl_image_batch.h" nogil:
    enum:
        FL_IMG_UNKNOWN
        FL_IMG_JPEG
        FL_IMG_PNG
        FL_IMG_PIXELS
        FL_DCT_SCALE_OFF
        FL_DCT_SCALE_POW2
        FL_DCT_SCALE_ANY

    ctypedef struct fl_image_info:
        int32_t format
        int32_t width
        int32_t height
        int32_t components
        int32_t orientation
        int32_t progressive

    ctypedef struct fl_image_batch_args:
        int64_t n
        const uint8_t *const *data
        const int64_t *len
        const fl_image_info *info
        const double *box
        const uint8_t *flip
        const int32_t *out_size
        const int64_t *dst_offset
        char *dst
        int apply_orientation
        int clip_to_box
        int antialias
        int dct_scaling
        fl_jpeg_settings jpeg
        int64_t max_pixels
        int convert
        int dst_dtype
        int dst_channels_last
        const float *scale
        const float *shift
        int isa
        int nthreads
        int timing

    ctypedef struct fl_image_batch_stats:
        int threads
        int64_t failed
        int64_t scaled
        int64_t decoded_pixels
        int64_t source_pixels
        int64_t decode_ns
        int64_t resample_ns
        int64_t convert_ns

    int64_t fl_image_probe(const uint8_t *const *data, const int64_t *len, int64_t n, int strict,
                           int64_t max_pixels, fl_image_info *info, fl_error *errs)
    int fl_image_decode_batch(const fl_image_batch_args *a, fl_error *errs,
                              fl_image_batch_stats *st)
