#define _GNU_SOURCE
#include "fl_curl.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- the slice of libcurl's ABI we use (no headers needed) ------------------
 * Values are stable ABI; tests/test_http.py checks them against pycurl's. */
typedef void CURL;
typedef void CURLM;
typedef int CURLcode;
typedef int CURLMcode;
struct curl_slist {
    char *data;
    struct curl_slist *next;
};
typedef struct {
    int msg;
    CURL *easy_handle;
    union {
        void *whatever;
        CURLcode result;
    } data;
} CURLMsg;

enum {
    CURLOPT_WRITEDATA = 10001,
    CURLOPT_URL = 10002,
    CURLOPT_RANGE = 10007,
    CURLOPT_ERRORBUFFER = 10010,
    CURLOPT_USERAGENT = 10018,
    CURLOPT_HTTPHEADER = 10023,
    CURLOPT_HEADERDATA = 10029,
    CURLOPT_CAINFO = 10065,
    CURLOPT_WRITEFUNCTION = 20011,
    CURLOPT_HEADERFUNCTION = 20079,
    CURLOPT_LOW_SPEED_LIMIT = 19,
    CURLOPT_LOW_SPEED_TIME = 20,
    CURLOPT_NOPROGRESS = 43,
    CURLOPT_FOLLOWLOCATION = 52,
    CURLOPT_SSL_VERIFYPEER = 64,
    CURLOPT_MAXREDIRS = 68,
    CURLOPT_HTTPGET = 80,
    CURLOPT_SSL_VERIFYHOST = 81,
    CURLOPT_HTTP_VERSION = 84,
    CURLOPT_BUFFERSIZE = 98,
    CURLOPT_NOSIGNAL = 99,
    CURLOPT_TCP_NODELAY = 121,
    CURLOPT_CONNECTTIMEOUT_MS = 156,
    CURLOPT_TCP_KEEPALIVE = 213,
    CURLINFO_RESPONSE_CODE = 0x200000 + 2,
    CURLINFO_NUM_CONNECTS = 0x200000 + 26,
    CURLMOPT_PIPELINING = 3,
    CURLMOPT_MAXCONNECTS = 6,
    CURLPIPE_MULTIPLEX = 2,
    CURL_HTTP_VERSION_1_1 = 2,
    CURL_HTTP_VERSION_2TLS = 4,
    CURLMSG_DONE = 1,
    CURL_GLOBAL_DEFAULT = 3,
    CURL_ERROR_SIZE = 256,
    CURL_MAX_READ_SIZE = 10 * 1024 * 1024,
};

enum {
    CURLE_OK = 0,
    CURLE_UNSUPPORTED_PROTOCOL = 1,
    CURLE_URL_MALFORMAT = 3,
    CURLE_COULDNT_RESOLVE_PROXY = 5,
    CURLE_COULDNT_RESOLVE_HOST = 6,
    CURLE_COULDNT_CONNECT = 7,
    CURLE_WEIRD_SERVER_REPLY = 8,
    CURLE_HTTP2 = 16,
    CURLE_PARTIAL_FILE = 18,
    CURLE_WRITE_ERROR = 23,
    CURLE_OUT_OF_MEMORY = 27,
    CURLE_OPERATION_TIMEDOUT = 28,
    CURLE_SSL_CONNECT_ERROR = 35,
    CURLE_TOO_MANY_REDIRECTS = 47,
    CURLE_GOT_NOTHING = 52,
    CURLE_SEND_ERROR = 55,
    CURLE_RECV_ERROR = 56,
    CURLE_SSL_CERTPROBLEM = 58,
    CURLE_PEER_FAILED_VERIFICATION = 60,
    CURLE_SSL_CACERT_BADFILE = 77,
    CURLE_SSL_ISSUER_ERROR = 83,
    CURLE_HTTP2_STREAM = 92,
    CURLE_HTTP3 = 95,
    CURLE_QUIC_CONNECT_ERROR = 96,
};

