# C declarations of the kernels in csrc/, shared by every Cython bridge.
from libc.stdint cimport int32_t, int64_t


cdef extern from "fl_error.h" nogil:
    # The status codes every kernel returns; fastload._native.status turns them into
    # the Python enum that fastload.errors keys its exception table by.
    ctypedef enum fl_status:
        FL_OK
        FL_E_NOT_FOUND
        FL_E_PERMISSION
        FL_E_RANGE
        FL_E_INVALID
        FL_E_NOMEM
        FL_E_IO
        FL_E_TIMEOUT
        FL_E_CONNECTION
        FL_E_HTTP
        FL_E_SHORT
        FL_E_CANCELLED
        FL_E_UNSUPPORTED
        FL_E_TLS
        FL_E_CORRUPT
        FL_E_TOO_LARGE
        FL_E_FORMAT
        FL_E_CHANGED
        FL_E_NOT_REGULAR

    ctypedef struct fl_error:
        int code
        int sys_errno
        long http_status
        int curl_code
        int src_index
        int64_t offset
        int64_t length
        int64_t obj_size
        int attempts
        char msg[256]
    void fl_error_clear(fl_error *e)


cdef extern from "fl_range.h" nogil:
    ctypedef struct fl_range:
        int32_t src
        int64_t offset
        int64_t length
        int64_t dst


cdef extern from "fl_buffer.h" nogil:
    enum:
        FL_ALIGN
        FL_PIN_NONE
        FL_PIN_MLOCK
        FL_PIN_CUDA
    void *fl_buffer_alloc(size_t size, int hugepages, int prefault, size_t *mapped_size,
                          int *err_errno)
    void fl_buffer_free(void *p, size_t mapped_size)
    int fl_buffer_pin(void *p, size_t size, int try_cuda, char *why, size_t why_len)
    void fl_buffer_unpin(void *p, size_t size, int mode)
    int fl_cuda_available()


cdef extern from "fl_parallel.h" nogil:
    # the calling thread's thread budget (0: no cap); each module linking fl_parallel.c
    # holds its own copy
    void fl_thread_budget_set(int nthreads)
    int fl_thread_budget()


cdef extern from "fl_file_reader.h" nogil:
    # posix_fadvise policies of the file reader (page_cache_mode)
    enum:
        FL_CACHE_AUTO
        FL_CACHE_SEQUENTIAL
        FL_CACHE_RANDOM
        FL_CACHE_DONT_NEED
        FL_CACHE_NORMAL

    enum:
        FL_INLINE_MAX_BYTES
        FL_DIRECT_MIN_PART

    ctypedef struct fl_file_opts:
        int64_t part_size
        int max_inflight
        int direct
        int cache_mode
        volatile int *cancel
        double timeout_s
        int64_t cache_fit

    ctypedef struct fl_file_reader:
        pass

    ctypedef struct fl_file_stats:
        int64_t reads
        int64_t parts
        int64_t bytes
        int64_t inline_reads
        int64_t inline_starts
        int64_t opens
        int64_t reopens
        int64_t hits
        int64_t direct_parts
        int64_t ahead_parts
        int64_t open_files
        int64_t threads

    fl_file_reader *fl_file_reader_new(int max_open)
    void fl_file_reader_close(fl_file_reader *r)
    void fl_file_reader_free(fl_file_reader *r)
    void fl_file_reader_stats(fl_file_reader *r, fl_file_stats *out)
    int64_t fl_file_size(const char *path, fl_error *err)
    int fl_file_read(fl_file_reader *reader, const char *const *paths, int npaths,
                     const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                     const fl_file_opts *opts, fl_error *err, int64_t *nparts)


cdef extern from "fl_range_check.h" nogil:
    ctypedef struct fl_range_summary:
        int64_t bad_row
        int64_t end_row
        int64_t end
        int64_t total
    void fl_range_check(const int64_t *table, int64_t nrows, int64_t nsources,
                        fl_range_summary *out)


cdef extern from "fl_cancel.h" nogil:
    int fl_cancel_requested(const volatile int *flag)
    void fl_cancel_request(volatile int *flag)


cdef extern from "fl_plan.h" nogil:
    int fl_plan_pack(const int64_t *src, const int64_t *offset, const int64_t *length,
                     int64_t n, int64_t *offsets_out, int64_t *nbytes, int64_t *used_out,
                     int64_t *nused, int64_t *table_out, int64_t *nrows, fl_error *err)


cdef extern from "fl_clock.h" nogil:
    double fl_clock_now()
    int fl_clock_uses_tsc()


cdef extern from "fl_stage_table.h" nogil:
    enum:
        FL_STAGE_BATCH_COLUMNS
        FL_STAGE_COLUMNS
    ctypedef struct fl_stage_table:
        int64_t capacity
        int64_t made
        int64_t taken
        int64_t nbytes
        int64_t samples
        double totals[FL_STAGE_COLUMNS]
    fl_status fl_stage_table_init(fl_stage_table *t, int64_t capacity)
    void fl_stage_table_free(fl_stage_table *t)
    fl_status fl_stage_table_made(fl_stage_table *t, int64_t k, const double *seconds,
                                  int64_t nbytes, int64_t samples)
    fl_status fl_stage_table_taken(fl_stage_table *t, int64_t k, double wait, double step)
    fl_status fl_stage_table_percentiles(const fl_stage_table *t, double *p50, double *p99)
