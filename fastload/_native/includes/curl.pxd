# C declarations of the libcurl binding (csrc/fl_curl.h), the transfer driver
# (csrc/fl_http_reader.h) and its retry rule (csrc/fl_http_retry.h).
from libc.stdint cimport int64_t, uint64_t

from fastload._native.includes.fl cimport fl_error, fl_range


cdef extern from "fl_curl.h" nogil:
    int fl_curl_load(const char *path, char *why, size_t why_len)
    const char *fl_curl_version()
    int fl_curl_abi_count()
    const char *fl_curl_abi_name(int i)
    long fl_curl_abi_value(int i)


cdef extern from "fl_http_reader.h" nogil:
    ctypedef struct fl_http_config:
        const char *ca_bundle
        int verify
        long connect_timeout_ms
        long low_speed_limit
        long low_speed_time
        long buffer_size
        int http2
        int follow_redirects
        int pin_version
        int max_retries
        double retry_deadline
        double backoff_base
        double backoff_cap
        const char *user_agent

    ctypedef struct fl_http_ctx:
        pass

    ctypedef struct fl_http_stats:
        int64_t requests
        int64_t retries
        int64_t connects
        int64_t bytes
        int64_t writes
        int64_t streams

    enum:
        FL_RANGE_UNKNOWN
        FL_RANGE_HONOURED
        FL_RANGE_IGNORED
        FL_HTTP_MAX_REDIRECTS
        FL_PIN_ETAG_LEN
        FL_PIN_DATE_LEN

    ctypedef struct fl_http_pin:
        int64_t total
        char etag[128]
        char last_modified[64]
        int range_mode

    ctypedef struct fl_http_opts:
        int64_t part_size
        int max_inflight
        double timeout
        volatile int *cancel
        fl_http_pin *pins
        int (*interrupt)(void *arg) noexcept nogil
        void *interrupt_arg

    fl_http_ctx *fl_http_ctx_new(const fl_http_config *cfg, fl_error *err)
    void fl_http_ctx_free(fl_http_ctx *ctx)
    void fl_http_ctx_stats(const fl_http_ctx *ctx, fl_http_stats *out)
    void fl_http_etag_key(char *out, const char *value, size_t len)
    int fl_http_read(fl_http_ctx *ctx, const char *const *urls, const char *const *headers, int nsrc,
                     const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                     const fl_http_opts *opts, fl_error *err)


cdef extern from "fl_http_retry.h" nogil:
    int fl_http_classify_status(long status, int *transient)
    int fl_http_classify_curl(int curl_code, int *transient)
    int fl_http_classify_s3_code(const char *code, int *transient)
    double fl_http_backoff(int attempt, double base, double cap, double retry_after, uint64_t *rng)