typedef size_t (*curl_cb)(char *, size_t, size_t, void *);

static struct {
    void *lib;
    CURLcode (*global_init)(long);
    char *(*version)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, int, ...);
    CURLcode (*easy_getinfo)(CURL *, int, ...);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *, int, ...);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_perform)(CURLM *, int *);
    CURLMcode (*multi_poll)(CURLM *, void *, unsigned, int, int *);
    CURLMcode (*multi_wait)(CURLM *, void *, unsigned, int, int *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_cleanup)(CURLM *);
    const char *(*multi_strerror)(CURLMcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
} C;

int fl_curl_load(const char *path, char *why, size_t why_len) {
    if (C.lib) return 0;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, why_len, "%s", dlerror());
        return -1;
    }
#define SYM(field, name)                                                     \
    do {                                                                     \
        *(void **)(&C.field) = dlsym(lib, name);                             \
        if (!C.field && strcmp(name, "curl_multi_poll") != 0) {              \
            snprintf(why, why_len, "%s: symbol %s missing", path, name);     \
            memset(&C, 0, sizeof(C));                                        \
            dlclose(lib);                                                    \
            return -1;                                                       \
        }                                                                    \
    } while (0)
    SYM(global_init, "curl_global_init");
    SYM(version, "curl_version");
    SYM(easy_init, "curl_easy_init");
    SYM(easy_setopt, "curl_easy_setopt");
    SYM(easy_getinfo, "curl_easy_getinfo");
    SYM(easy_cleanup, "curl_easy_cleanup");
    SYM(easy_strerror, "curl_easy_strerror");
    SYM(multi_init, "curl_multi_init");
    SYM(multi_setopt, "curl_multi_setopt");
    SYM(multi_add_handle, "curl_multi_add_handle");
    SYM(multi_remove_handle, "curl_multi_remove_handle");
    SYM(multi_perform, "curl_multi_perform");
    SYM(multi_poll, "curl_multi_poll"); /* 7.66+; curl_multi_wait otherwise */
    SYM(multi_wait, "curl_multi_wait");
    SYM(multi_info_read, "curl_multi_info_read");
    SYM(multi_cleanup, "curl_multi_cleanup");
    SYM(multi_strerror, "curl_multi_strerror");
    SYM(slist_append, "curl_slist_append");
    SYM(slist_free_all, "curl_slist_free_all");
#undef SYM
    if (C.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(why, why_len, "%s: curl_global_init failed", path);
        memset(&C, 0, sizeof(C));
        dlclose(lib);
        return -1;
    }
    C.lib = lib;
    return 0;
}

const char *fl_curl_version(void) { return C.lib ? C.version() : NULL; }

/* The hard-coded ABI values, so a test can hold them against pycurl's. */
#define ABI(name) {#name, name}
static const struct {
    const char *name;
    long value;
} abi_table[] = {
    ABI(CURLOPT_WRITEDATA), ABI(CURLOPT_URL), ABI(CURLOPT_RANGE), ABI(CURLOPT_USERAGENT),
    ABI(CURLOPT_HTTPHEADER), ABI(CURLOPT_CAINFO), ABI(CURLOPT_WRITEFUNCTION),
    ABI(CURLOPT_HEADERFUNCTION), ABI(CURLOPT_LOW_SPEED_LIMIT), ABI(CURLOPT_LOW_SPEED_TIME),
    ABI(CURLOPT_NOPROGRESS), ABI(CURLOPT_FOLLOWLOCATION), ABI(CURLOPT_SSL_VERIFYPEER),
    ABI(CURLOPT_MAXREDIRS), ABI(CURLOPT_HTTPGET), ABI(CURLOPT_SSL_VERIFYHOST),
    ABI(CURLOPT_HTTP_VERSION), ABI(CURLOPT_BUFFERSIZE), ABI(CURLOPT_NOSIGNAL),
    ABI(CURLOPT_TCP_NODELAY), ABI(CURLOPT_CONNECTTIMEOUT_MS), ABI(CURLOPT_TCP_KEEPALIVE),
    ABI(CURLINFO_RESPONSE_CODE), ABI(CURLINFO_NUM_CONNECTS), ABI(CURLMOPT_PIPELINING),
    ABI(CURLMOPT_MAXCONNECTS), ABI(CURLE_PARTIAL_FILE), ABI(CURLE_WRITE_ERROR),
    ABI(CURLE_OPERATION_TIMEDOUT), ABI(CURLE_COULDNT_CONNECT), ABI(CURLE_RECV_ERROR),
    ABI(CURLE_PEER_FAILED_VERIFICATION), ABI(CURLE_SSL_CACERT_BADFILE),
};
#undef ABI

