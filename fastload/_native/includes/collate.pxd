# C declarations of the collate kernel (csrc/fl_collate.h).
from libc.stdint cimport int64_t

from fastload._native.includes.fl cimport fl_error


cdef extern from "fl_collate.h" nogil:
    enum:
        FL_DT_RAW
        FL_DT_U8
        FL_DT_U16
        FL_DT_F32
        FL_DT_F16
        FL_DT_BF16
        FL_ISA_AUTO
        FL_ISA_GENERIC
        FL_ISA_AVX2
        FL_STORES_AUTO
        FL_STORES_PLAIN
        FL_STORES_STREAM

    ctypedef struct fl_collate_args:
        const char *const *src
        char *dst
        int64_t n
        int64_t pixels
        int64_t channels
        int src_channels_last
        int dst_channels_last
        int src_dtype
        int dst_dtype
        int elem_size
        const float *scale
        const float *shift
        int64_t unit_bytes
        int nthreads
        int isa
        int stores

    ctypedef struct fl_collate_stats:
        int64_t units
        int64_t unit_bytes
        int threads
        int isa
        int transposed
        int streamed

    int fl_collate(const fl_collate_args *a, fl_collate_stats *stats, fl_error *err)
    int fl_gather_bytes(const char *const *src, const int64_t *start, int64_t n, char *dst,
                        int nthreads, int64_t unit_bytes, fl_error *err)
    int fl_collate_best_isa()
    int fl_collate_cpu_count()
