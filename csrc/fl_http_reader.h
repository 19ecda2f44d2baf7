/* Parallel ranged HTTP(S) GETs into one buffer, driven by libcurl's multi
 * interface (libcurl bound by fl_curl.h). */
#ifndef FL_HTTP_READER_H
#define FL_HTTP_READER_H

#include <stddef.h>
#include <stdint.h>

#include "fl_error.h"
#include "fl_range.h"

typedef struct {
    const char *ca_bundle;     /* CA file for TLS verification; NULL: libcurl's default */
    int verify;                /* verify the peer's certificate and host name */
    long connect_timeout_ms;   /* TCP + TLS connect */
    long low_speed_limit;      /* bytes/s under which a transfer counts as stalled ... */
    long low_speed_time;       /* ... for this many seconds (then it is retried) */
    long buffer_size;          /* CURLOPT_BUFFERSIZE: bytes per recv() */
    int http2;                 /* offer HTTP/2 over TLS */
    int follow_redirects;      /* follow 3xx (plain HTTP; never for signed S3 requests) */
    int pin_version;           /* a read fails with FL_E_CHANGED when an object's version changes */
    int max_retries;           /* retries of a transient failure, per part; < 0: no count limit */
    double retry_deadline;     /* seconds from a part's first failure after which it is not retried */
    double backoff_base;       /* seconds: first backoff; doubles each retry ... */
    double backoff_cap;        /* ... up to this many seconds (before jitter) */
    const char *user_agent;
} fl_http_config;

typedef struct fl_http_ctx fl_http_ctx;

/* Redirects one GET follows (follow_redirects): a loop ends in an error naming the URI. */
#define FL_HTTP_MAX_REDIRECTS 5

typedef struct {
    int64_t requests;     /* GETs started */
    int64_t retries;      /* of which retries of a transient failure */
    int64_t connects;     /* new connections made (the rest reused a kept-alive one) */
    int64_t bytes;        /* body bytes written to destinations */
    int64_t writes;       /* write-callback calls (each carries at most buffer_size bytes) */
    int64_t streams;      /* objects read with one whole GET because the server ignored Range */
} fl_http_stats;

/* A context owns the multi handle, its connection cache and a pool of easy
 * handles; it serves one read at a time and keeps connections alive between
 * reads. Returns NULL with err filled. */
fl_http_ctx *fl_http_ctx_new(const fl_http_config *cfg, fl_error *err);
void fl_http_ctx_free(fl_http_ctx *ctx);
void fl_http_ctx_stats(const fl_http_ctx *ctx, fl_http_stats *out);

enum { FL_RANGE_UNKNOWN = 0, FL_RANGE_HONOURED = 1, FL_RANGE_IGNORED = 2 };

#define FL_PIN_ETAG_LEN 128
#define FL_PIN_DATE_LEN 64

/* The version of one source a read is pinned to. Unknown fields are filled from the
 * first response; every later response must agree (pin_version), or the read fails
 * with FL_E_CHANGED instead of mixing the bytes of two versions. */
typedef struct {
    int64_t total;                          /* object size in bytes; -1: not known */
    char etag[FL_PIN_ETAG_LEN];             /* fl_http_etag_key of it; "": none */
    char last_modified[FL_PIN_DATE_LEN];    /* compared only when neither side has an ETag */
    int range_mode;                         /* FL_RANGE_*: in, IGNORED reads the object with one
                                             * streamed GET at once; out, what the server did */
} fl_http_pin;

/* The form an ETag is pinned and compared in (out: FL_PIN_ETAG_LEN bytes): the opaque
 * tag (trimmed, without W/ and its quotes: "" is none), control characters as '?'; a
 * longer one is its first bytes and a hash of all of it, so two ETags that differ past
 * the cut still differ. */
void fl_http_etag_key(char *out, const char *value, size_t len);

typedef struct {
    int64_t part_size;     /* ranges are cut into GETs of at most this many bytes */
    int max_inflight;      /* GETs in flight at once */
    double timeout;        /* seconds the whole read may take; <= 0: no limit */
    volatile int *cancel;  /* optional: set non-zero to stop the read (checked at least every 20 ms) */
    fl_http_pin *pins;     /* optional: one per source, in/out (NULL: pinned within this read only) */
    /* optional: called on the reading thread about every 20 ms; non-zero stops the read
     * with FL_E_CANCELLED (the bridge checks for Ctrl-C here) */
    int (*interrupt)(void *arg);
    void *interrupt_arg;
} fl_http_opts;

/* Reads every range (bytes [offset, offset+length) of urls[src]) into
 * dst + range.dst. headers[src] is NULL or '\n'-separated header lines sent
 * with every GET of that source (e.g. a SigV4 Authorization); a control
 * character in one is FL_E_INVALID. A server that answers a ranged GET with
 * the whole body (200, no Content-Range) has every part of that source filled
 * from that one body instead. Returns FL_OK or an fl_status with err filled
 * (source, range, HTTP status, curl code, attempts). Never writes outside
 * [dst, dst + dst_len). */
int fl_http_read(fl_http_ctx *ctx, const char *const *urls, const char *const *headers, int nsrc,
                 const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                 const fl_http_opts *opts, fl_error *err);

#endif