int fl_curl_abi_count(void) { return (int)(sizeof(abi_table) / sizeof(abi_table[0])); }
const char *fl_curl_abi_name(int i) { return abi_table[i].name; }
long fl_curl_abi_value(int i) { return abi_table[i].value; }

/* ---- failure classification and backoff ---------------------------------- */

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

/* ---- one read ------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    int32_t src;
    int64_t offset, length, dst;
    int64_t got;           /* bytes delivered so far (kept across retries: resume) */
    int attempts;
    double first_fail, not_before;
} part_t;

enum { BODY_UNCHECKED = 0, BODY_DATA, BODY_ERROR, BODY_MISMATCH, BODY_PAST_END };

typedef struct {
    CURL *easy;
    part_t *part;          /* NULL when idle */
    char *base;            /* destination buffer */
    int64_t req_start;     /* first byte asked for in this GET */
    int64_t got;           /* bytes delivered by this GET */
    int64_t skip;          /* bytes to drop first (200 without Content-Range) */
    int mode;
    int done_early;        /* all wanted bytes came, the rest of the body was refused */
    int have_cr;
    int64_t cr_start, cr_end, cr_total;
    double retry_after;
    size_t elen;
    char ebody[768];
    char range[64];
    char errbuf[CURL_ERROR_SIZE];
} slot_t;

struct fl_http_ctx {
    CURLM *multi;
    fl_http_config cfg;
    char *ca_bundle;
    char *user_agent;
    slot_t *slots;
    int nslots;
    uint64_t rng;
    fl_http_stats stats;
};

static int64_t parse_i64(const char **p) {
    int64_t v = 0;
    int any = 0;
    while (**p >= '0' && **p <= '9') {
        v = v * 10 + (**p - '0');
        (*p)++;
        any = 1;
    }
    return any ? v : -1;
}

static size_t header_cb(char *ptr, size_t size, size_t n, void *ud) {
    slot_t *s = (slot_t *)ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        /* a new response (after 100-continue or a redirect): forget the last one's headers */
        s->have_cr = 0;
        s->retry_after = 0;
        return len;
    }
    if (len > 14 && strncasecmp(ptr, "content-range:", 14) == 0) {
        const char *p = ptr + 14;
        while (*p == ' ') p++;
        if (strncasecmp(p, "bytes ", 6) == 0) p += 6;
        s->cr_start = s->cr_end = s->cr_total = -1;
        if (*p == '*') {
            p++;
        } else {
            s->cr_start = parse_i64(&p);
            if (*p == '-') p++;
            s->cr_end = parse_i64(&p);
        }
        if (*p == '/') {
            p++;
            s->cr_total = parse_i64(&p);
        }
        s->have_cr = 1;
    } else if (len > 12 && strncasecmp(ptr, "retry-after:", 12) == 0) {
        const char *p = ptr + 12;
        while (*p == ' ') p++;
        int64_t v = parse_i64(&p); /* delta-seconds; an HTTP-date falls back to backoff */
        if (v >= 0) s->retry_after = (double)v;
    }
    return len;
}

