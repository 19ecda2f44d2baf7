/* What to do about a failed GET: the fl_status of an HTTP status, a CURLcode
 * or an S3 error code, whether it is worth retrying, and how long to wait. */
#include "fl_http_retry.h"

#include <math.h>
#include <string.h>

#include "fl_curl_abi.h"
#include "fl_error.h"

int fl_http_classify_status(long status, int *transient) {
    *transient = 0;
    switch (status) {
        case 404:
        case 410: return FL_E_NOT_FOUND;
        case 401:
        case 403: return FL_E_PERMISSION;
        case 416: return FL_E_RANGE;
        case 408:
        case 429:
        case 500:
        case 502:
        case 503:
        case 504: *transient = 1; return FL_E_HTTP;
        default: return FL_E_HTTP;
    }
}

int fl_http_classify_curl(int code, int *transient) {
    *transient = 0;
    switch (code) {
        case CURLE_OPERATION_TIMEDOUT: *transient = 1; return FL_E_TIMEOUT;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_GOT_NOTHING:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_HTTP3:
        case CURLE_QUIC_CONNECT_ERROR:
        case CURLE_WEIRD_SERVER_REPLY: *transient = 1; return FL_E_CONNECTION;
        case CURLE_PARTIAL_FILE: *transient = 1; return FL_E_SHORT;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_ISSUER_ERROR: return FL_E_TLS;
        case CURLE_SSL_CONNECT_ERROR: return FL_E_TLS;
        case CURLE_TOO_MANY_REDIRECTS: return FL_E_HTTP; /* a redirect loop */
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL: return FL_E_INVALID;
        case CURLE_OUT_OF_MEMORY: return FL_E_NOMEM;
        default: return FL_E_CONNECTION;
    }
}

int fl_http_classify_s3_code(const char *code, int *transient) {
    static const char *const not_found[] = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", NULL};
    static const char *const denied[] = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                         "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
                                         "AuthorizationHeaderMalformed", "MissingSecurityHeader",
                                         "UnsupportedAlgorithm", "AllAccessDisabled", NULL};
    static const char *const busy[] = {"SlowDown", "RequestTimeout", "InternalError",
                                       "ServiceUnavailable", "RequestTimeTooSkewed", NULL};
    *transient = 0;
    for (int i = 0; not_found[i]; i++)
        if (strcmp(code, not_found[i]) == 0) return FL_E_NOT_FOUND;
    for (int i = 0; denied[i]; i++)
        if (strcmp(code, denied[i]) == 0) return FL_E_PERMISSION;
    for (int i = 0; busy[i]; i++)
        if (strcmp(code, busy[i]) == 0) {
            *transient = 1;
            return FL_E_HTTP;
        }
    if (strcmp(code, "InvalidRange") == 0) return FL_E_RANGE;
    return -1;
}

static double rng_uniform(uint64_t *s) {
    /* xorshift64*: jitter only, not cryptography */
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return (double)((x * 0x2545F4914F6CDD1Dull) >> 11) / (double)(1ull << 53);
}

double fl_http_backoff(int attempt, double base, double cap, double retry_after, uint64_t *rng) {
    double d = base * ldexp(1.0, attempt > 30 ? 30 : attempt);
    if (d > cap) d = cap;
    /* "equal jitter": half fixed, half random, so clients spread out but never hammer */
    d = d / 2 + rng_uniform(rng) * d / 2;
    return retry_after > d ? retry_after : d;
}

