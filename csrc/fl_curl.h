/* Parallel ranged HTTP(S) GETs into one buffer, driven by libcurl's multi
 * interface. libcurl is bound at run time (dlopen/dlsym) so no development
 * package is needed: the bridge hands in the path of the library pycurl
 * ships, or of the system's libcurl.so.4. */
#ifndef FL_CURL_H
#define FL_CURL_H

#include <stddef.h>
#include <stdint.h>

#include "fl_error.h"
#include "fl_range.h"

/* Loads libcurl from `path` and calls curl_global_init once. Not thread-safe:
 * call it under the GIL before any transfer. Returns 0, or -1 with `why` set. */
int fl_curl_load(const char *path, char *why, size_t why_len);
/* curl_version() of the loaded library, or NULL before fl_curl_load. */
const char *fl_curl_version(void);
/* The libcurl ABI constants compiled in (name, value), for tests. */
int fl_curl_abi_count(void);
const char *fl_curl_abi_name(int i);
long fl_curl_abi_value(int i);

typedef struct {
    const char *ca_bundle;     /* CA file for TLS verification; NULL: libcurl's default */
    int verify;                /* verify the peer's certificate and host name */
    long connect_timeout_ms;   /* TCP + TLS connect */
    long low_speed_limit;      /* bytes/s under which a transfer counts as stalled ... */
    long low_speed_time;       /* ... for this many seconds (then it is retried) */
    long buffer_size;          /* CURLOPT_BUFFERSIZE: bytes per recv() */
    int http2;                 /* offer HTTP/2 over TLS */
    int follow_redirects;      /* follow 3xx (plain HTTP; never for signed S3 requests) */
    int max_retries;           /* retries of a transient failure, per part */
    double retry_deadline;     /* seconds from a part's first failure after which it is not retried */
    double backoff_base;       /* seconds: first backoff; doubles each retry ... */
    double backoff_cap;        /* ... up to this many seconds (before jitter) */
    const char *user_agent;
} fl_http_config;

typedef struct fl_http_ctx fl_http_ctx;

typedef struct {
    int64_t requests;     /* GETs started */
    int64_t retries;      /* of which retries of a transient failure */
    int64_t connects;     /* new connections made (the rest reused a kept-alive one) */
    int64_t bytes;        /* body bytes written to destinations */
} fl_http_stats;

/* A context owns the multi handle, its connection cache and a pool of easy
 * handles; it serves one read at a time and keeps connections alive between
 * reads. Returns NULL with err filled. */
fl_http_ctx *fl_http_ctx_new(const fl_http_config *cfg, fl_error *err);
void fl_http_ctx_free(fl_http_ctx *ctx);
void fl_http_ctx_stats(const fl_http_ctx *ctx, fl_http_stats *out);

/* Polled at most every few milliseconds during a read; non-zero stops it. */
typedef int (*fl_cancel_fn)(void *arg);

typedef struct {
    int64_t part_size;     /* ranges are cut into GETs of at most this many bytes */
    int max_inflight;      /* GETs in flight at once */
    double timeout;        /* seconds the whole read may take; <= 0: no limit */
    fl_cancel_fn cancel;   /* optional */
    void *cancel_arg;
} fl_http_opts;

/* Reads every range (bytes [offset, offset+length) of urls[src]) into
 * dst + range.dst. headers[src] is NULL or '\n'-separated header lines sent
 * with every GET of that source (e.g. a SigV4 Authorization). Returns FL_OK
 * or an fl_status with err filled (source, range, HTTP status, curl code,
 * attempts). Never writes outside [dst, dst + dst_len). */
int fl_http_read(fl_http_ctx *ctx, const char *const *urls, const char *const *headers, int nsrc,
                 const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                 const fl_http_opts *opts, fl_error *err);

/* The one classification of failures, shared with the Python control plane:
 * returns the fl_status for an HTTP status (>= 300) or a CURLcode, and sets
 * *transient when it is worth retrying. */
int fl_http_classify_status(long status, int *transient);
int fl_http_classify_curl(int curl_code, int *transient);
/* The same for an S3 error <Code> (NoSuchKey, SlowDown, ...); -1 when unknown. */
int fl_http_classify_s3_code(const char *code, int *transient);

/* Seconds to wait before retry number `attempt` (0-based): capped exponential
 * backoff with jitter, never less than `retry_after` (a server's Retry-After). */
double fl_http_backoff(int attempt, double base, double cap, double retry_after, uint64_t *rng);

#endif