/* Decides, at the first body byte (headers complete), what the body is. */
static void check_response(slot_t *s) {
    long status = 0;
    C.easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    part_t *p = s->part;
    int64_t req_end = p->offset + p->length; /* exclusive */
    if (status == 206 || (status == 200 && s->have_cr)) {
        if (!s->have_cr) {
            s->mode = BODY_DATA; /* 206 without Content-Range: trust it */
        } else if (s->cr_start != s->req_start) {
            s->mode = BODY_MISMATCH;
        } else if (s->cr_total >= 0 && req_end > s->cr_total) {
            s->mode = BODY_PAST_END;
        } else {
            s->mode = BODY_DATA;
        }
    } else if (status == 200) {
        s->mode = BODY_DATA;
        s->skip = s->req_start; /* the server ignored Range: this is the whole object */
    } else {
        s->mode = BODY_ERROR;
    }
}

static size_t write_cb(char *ptr, size_t size, size_t n, void *ud) {
    slot_t *s = (slot_t *)ud;
    size_t len = size * n;
    if (s->mode == BODY_UNCHECKED) check_response(s);
    if (s->mode == BODY_ERROR) {
        size_t room = sizeof(s->ebody) - 1 - s->elen;
        size_t k = len < room ? len : room;
        memcpy(s->ebody + s->elen, ptr, k);
        s->elen += k;
        s->ebody[s->elen] = 0;
        return len;
    }
    if (s->mode != BODY_DATA) return 0; /* abort: reported at completion */
    size_t off = 0;
    if (s->skip > 0) {
        size_t k = (int64_t)len < s->skip ? len : (size_t)s->skip;
        s->skip -= (int64_t)k;
        off = k;
        if (off == len) return len;
    }
    part_t *p = s->part;
    int64_t room = p->length - p->got;
    size_t k = len - off;
    if ((int64_t)k > room) k = (size_t)room;
    memcpy(s->base + p->dst + p->got, ptr + off, k);
    p->got += (int64_t)k;
    s->got += (int64_t)k;
    if (off + k < len) {
        s->done_early = 1; /* never write past the part's end */
        return 0;
    }
    return len;
}

fl_http_ctx *fl_http_ctx_new(const fl_http_config *cfg, fl_error *err) {
    if (!C.lib) {
        fl_error_set(err, FL_E_UNSUPPORTED, 0, -1, 0, 0, "libcurl is not loaded");
        return NULL;
    }
    fl_http_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) goto nomem;
    ctx->cfg = *cfg;
    if (cfg->ca_bundle && !(ctx->ca_bundle = strdup(cfg->ca_bundle))) goto nomem;
    if (cfg->user_agent && !(ctx->user_agent = strdup(cfg->user_agent))) goto nomem;
    ctx->multi = C.multi_init();
    if (!ctx->multi) goto nomem;
    C.multi_setopt(ctx->multi, CURLMOPT_PIPELINING, (long)(cfg->http2 ? CURLPIPE_MULTIPLEX : 0));
    C.multi_setopt(ctx->multi, CURLMOPT_MAXCONNECTS, 64L);
    ctx->rng = (uint64_t)(uintptr_t)ctx ^ (uint64_t)(now_s() * 1e9);
    return ctx;
nomem:
    fl_http_ctx_free(ctx);
    fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate the HTTP context");
    return NULL;
}

void fl_http_ctx_free(fl_http_ctx *ctx) {
    if (!ctx) return;
    for (int i = 0; i < ctx->nslots; i++)
        if (ctx->slots[i].easy) C.easy_cleanup(ctx->slots[i].easy);
    free(ctx->slots);
    if (ctx->multi) C.multi_cleanup(ctx->multi);
    free(ctx->ca_bundle);
    free(ctx->user_agent);
    free(ctx);
}

void fl_http_ctx_stats(const fl_http_ctx *ctx, fl_http_stats *out) { *out = ctx->stats; }

