/* Classification of failed GETs and the retry backoff, shared by the C
 * transfer driver and (through the bridge) the Python control plane. */
#ifndef FL_HTTP_RETRY_H
#define FL_HTTP_RETRY_H

#include <stdint.h>

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