/* Options that stay the same for every GET of a handle. */
static int setup_easy(fl_http_ctx *ctx, slot_t *s) {
    CURL *e = C.easy_init();
    if (!e) return -1;
    const fl_http_config *c = &ctx->cfg;
    C.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    C.easy_setopt(e, CURLOPT_NOPROGRESS, 1L);
    C.easy_setopt(e, CURLOPT_HTTPGET, 1L);
    C.easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    C.easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    C.easy_setopt(e, CURLOPT_WRITEFUNCTION, (curl_cb)write_cb);
    C.easy_setopt(e, CURLOPT_HEADERFUNCTION, (curl_cb)header_cb);
    C.easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    long bs = c->buffer_size > 0 ? c->buffer_size : 1L << 20;
    C.easy_setopt(e, CURLOPT_BUFFERSIZE, bs > CURL_MAX_READ_SIZE ? (long)CURL_MAX_READ_SIZE : bs);
    C.easy_setopt(e, CURLOPT_HTTP_VERSION, (long)(c->http2 ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1));
    C.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, (long)(c->verify ? 1 : 0));
    C.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, (long)(c->verify ? 2 : 0));
    if (ctx->ca_bundle) C.easy_setopt(e, CURLOPT_CAINFO, ctx->ca_bundle);
    if (ctx->user_agent) C.easy_setopt(e, CURLOPT_USERAGENT, ctx->user_agent);
    if (c->connect_timeout_ms > 0) C.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    if (c->low_speed_time > 0) {
        C.easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, c->low_speed_limit > 0 ? c->low_speed_limit : 1L);
        C.easy_setopt(e, CURLOPT_LOW_SPEED_TIME, c->low_speed_time);
    }
    if (c->follow_redirects) {
        C.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        C.easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    }
    C.easy_setopt(e, CURLOPT_WRITEDATA, (void *)s);
    C.easy_setopt(e, CURLOPT_HEADERDATA, (void *)s);
    s->easy = e;
    return 0;
}

static int ensure_slots(fl_http_ctx *ctx, int n) {
    if (n <= ctx->nslots) return 0;
    slot_t *ns = realloc(ctx->slots, sizeof(slot_t) * (size_t)n);
    if (!ns) return -1;
    ctx->slots = ns;
    for (int i = ctx->nslots; i < n; i++) {
        memset(&ns[i], 0, sizeof(slot_t));
        if (setup_easy(ctx, &ns[i]) != 0) {
            ctx->nslots = i;
            return -1;
        }
    }
    /* realloc may have moved the slots: re-point the callbacks' user data */
    for (int i = 0; i < n; i++) {
        C.easy_setopt(ns[i].easy, CURLOPT_WRITEDATA, (void *)&ns[i]);
        C.easy_setopt(ns[i].easy, CURLOPT_HEADERDATA, (void *)&ns[i]);
        C.easy_setopt(ns[i].easy, CURLOPT_ERRORBUFFER, ns[i].errbuf);
    }
    ctx->nslots = n;
    return 0;
}

typedef struct {
    fl_http_ctx *ctx;
    const char *const *urls;
    struct curl_slist **hdrs;
    part_t *parts;
    int64_t nparts;
    char *dst;
    const fl_http_opts *opts;
    fl_error *err;
    int failed;
    int64_t *waiting;      /* parts waiting for a retry */
    int64_t nwaiting;
} read_t;

static int start_get(read_t *r, slot_t *s, part_t *p) {
    s->part = p;
    s->base = r->dst;
    s->req_start = p->offset + p->got;
    s->got = s->skip = 0;
    s->mode = BODY_UNCHECKED;
    s->done_early = s->have_cr = 0;
    s->retry_after = 0;
    s->elen = 0;
    s->ebody[0] = 0;
    s->errbuf[0] = 0;
    snprintf(s->range, sizeof(s->range), "%lld-%lld", (long long)s->req_start,
             (long long)(p->offset + p->length - 1));
    C.easy_setopt(s->easy, CURLOPT_URL, r->urls[p->src]);
    C.easy_setopt(s->easy, CURLOPT_RANGE, s->range);
    C.easy_setopt(s->easy, CURLOPT_HTTPHEADER, r->hdrs[p->src]);
    if (C.multi_add_handle(r->ctx->multi, s->easy) != 0) {
        s->part = NULL;
        return -1;
    }
    r->ctx->stats.requests++;
    if (p->attempts > 0) r->ctx->stats.retries++;
    return 0;
}

static void stop_get(read_t *r, slot_t *s) {
    C.multi_remove_handle(r->ctx->multi, s->easy);
    C.easy_setopt(s->easy, CURLOPT_HTTPHEADER, (void *)NULL);
    s->part = NULL;
}

static void fail(read_t *r, int code, const part_t *p, long status, int curl_code, const char *fmt,
                 const char *detail) {
    if (r->failed) return;
    r->failed = 1;
    fl_error_set(r->err, code, 0, p ? p->src : -1, p ? p->offset : 0, p ? p->length : 0, fmt,
                 detail);
    r->err->http_status = status;
    r->err->curl_code = curl_code;
    r->err->attempts = p ? p->attempts : 0;
}

/* The S3 error code (<Code>NoSuchKey</Code>) of an error body, if any. Only
 * the code is kept: bodies of signature errors echo the signature. */
static void s3_error_code(const char *body, char *out, size_t n) {
    out[0] = 0;
    const char *a = strstr(body, "<Code>");
    if (!a) return;
    a += 6;
    const char *b = strstr(a, "</Code>");
    if (!b) return;
    size_t k = (size_t)(b - a);
    if (k >= n) k = n - 1;
    memcpy(out, a, k);
    out[k] = 0;
}

/* A transient failure: schedule the part again, or give up when retries ran out. */
static void retry_or_fail(read_t *r, part_t *p, int code, long status, int curl_code, double retry_after,
                          const char *cause) {
    const fl_http_config *c = &r->ctx->cfg;
    double t = now_s();
    if (p->first_fail == 0) p->first_fail = t;
    double delay = fl_http_backoff(p->attempts - 1, c->backoff_base, c->backoff_cap, retry_after, &r->ctx->rng);
    const char *why = NULL;
    if (p->attempts > c->max_retries)
        why = "retries exhausted (max_retries)";
    else if (t + delay - p->first_fail > c->retry_deadline)
        why = "retries exhausted (retry_deadline)";
    if (why) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s; last failure: %s", why, cause);
        fail(r, code, p, status, curl_code, "%s", msg);
        return;
    }
    p->not_before = t + delay;
    r->waiting[r->nwaiting++] = p - r->parts;
}

/* A GET finished (well or not): account for it. Returns 1 when the part is complete. */
static int finish_get(read_t *r, slot_t *s, CURLcode res) {
    part_t *p = s->part;
    long status = 0;
    int conns = 0;
    long nc = 0;
    C.easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    C.easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &nc);
    conns = (int)nc;
    r->ctx->stats.connects += conns;
    r->ctx->stats.bytes += s->got;
    p->attempts++;
    char cause[240];
    int transient;
    if (s->mode == BODY_UNCHECKED && status != 0 && status != 200 && status != 206) s->mode = BODY_ERROR;
    if (s->mode == BODY_MISMATCH) {
        snprintf(cause, sizeof(cause), "server answered bytes %lld-%lld for a request of %s",
                 (long long)s->cr_start, (long long)s->cr_end, s->range);
        fail(r, FL_E_HTTP, p, status, 0, "%s", cause);
        return 0;
    }
    if (s->mode == BODY_PAST_END) {
        fail(r, FL_E_RANGE, p, status, 0, "%s", "range ends past the end of the object");
        r->err->obj_size = s->cr_total;
        return 0;
    }
    if (s->mode == BODY_ERROR) {
        int code = fl_http_classify_status(status, &transient);
        char s3code[64];
        s3_error_code(s->ebody, s3code, sizeof(s3code));
        int s3_transient;
        int by_code = s3code[0] ? fl_http_classify_s3_code(s3code, &s3_transient) : -1;
        if (by_code >= 0) { /* the S3 error code says more than the status */
            code = by_code;
            transient = s3_transient;
        }
        snprintf(cause, sizeof(cause), "%s%s", s3code[0] ? "server error " : "server error", s3code);
        if (transient) {
            retry_or_fail(r, p, code, status, 0, s->retry_after, cause);
        } else {
            fail(r, code, p, status, 0, "%s", cause);
            if (status == 416 && s->have_cr) r->err->obj_size = s->cr_total;
        }
        return 0;
    }
    if (res == CURLE_OK || (res == CURLE_WRITE_ERROR && s->done_early)) {
        if (p->got == p->length) return 1;
        snprintf(cause, sizeof(cause), "body ended after %lld of %lld bytes", (long long)p->got,
                 (long long)p->length);
        retry_or_fail(r, p, FL_E_SHORT, status, 0, 0, cause);
        return 0;
    }
    int code = fl_http_classify_curl(res, &transient);
    snprintf(cause, sizeof(cause), "%s%s%s", C.easy_strerror(res), s->errbuf[0] ? ": " : "", s->errbuf);
    if (transient)
        retry_or_fail(r, p, code, status, res, 0, cause);
    else
        fail(r, code, p, status, res, "%s", cause);
    return 0;
}

static struct curl_slist *header_list(const char *lines) {
    struct curl_slist *l = NULL;
    if (!lines) return NULL;
    char line[8192];
    const char *p = lines;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k > 0 && k < sizeof(line)) {
            memcpy(line, p, k);
            line[k] = 0;
            struct curl_slist *n = C.slist_append(l, line);
            if (!n) {
                C.slist_free_all(l);
                return (struct curl_slist *)-1;
            }
            l = n;
        }
        p += k;
        if (*p == '\n') p++;
    }
    return l;
}

int fl_http_read(fl_http_ctx *ctx, const char *const *urls, const char *const *headers, int nsrc,
                 const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                 const fl_http_opts *opts, fl_error *err) {
    fl_error_clear(err);
    int64_t psz = opts->part_size > 0 ? opts->part_size : (8 << 20);
    int64_t nparts = 0;
    for (int64_t i = 0; i < nranges; i++) {
        const fl_range *g = &ranges[i];
        if (g->src < 0 || g->src >= nsrc || g->offset < 0 || g->length <= 0 || g->dst < 0 ||
            g->dst + g->length > dst_len)
            return fl_error_set(err, FL_E_INVALID, 0, g->src, g->offset, g->length,
                                "range outside the source table or the destination buffer");
        nparts += (g->length + psz - 1) / psz;
    }
    if (nparts == 0) return FL_OK;
    int inflight_max = opts->max_inflight > 0 ? opts->max_inflight : 1;
    if (inflight_max > nparts) inflight_max = (int)nparts;
    read_t r = {.ctx = ctx, .urls = urls, .dst = dst, .opts = opts, .err = err, .nparts = nparts};
    r.parts = calloc((size_t)nparts, sizeof(part_t));
    r.waiting = calloc((size_t)nparts, sizeof(int64_t));
    r.hdrs = calloc((size_t)(nsrc > 0 ? nsrc : 1), sizeof(*r.hdrs));
    if (!r.parts || !r.waiting || !r.hdrs || ensure_slots(ctx, inflight_max) != 0) {
        fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate the transfer table");
        goto out;
    }
    for (int i = 0; i < nsrc; i++) {
        r.hdrs[i] = header_list(headers ? headers[i] : NULL);
        if (r.hdrs[i] == (struct curl_slist *)-1) {
            r.hdrs[i] = NULL;
            fl_error_set(err, FL_E_NOMEM, 0, i, 0, 0, "cannot allocate request headers");
            goto out;
        }
    }
    int64_t k = 0;
    for (int64_t i = 0; i < nranges; i++) {
        for (int64_t o = 0; o < ranges[i].length; o += psz) {
            part_t *p = &r.parts[k++];
            p->src = ranges[i].src;
            p->offset = ranges[i].offset + o;
            p->length = ranges[i].length - o < psz ? ranges[i].length - o : psz;
            p->dst = ranges[i].dst + o;
        }
    }

    double t0 = now_s(), deadline = opts->timeout > 0 ? t0 + opts->timeout : 0, next_cancel_check = t0;
    int64_t next_fresh = 0, done = 0;
    int inflight = 0;
    while (!r.failed && done < nparts) {
        double t = now_s();
        /* fill free slots: due retries first, then fresh parts */
        for (int si = 0; si < inflight_max && inflight < inflight_max; si++) {
            slot_t *s = &ctx->slots[si];
            if (s->part) continue;
            part_t *p = NULL;
            for (int64_t w = 0; w < r.nwaiting; w++) {
                if (r.parts[r.waiting[w]].not_before <= t) {
                    p = &r.parts[r.waiting[w]];
                    r.waiting[w] = r.waiting[--r.nwaiting];
                    break;
                }
            }
            if (!p && next_fresh < nparts) p = &r.parts[next_fresh++];
            if (!p) break;
            if (start_get(&r, s, p) != 0) {
                fail(&r, FL_E_INVALID, p, 0, 0, "%s", "curl_multi_add_handle failed");
                break;
            }
            inflight++;
        }
        if (r.failed) break;
        int running = 0;
        CURLMcode mc = C.multi_perform(ctx->multi, &running);
        if (mc != 0) {
            fail(&r, FL_E_CONNECTION, NULL, 0, 0, "curl_multi_perform: %s", C.multi_strerror(mc));
            break;
        }
        CURLMsg *m;
        int left;
        while ((m = C.multi_info_read(ctx->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            slot_t *s = NULL;
            for (int si = 0; si < inflight_max; si++)
                if (ctx->slots[si].easy == m->easy_handle) s = &ctx->slots[si];
            if (!s || !s->part) continue;
            CURLcode res = m->data.result;
            int complete = finish_get(&r, s, res);
            stop_get(&r, s);
            inflight--;
            done += complete;
        }
        if (r.failed || done == nparts) break;
        t = now_s();
        if (deadline && t >= deadline) {
            part_t *p = NULL;
            for (int si = 0; si < inflight_max && !p; si++) p = ctx->slots[si].part;
            if (!p && r.nwaiting) p = &r.parts[r.waiting[0]];
            char msg[96];
            snprintf(msg, sizeof(msg), "the read did not finish within timeout=%gs", opts->timeout);
            fail(&r, FL_E_TIMEOUT, p, 0, 0, "%s", msg);
            break;
        }
        if (opts->cancel && t >= next_cancel_check) {
            next_cancel_check = t + 0.005;
            if (opts->cancel(opts->cancel_arg)) {
                fail(&r, FL_E_CANCELLED, NULL, 0, 0, "%s", "read cancelled");
                break;
            }
        }
        double wait = 0.1;
        for (int64_t w = 0; w < r.nwaiting; w++) {
            double d = r.parts[r.waiting[w]].not_before - t;
            if (d < wait) wait = d;
        }
        if (deadline && deadline - t < wait) wait = deadline - t;
        int wait_ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        if (inflight == 0) {
            if (wait_ms > 0) {
                struct timespec ts = {wait_ms / 1000, (long)(wait_ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
        } else if (C.multi_poll) {
            C.multi_poll(ctx->multi, NULL, 0, wait_ms, NULL);
        } else {
            C.multi_wait(ctx->multi, NULL, 0, wait_ms, NULL);
        }
    }
out:
    if (ctx->slots)
        for (int si = 0; si < ctx->nslots; si++)
            if (ctx->slots[si].part) stop_get(&r, &ctx->slots[si]);
    if (r.hdrs)
        for (int i = 0; i < nsrc; i++) C.slist_free_all(r.hdrs[i]);
    free(r.hdrs);
    free(r.parts);
    free(r.waiting);
    return err->code;
}
