/* Parallel ranged GETs into one buffer, driven by libcurl's multi interface:
 * a C write callback copies each chunk to its place, failures are retried
 * (resuming from the first missing byte), connections stay alive between reads. */
#define _GNU_SOURCE
#include "fl_http_reader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fl_cancel.h"
#include "fl_curl_abi.h"
#include "fl_http_retry.h"

#define C fl_curl /* the bound libcurl functions */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct slot_s;
struct read_s;

/* What a part's bytes come from: its own ranged GET, or the one whole-object GET of
 * its source (the server ignored Range): the leader's GET fills every member. */
enum { ROLE_NORMAL = 0, ROLE_LEADER = 1, ROLE_MEMBER = 2 };

typedef struct {
    int32_t src;
    int32_t role;
    int64_t offset, length, dst;
    int64_t got;           /* bytes delivered so far (kept across retries: resume) */
    int attempts;
    double first_fail, not_before;
    struct slot_s *slot;   /* the slot fetching it; NULL when none */
    int64_t wait_pos;      /* its place in the retry queue; -1 when not waiting */
} part_t;

enum {
    BODY_UNCHECKED = 0,
    BODY_DATA,     /* the bytes of the part's range */
    BODY_STREAM,   /* the whole object: scattered to every part of the source */
    BODY_ERROR,
    BODY_MISMATCH,
    BODY_PAST_END,
    BODY_CHANGED,  /* another version than the one the read is pinned to */
};

typedef struct slot_s {
    CURL *easy;
    struct read_s *r;      /* the read it serves */
    part_t *part;          /* NULL when idle; a stream's leader */
    int64_t req_start;     /* first byte asked for in this GET */
    int64_t got;           /* bytes delivered by this GET */
    int64_t pos;           /* stream: object offset of the next body byte */
    int64_t writes;        /* write-callback calls of this GET */
    int mode;
    int stream;            /* asked for the whole object (no Range) */
    int abort;             /* its part went to a stream: stop it after this turn */
    int done_early;        /* all wanted bytes came, the rest of the body was refused */
    int have_cr;
    int64_t cr_start, cr_end, cr_total;
    int64_t content_length;
    int64_t claim_end;     /* one past the last object byte the response claims to hold; -1: no claim */
    int overrun;           /* the body went on past what its Content-Range claimed */
    char encoding[32];     /* Content-Encoding: "" when none (or identity) */
    double retry_after;
    char etag[FL_PIN_ETAG_LEN];
    char last_modified[FL_PIN_DATE_LEN];
    char why[200];         /* what changed (BODY_CHANGED), what did not match (BODY_MISMATCH) */
    size_t elen;
    char ebody[768];
    char range[64];
    char errbuf[CURL_ERROR_SIZE];
} slot_t;

/* Per source: its parts (sorted by offset once it streams) and the stream's progress. */
typedef struct {
    int64_t first, count;  /* its parts: part_idx[first .. first + count) */
    int64_t lo;            /* stream cursor: the parts before it are complete */
    int64_t left;          /* stream: parts not complete yet */
    int64_t finished;      /* stream: parts completed and not counted yet */
    int64_t need_end;      /* stream: one past the last byte a part wants */
    int streaming;
} src_t;

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

/* A decimal number; -1 when there is none, `too_big` when it does not fit in an int64
 * (a hostile header must not overflow: that is undefined behaviour). */
static int64_t parse_i64(const char **p, int64_t too_big) {
    int64_t v = 0;
    int any = 0, over = 0;
    while (**p >= '0' && **p <= '9') {
        int d = **p - '0';
        if (v > (INT64_MAX - d) / 10) over = 1;
        else v = v * 10 + d;
        (*p)++;
        any = 1;
    }
    return !any ? -1 : over ? too_big : v;
}

/* Copies a header value (leading blanks and the trailing CR LF dropped), cut to n - 1
 * bytes; a control character becomes '?' (the value may end up in an error message). */
static void header_value(char *out, size_t n, const char *p, size_t len) {
    while (len && (*p == ' ' || *p == '\t')) p++, len--;
    while (len && (p[len - 1] == '\r' || p[len - 1] == '\n' || p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (len >= n) len = n - 1;
    memcpy(out, p, len);
    out[len] = 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] == 0x7f) out[i] = '?';
}

void fl_http_etag_key(char *out, const char *value, size_t len) {
    while (len && (*value == ' ' || *value == '\t')) value++, len--;
    while (len && (value[len - 1] == '\r' || value[len - 1] == '\n' || value[len - 1] == ' ' ||
                   value[len - 1] == '\t'))
        len--;
    /* the opaque tag alone: W/"x", "x" and x (listings of some servers) name one version */
    if (len >= 2 && value[0] == 'W' && value[1] == '/') value += 2, len -= 2;
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') value++, len -= 2;
    size_t k = len;
    if (len >= FL_PIN_ETAG_LEN - 1) k = 96; /* then a hash of all of it follows */
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)value[i];
        out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c; /* it may end up in a message */
    }
    out[k] = 0;
    if (k == len) return;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)value[i]) * 0x100000001b3ull;
    snprintf(out + k, FL_PIN_ETAG_LEN - k, "~%016llx", (unsigned long long)h);
}

static size_t header_cb(char *ptr, size_t size, size_t n, void *ud) {
    slot_t *s = (slot_t *)ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        /* a new response (after 100-continue or a redirect): forget the last one's headers */
        s->have_cr = 0;
        s->retry_after = 0;
        s->content_length = -1;
        s->etag[0] = s->last_modified[0] = s->encoding[0] = 0;
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
            s->cr_start = parse_i64(&p, -1);
            if (*p == '-') {
                p++;
                s->cr_end = parse_i64(&p, -1);
            }
        }
        if (*p == '/') {
            p++;
            s->cr_total = parse_i64(&p, -1);
        }
        s->have_cr = 1;
    } else if (len > 15 && strncasecmp(ptr, "content-length:", 15) == 0) {
        const char *p = ptr + 15;
        while (*p == ' ') p++;
        s->content_length = parse_i64(&p, -1);
    } else if (len > 17 && strncasecmp(ptr, "content-encoding:", 17) == 0) {
        header_value(s->encoding, sizeof(s->encoding), ptr + 17, len - 17);
        if (strcasecmp(s->encoding, "identity") == 0) s->encoding[0] = 0;
    } else if (len > 5 && strncasecmp(ptr, "etag:", 5) == 0) {
        fl_http_etag_key(s->etag, ptr + 5, len - 5);
    } else if (len > 14 && strncasecmp(ptr, "last-modified:", 14) == 0) {
        header_value(s->last_modified, sizeof(s->last_modified), ptr + 14, len - 14);
    } else if (len > 12 && strncasecmp(ptr, "retry-after:", 12) == 0) {
        const char *p = ptr + 12;
        while (*p == ' ') p++;
        /* delta-seconds (past an int64: longer than any deadline); an HTTP-date falls back
         * to backoff */
        int64_t v = parse_i64(&p, INT64_MAX);
        if (v >= 0) s->retry_after = (double)v;
    }
    return len;
}

typedef struct read_s {
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
    fl_http_pin *pins;     /* per source: the version this read is pinned to */
    src_t *srcs;
    int64_t *part_idx;     /* part indices grouped by source (src_t.first/count) */
} read_t;

static void wait_push(read_t *r, part_t *p) {
    p->wait_pos = r->nwaiting;
    r->waiting[r->nwaiting++] = p - r->parts;
}

static void wait_remove(read_t *r, part_t *p) {
    int64_t w = p->wait_pos;
    if (w < 0) return;
    int64_t moved = r->waiting[--r->nwaiting];
    r->waiting[w] = moved;
    r->parts[moved].wait_pos = w;
    p->wait_pos = -1;
}

/* Does a response of total size `total` (-1: unknown) come from the pinned version?
 * Unknown parts of the pin are taken from it. */
static int pin_accepts(read_t *r, slot_t *s, fl_http_pin *pin, int64_t total) {
    if (!r->ctx->cfg.pin_version) return 1;
    /* keys (fl_http_etag_key): "" is no ETag (rclone without hashes sends "" for all) */
    const char *etag = s->etag;
    const char *pinned = pin->etag;
    if (pinned[0] && etag[0]) {
        if (strcmp(pinned, etag) != 0) {
            snprintf(s->why, sizeof(s->why), "ETag \"%.80s\" became \"%.80s\"", pinned, etag);
            return 0;
        }
    } else if (!pinned[0] && !etag[0] && pin->last_modified[0] && s->last_modified[0] &&
               strcmp(pin->last_modified, s->last_modified) != 0) {
        snprintf(s->why, sizeof(s->why), "Last-Modified %.60s became %.60s", pin->last_modified,
                 s->last_modified);
        return 0;
    }
    if (pin->total >= 0 && total >= 0 && pin->total != total) {
        snprintf(s->why, sizeof(s->why), "its size was %lld bytes, the server now says %lld",
                 (long long)pin->total, (long long)total);
        return 0;
    }
    if (pin->total < 0) pin->total = total;
    if (!pinned[0] && etag[0]) snprintf(pin->etag, sizeof(pin->etag), "%s", etag);
    if (!pin->last_modified[0] && s->last_modified[0])
        snprintf(pin->last_modified, sizeof(pin->last_modified), "%s", s->last_modified);
    return 1;
}

static int cmp_offset(const void *a, const void *b, void *parts) {
    const part_t *pa = &((const part_t *)parts)[*(const int64_t *)a];
    const part_t *pb = &((const part_t *)parts)[*(const int64_t *)b];
    return pa->offset < pb->offset ? -1 : pa->offset > pb->offset;
}

/* The server ignores Range: `leader`'s GET (whole object, no Range) fills every part of
 * its source that is not complete. Parts fetched by other GETs are taken over (those
 * GETs are stopped after this turn: no curl call may remove a handle from a callback). */
static void begin_stream(read_t *r, part_t *leader) {
    src_t *st = &r->srcs[leader->src];
    int64_t *idx = r->part_idx + st->first;
    qsort_r(idx, (size_t)st->count, sizeof(int64_t), cmp_offset, r->parts);
    st->streaming = 1;
    st->lo = st->left = st->finished = st->need_end = 0;
    leader->role = ROLE_LEADER;
    for (int64_t i = 0; i < st->count; i++) {
        part_t *q = &r->parts[idx[i]];
        if (q->got == q->length) continue;
        st->left++;
        if (q->offset + q->length > st->need_end) st->need_end = q->offset + q->length;
        if (q == leader) continue;
        q->role = ROLE_MEMBER;
        if (q->slot) q->slot->abort = 1;
        wait_remove(r, q);
    }
    r->ctx->stats.streams++;
}

/* Whether a 206 (or a 200 with Content-Range) holds the bytes asked for: its Content-Range
 * names them (start where the request starts, end no earlier, within its own total) and
 * its Content-Length agrees (a compressed range does not: Content-Encoding). Else
 * s->why says what was wrong. */
static int content_range_ok(slot_t *s) {
    int64_t want = s->stream ? 0 : s->req_start;
    if (!s->have_cr) {
        snprintf(s->why, sizeof(s->why), "%s", "HTTP 206 without a Content-Range");
        return 0;
    }
    if (s->cr_start < 0 || s->cr_end < s->cr_start || (s->cr_total >= 0 && s->cr_end >= s->cr_total)) {
        snprintf(s->why, sizeof(s->why), "%s", "a malformed Content-Range");
        return 0;
    }
    if (s->cr_start != want) {
        snprintf(s->why, sizeof(s->why), "bytes %lld-%lld", (long long)s->cr_start, (long long)s->cr_end);
        return 0;
    }
    int64_t n = s->cr_end - s->cr_start + 1;
    if (s->encoding[0] && s->content_length < 0) {
        /* a content coding on a body of no stated length: nothing says it is the range's
         * bytes as stored (an object stored compressed comes with its Content-Length) */
        snprintf(s->why, sizeof(s->why), "bytes %lld-%lld (Content-Encoding: %.24s) in a body of no length",
                 (long long)s->cr_start, (long long)s->cr_end, s->encoding);
        return 0;
    }
    if (s->content_length >= 0 && s->content_length != n) {
        snprintf(s->why, sizeof(s->why), "bytes %lld-%lld in a body of %lld bytes%s%.24s%s",
                 (long long)s->cr_start, (long long)s->cr_end, (long long)s->content_length,
                 s->encoding[0] ? " (Content-Encoding: " : "", s->encoding, s->encoding[0] ? ")" : "");
        return 0;
    }
    return 1;
}

/* Decides, at the first body byte (headers complete), what the body is. */
static void check_response(slot_t *s) {
    read_t *r = s->r;
    long status = 0;
    C.easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    part_t *p = s->part;
    fl_http_pin *pin = &r->pins[p->src];
    int64_t req_end = p->offset + p->length; /* exclusive */
    int64_t total;
    int whole;
    if (status == 206 || (status == 200 && s->have_cr)) {
        if (!content_range_ok(s)) {
            s->mode = BODY_MISMATCH;
            return;
        }
        total = s->cr_total;
        whole = s->stream;
        s->claim_end = s->cr_end + 1;
        if (!s->stream && pin->range_mode == FL_RANGE_UNKNOWN) pin->range_mode = FL_RANGE_HONOURED;
    } else if (status == 200) {
        if (s->encoding[0]) {
            /* nothing asked for a content coding: the body would be other bytes than the
             * object's (with its length, not the object's, in Content-Length) */
            snprintf(s->why, sizeof(s->why),
                     "the whole object compressed (Content-Encoding: %.24s, not asked for)",
                     s->encoding);
            s->mode = BODY_MISMATCH;
            return;
        }
        total = s->content_length; /* the whole object, whatever Range asked for */
        whole = 1;
    } else {
        s->mode = BODY_ERROR;
        return;
    }
    if (!pin_accepts(r, s, pin, total)) {
        s->cr_total = total;
        s->mode = BODY_CHANGED;
        return;
    }
    if (!whole) {
        s->mode = total >= 0 && req_end > total ? BODY_PAST_END : BODY_DATA;
        return;
    }
    if (!s->stream) { /* asked for a range, got the whole object */
        pin->range_mode = FL_RANGE_IGNORED;
        if (!r->srcs[p->src].streaming) begin_stream(r, p);
        s->stream = 1;
    }
    s->pos = 0;
    s->cr_total = total;
    s->mode = total >= 0 && r->srcs[p->src].need_end > total ? BODY_PAST_END : BODY_STREAM;
}

/* A chunk of a whole-object body: its bytes go to every part of the source that
 * wants them next (parts are filled front to back, so a resumed stream skips what
 * a part already holds). */
static size_t stream_write(slot_t *s, const char *ptr, size_t len) {
    read_t *r = s->r;
    src_t *st = &r->srcs[s->part->src];
    int64_t *idx = r->part_idx + st->first;
    int64_t pos = s->pos, end = pos + (int64_t)len;
    while (st->lo < st->count && r->parts[idx[st->lo]].got == r->parts[idx[st->lo]].length) st->lo++;
    for (int64_t i = st->lo; i < st->count; i++) {
        part_t *q = &r->parts[idx[i]];
        if (q->offset >= end) break;
        if (q->role == ROLE_NORMAL || q->got == q->length) continue;
        int64_t want = q->offset + q->got;
        if (want < pos || want >= end) continue;
        int64_t stop = q->offset + q->length < end ? q->offset + q->length : end;
        memcpy(r->dst + q->dst + q->got, ptr + (want - pos), (size_t)(stop - want));
        q->got += stop - want;
        s->got += stop - want;
        if (q->got == q->length) {
            st->left--;
            st->finished++;
        }
    }
    s->pos = end;
    if (st->left == 0) {
        s->done_early = 1; /* every part is complete: the rest of the body is not needed */
        return 0;
    }
    return len;
}

static size_t write_cb(char *ptr, size_t size, size_t n, void *ud) {
    slot_t *s = (slot_t *)ud;
    size_t len = size * n;
    s->writes++;
    if (s->abort) return 0; /* its part went to a stream */
    if (s->mode == BODY_UNCHECKED) check_response(s);
    if (s->mode == BODY_ERROR) {
        size_t room = sizeof(s->ebody) - 1 - s->elen;
        size_t k = len < room ? len : room;
        memcpy(s->ebody + s->elen, ptr, k);
        s->elen += k;
        s->ebody[s->elen] = 0;
        return len;
    }
    if (s->mode == BODY_STREAM) {
        /* a whole-object body holds no bytes past what its Content-Range claimed */
        if (s->claim_end >= 0 && s->pos + (int64_t)len > s->claim_end) {
            size_t k = s->claim_end > s->pos ? (size_t)(s->claim_end - s->pos) : 0;
            if (k && stream_write(s, ptr, k) == 0) return 0; /* every part came first */
            s->overrun = 1;
            return 0;
        }
        return stream_write(s, ptr, len);
    }
    if (s->mode != BODY_DATA) return 0; /* abort: reported at completion */
    part_t *p = s->part;
    int64_t room = p->length - p->got;
    /* bytes past what the Content-Range claimed are no bytes of the range */
    int64_t claimed = s->claim_end >= 0 ? s->claim_end - (p->offset + p->got) : room;
    if (claimed < room) room = claimed < 0 ? 0 : claimed;
    size_t k = len;
    if ((int64_t)k > room) k = (size_t)room;
    memcpy(s->r->dst + p->dst + p->got, ptr, k);
    p->got += (int64_t)k;
    s->got += (int64_t)k;
    if (k < len) {
        if (p->got < p->length) s->overrun = 1; /* more body than its Content-Range claimed */
        else s->done_early = 1; /* never write past the part's end */
        return 0;
    }
    return len;
}

static int header_line_ok(const char *line, size_t k);

fl_http_ctx *fl_http_ctx_new(const fl_http_config *cfg, fl_error *err) {
    if (!C.lib) {
        fl_error_set(err, FL_E_UNSUPPORTED, 0, -1, 0, 0, "libcurl is not loaded");
        return NULL;
    }
    if (cfg->user_agent && !header_line_ok(cfg->user_agent, strlen(cfg->user_agent))) {
        fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "user_agent holds a control character");
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
    C.easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* an S3 key may hold "../": send it, signed, as is */
    C.easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    C.easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    C.easy_setopt(e, CURLOPT_WRITEFUNCTION, (curl_cb)write_cb);
    C.easy_setopt(e, CURLOPT_HEADERFUNCTION, (curl_cb)header_cb);
    C.easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    long bs = c->buffer_size > 0 ? c->buffer_size : 1L << 20;
    C.easy_setopt(e, CURLOPT_BUFFERSIZE, bs > CURL_MAX_READ_SIZE ? (long)CURL_MAX_READ_SIZE : bs);
    C.easy_setopt(e, CURLOPT_HTTP_VERSION, (long)(c->http2 ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1));
    /* with HTTP/2, wait for the first connection to say whether it multiplexes
     * instead of opening one connection per part */
    if (c->http2) C.easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    C.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, (long)(c->verify ? 1 : 0));
    C.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, (long)(c->verify ? 2 : 0));
    if (ctx->ca_bundle) C.easy_setopt(e, CURLOPT_CAINFO, ctx->ca_bundle);
    if (ctx->user_agent) C.easy_setopt(e, CURLOPT_USERAGENT, ctx->user_agent);
    if (c->connect_timeout_ms > 0) C.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    if (c->low_speed_time > 0) {
        C.easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, c->low_speed_limit > 0 ? c->low_speed_limit : 1L);
        C.easy_setopt(e, CURLOPT_LOW_SPEED_TIME, c->low_speed_time);
    }
    /* http(s) only, first request and redirects alike (a redirect to file:// or any
     * other scheme fails); start_get narrows redirects of an https:// URL to https:// */
    C.easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    C.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    if (c->follow_redirects) {
        C.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        C.easy_setopt(e, CURLOPT_MAXREDIRS, (long)FL_HTTP_MAX_REDIRECTS);
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

static int start_get(read_t *r, slot_t *s, part_t *p) {
    s->r = r;
    s->part = p;
    s->stream = p->role == ROLE_LEADER;
    s->req_start = p->offset + p->got;
    s->got = s->pos = s->writes = 0;
    s->mode = BODY_UNCHECKED;
    s->abort = s->done_early = s->have_cr = s->overrun = 0;
    s->content_length = s->claim_end = -1;
    s->encoding[0] = 0;
    s->retry_after = 0;
    s->etag[0] = s->last_modified[0] = s->why[0] = 0;
    s->elen = 0;
    s->ebody[0] = 0;
    s->errbuf[0] = 0;
    snprintf(s->range, sizeof(s->range), "%lld-%lld", (long long)s->req_start,
             (long long)(p->offset + p->length - 1));
    C.easy_setopt(s->easy, CURLOPT_URL, r->urls[p->src]);
    if (r->ctx->cfg.follow_redirects) /* no redirect from https:// down to plain http:// */
        C.easy_setopt(s->easy, CURLOPT_REDIR_PROTOCOLS,
                      (long)(strncasecmp(r->urls[p->src], "https:", 6) == 0
                                 ? CURLPROTO_HTTPS
                                 : CURLPROTO_HTTP | CURLPROTO_HTTPS));
    /* a stream asks for the whole object: its server ignores Range anyway */
    C.easy_setopt(s->easy, CURLOPT_RANGE, s->stream ? NULL : s->range);
    C.easy_setopt(s->easy, CURLOPT_HTTPHEADER, r->hdrs[p->src]);
    if (C.multi_add_handle(r->ctx->multi, s->easy) != 0) {
        s->part = NULL;
        return -1;
    }
    p->slot = s;
    r->ctx->stats.requests++;
    if (p->attempts > 0) r->ctx->stats.retries++;
    return 0;
}

static void stop_get(read_t *r, slot_t *s) {
    C.multi_remove_handle(r->ctx->multi, s->easy);
    C.easy_setopt(s->easy, CURLOPT_HTTPHEADER, (void *)NULL);
    if (s->part) s->part->slot = NULL;
    s->part = NULL;
    s->abort = 0;
}

/* Counters of a GET that ended (finished, failed or stopped). */
static void account(read_t *r, slot_t *s) {
    long nc = 0;
    C.easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &nc);
    r->ctx->stats.connects += nc;
    r->ctx->stats.bytes += s->got;
    r->ctx->stats.writes += s->writes;
}

static void fail(read_t *r, int code, const part_t *p, long status, int curl_code, const char *fmt,
                 const char *detail) {
    if (r->failed) return;
    r->failed = 1;
    fl_error_set(r->err, code, 0, p ? p->src : -1, p ? p->offset : 0, p ? p->length : 0, fmt,
                 detail);
    /* the text quotes what a server sent (an ETag, curl's account of a reply): no control
     * character (a CR LF, a terminal escape) gets into a message or a log line */
    for (char *c = r->err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f) *c = '?';
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
    if (!b || b == a || (size_t)(b - a) >= n) return;
    /* an S3 error code is a word (NoSuchKey, SlowDown): anything else is not one, and
     * is not repeated (it could be anything the server chose to put there) */
    for (const char *c = a; c < b; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return;
    memcpy(out, a, (size_t)(b - a));
    out[b - a] = 0;
}

/* The retry budget, as errors show it. */
static void budget_text(const fl_http_config *c, char *out, size_t n) {
    char count[32];
    if (c->max_retries < 0)
        snprintf(count, sizeof(count), "None");
    else
        snprintf(count, sizeof(count), "%d", c->max_retries);
    snprintf(out, n, "max_retries=%s, retry_deadline=%gs, backoff %g-%gs", count, c->retry_deadline,
             c->backoff_base, c->backoff_cap);
}

/* A transient failure: schedule the part again, or give up when the budget is spent. */
static void retry_or_fail(read_t *r, part_t *p, int code, long status, int curl_code, double retry_after,
                          const char *cause) {
    const fl_http_config *c = &r->ctx->cfg;
    double t = now_s();
    if (p->first_fail == 0) p->first_fail = t;
    double delay = fl_http_backoff(p->attempts - 1, c->backoff_base, c->backoff_cap, retry_after, &r->ctx->rng);
    const char *why = NULL;
    if (c->max_retries >= 0 && p->attempts > c->max_retries)
        why = "max_retries";
    else if (t + delay - p->first_fail > c->retry_deadline)
        why = "retry_deadline";
    if (why) {
        char budget[128], msg[256];
        budget_text(c, budget, sizeof(budget));
        snprintf(msg, sizeof(msg), "retries exhausted (%s) after %.1f s of retries (budget: %s); last failure: %s",
                 why, t - p->first_fail, budget, cause);
        fail(r, code, p, status, curl_code, "%s", msg);
        return;
    }
    p->not_before = t + delay;
    wait_push(r, p);
}

/* A GET ended (well or not): account for it. Returns how many parts it completed. */
static int64_t finish_get(read_t *r, slot_t *s, CURLcode res) {
    part_t *p = s->part;
    long status = 0;
    C.easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    account(r, s);
    p->attempts++;
    /* headers came but no body byte (an empty body): decide what it was now */
    if (s->mode == BODY_UNCHECKED && status != 0) {
        if (status == 200 || status == 206)
            check_response(s);
        else
            s->mode = BODY_ERROR;
    }
    src_t *st = &r->srcs[p->src];
    int64_t completed = 0;
    if (s->stream) {
        completed = st->finished;
        st->finished = 0;
    } else if (p->got == p->length) {
        return 1; /* every byte came (a failure after the last one does not matter) */
    }
    char cause[320];
    int transient;
    if (s->mode == BODY_MISMATCH || s->overrun) {
        if (s->overrun)
            snprintf(s->why, sizeof(s->why), "more body than its Content-Range bytes %lld-%lld",
                     (long long)s->cr_start, (long long)s->cr_end);
        snprintf(cause, sizeof(cause), "server answered %.150s for a request of %.64s", s->why,
                 s->stream ? "the whole object" : s->range);
        fail(r, FL_E_HTTP, p, status, 0, "%s", cause);
        return completed;
    }
    if (s->mode == BODY_CHANGED) {
        snprintf(cause, sizeof(cause), "the object changed during the read (%s)", s->why);
        fail(r, FL_E_CHANGED, p, status, 0, "%s", cause);
        r->err->obj_size = s->cr_total;
        return completed;
    }
    if (s->mode == BODY_PAST_END) {
        fail(r, FL_E_RANGE, p, status, 0, "%s", "range ends past the end of the object");
        r->err->obj_size = s->cr_total;
        return completed;
    }
    int redirect_refused = res == CURLE_UNSUPPORTED_PROTOCOL || res == CURLE_TOO_MANY_REDIRECTS;
    if (s->mode == BODY_ERROR && status >= 300 && status < 400 && res != CURLE_OK &&
        !redirect_refused)
        s->mode = BODY_UNCHECKED; /* its target failed (a reset, a refused connection): a
                                   * transfer failure, retried as any other below */
    if (s->mode == BODY_ERROR && status >= 300 && status < 400) {
        /* a redirect not followed: follow_redirects=False (and never for signed S3
         * requests), too many, or to a refused scheme (curl's words say which: a scheme
         * or a count, not the Location) */
        char s3code[64];
        s3_error_code(s->ebody, s3code, sizeof(s3code));
        if (redirect_refused) {
            if (snprintf(cause, sizeof(cause), "redirect refused: %s%s%s", C.easy_strerror(res),
                         s->errbuf[0] ? ": " : "", s->errbuf) >= (int)sizeof(cause))
                cause[sizeof(cause) - 1] = 0;
        } else {
            snprintf(cause, sizeof(cause), "redirect not followed%s%s%s", s3code[0] ? " (" : "", s3code,
                     s3code[0] ? ")" : r->ctx->cfg.follow_redirects ? "" : " (follow_redirects=False)");
        }
        fail(r, FL_E_HTTP, p, status, res, "%s", cause);
        return completed;
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
        return completed;
    }
    if (res == CURLE_OK || (res == CURLE_WRITE_ERROR && s->done_early)) {
        if (s->stream && st->left == 0) return completed;
        if (s->stream)
            snprintf(cause, sizeof(cause), "whole-object body ended after %lld bytes",
                     (long long)s->pos);
        else
            snprintf(cause, sizeof(cause), "body ended after %lld of %lld bytes", (long long)p->got,
                     (long long)p->length);
        retry_or_fail(r, p, FL_E_SHORT, status, 0, 0, cause);
        return completed;
    }
    int code = fl_http_classify_curl(res, &transient);
    /* A long curl message is cut to the buffer: the cause stays readable. */
    if (snprintf(cause, sizeof(cause), "%s%s%s", C.easy_strerror(res), s->errbuf[0] ? ": " : "",
                 s->errbuf) >= (int)sizeof(cause))
        cause[sizeof(cause) - 1] = 0;
    if (transient)
        retry_or_fail(r, p, code, status, res, 0, cause);
    else
        fail(r, code, p, status, res, "%s", cause);
    return completed;
}

/* A header value may hold any byte but a control character (HTAB aside): a CR or LF
 * would end the header and start another one the caller never wrote. */
static int header_line_ok(const char *line, size_t k) {
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
    }
    return 1;
}

#define HEADERS_NOMEM ((struct curl_slist *)-1)
#define HEADERS_BAD ((struct curl_slist *)-2)

static struct curl_slist *header_list(const char *lines) {
    struct curl_slist *l = NULL;
    if (!lines) return NULL;
    const char *p = lines;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k > 0) {
            if (!header_line_ok(p, k)) {
                C.slist_free_all(l);
                return HEADERS_BAD;
            }
            /* any length: a session token has no fixed size, and a dropped
             * signed header voids the signature */
            char *line = strndup(p, k);
            struct curl_slist *n = line ? C.slist_append(l, line) : NULL;
            free(line);
            if (!n) {
                C.slist_free_all(l);
                return HEADERS_NOMEM;
            }
            l = n;
        }
        p += k;
        if (*p == '\n') p++;
    }
    return l;
}

/* The parts of each source, grouped (src_t.first/count into part_idx). */
static void group_by_source(read_t *r, int nsrc) {
    for (int64_t i = 0; i < r->nparts; i++) r->srcs[r->parts[i].src].count++;
    int64_t at = 0;
    for (int k = 0; k < nsrc; k++) {
        r->srcs[k].first = at;
        at += r->srcs[k].count;
        r->srcs[k].count = 0;
    }
    for (int64_t i = 0; i < r->nparts; i++) {
        src_t *st = &r->srcs[r->parts[i].src];
        r->part_idx[st->first + st->count++] = i;
    }
}

int fl_http_read(fl_http_ctx *ctx, const char *const *urls, const char *const *headers, int nsrc,
                 const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                 const fl_http_opts *opts, fl_error *err) {
    fl_error_clear(err);
    if (opts->part_size < 1)
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "part_size=%lld must be >= 1",
                            (long long)opts->part_size);
    int64_t psz = opts->part_size;
    int64_t nparts = 0;
    for (int64_t i = 0; i < nranges; i++) {
        const fl_range *g = &ranges[i];
        if (g->src < 0 || g->src >= nsrc || g->offset < 0 || g->length <= 0 || g->dst < 0 ||
            g->length > dst_len - g->dst)
            return fl_error_set(err, FL_E_INVALID, 0, g->src, g->offset, g->length,
                                "range outside the source table or the destination buffer");
        nparts += (g->length + psz - 1) / psz;
    }
    if (nparts == 0) return FL_OK;
    int inflight_max = opts->max_inflight > 0 ? opts->max_inflight : 1;
    if (inflight_max > nparts) inflight_max = (int)nparts;
    read_t r = {.ctx = ctx, .urls = urls, .dst = dst, .opts = opts, .err = err, .nparts = nparts};
    fl_http_pin *own_pins = NULL;
    size_t nsrc_alloc = (size_t)(nsrc > 0 ? nsrc : 1);
    r.parts = calloc((size_t)nparts, sizeof(part_t));
    r.waiting = calloc((size_t)nparts, sizeof(int64_t));
    r.part_idx = calloc((size_t)nparts, sizeof(int64_t));
    r.hdrs = calloc(nsrc_alloc, sizeof(*r.hdrs));
    r.srcs = calloc(nsrc_alloc, sizeof(src_t));
    r.pins = opts->pins;
    if (!r.pins) {
        r.pins = own_pins = calloc(nsrc_alloc, sizeof(fl_http_pin));
        if (own_pins)
            for (int i = 0; i < nsrc; i++) own_pins[i].total = -1;
    }
    if (!r.parts || !r.waiting || !r.part_idx || !r.hdrs || !r.srcs || !r.pins ||
        ensure_slots(ctx, inflight_max) != 0) {
        fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate the transfer table");
        goto out;
    }
    for (int i = 0; i < nsrc; i++) {
        r.hdrs[i] = header_list(headers ? headers[i] : NULL);
        if (r.hdrs[i] == HEADERS_NOMEM || r.hdrs[i] == HEADERS_BAD) {
            int bad = r.hdrs[i] == HEADERS_BAD;
            r.hdrs[i] = NULL;
            if (bad)
                fl_error_set(err, FL_E_INVALID, 0, i, 0, 0,
                             "a request header holds a control character (CR, LF, ...)");
            else
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
            p->wait_pos = -1;
        }
    }
    group_by_source(&r, nsrc);

    double t0 = now_s(), deadline = opts->timeout > 0 ? t0 + opts->timeout : 0;
    double last_interrupt_check = t0;
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
                    wait_remove(&r, p);
                    break;
                }
            }
            while (!p && next_fresh < nparts) {
                part_t *q = &r.parts[next_fresh++];
                if (q->role != ROLE_MEMBER && q->got < q->length) p = q; /* members: a stream fills them */
            }
            if (!p) break;
            /* a server known to ignore Range: one GET of the whole object serves every part */
            if (p->role == ROLE_NORMAL && r.pins[p->src].range_mode == FL_RANGE_IGNORED &&
                !r.srcs[p->src].streaming)
                begin_stream(&r, p);
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
        int left, finished = 0;
        while ((m = C.multi_info_read(ctx->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            slot_t *s = NULL;
            for (int si = 0; si < inflight_max; si++)
                if (ctx->slots[si].easy == m->easy_handle) s = &ctx->slots[si];
            if (!s || !s->part) continue;
            if (s->abort) { /* its part went to a stream */
                account(&r, s);
            } else {
                done += finish_get(&r, s, m->data.result);
            }
            stop_get(&r, s);
            inflight--;
            finished++;
        }
        /* GETs whose parts a stream took over */
        for (int si = 0; si < inflight_max; si++) {
            slot_t *s = &ctx->slots[si];
            if (s->part && s->abort) {
                account(&r, s);
                stop_get(&r, s);
                inflight--;
                finished++;
            }
        }
        if (r.failed || done == nparts) break;
        t = now_s();
        if (deadline && t >= deadline) {
            part_t *p = NULL;
            for (int si = 0; si < inflight_max && !p; si++) p = ctx->slots[si].part;
            if (!p && r.nwaiting) p = &r.parts[r.waiting[0]];
            char msg[96];
            snprintf(msg, sizeof(msg), "the read did not finish in the %.3g s it had", opts->timeout);
            fail(&r, FL_E_TIMEOUT, p, 0, 0, "%s", msg);
            break;
        }
        if (fl_cancel_requested(opts->cancel)) { /* no GIL needed, so every turn */
            fail(&r, FL_E_CANCELLED, NULL, 0, 0, "%s", "read cancelled");
            break;
        }
        if (opts->interrupt && t - last_interrupt_check >= 0.02) {
            last_interrupt_check = t;
            if (opts->interrupt(opts->interrupt_arg)) {
                fail(&r, FL_E_CANCELLED, NULL, 0, 0, "%s", "read interrupted");
                break;
            }
        }
        /* a cancel or an interrupt is seen within 20 ms */
        double wait = opts->cancel || opts->interrupt ? 0.02 : 0.1;
        for (int64_t w = 0; w < r.nwaiting; w++) {
            double d = r.parts[r.waiting[w]].not_before - t;
            if (d < wait) wait = d;
        }
        if (deadline && deadline - t < wait) wait = deadline - t;
        int wait_ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
        if (finished && (next_fresh < nparts || r.nwaiting)) wait_ms = 0; /* refill the freed slots now */
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
            if (ctx->slots[si].part) {
                account(&r, &ctx->slots[si]);
                stop_get(&r, &ctx->slots[si]);
            }
    if (r.hdrs)
        for (int i = 0; i < nsrc; i++) C.slist_free_all(r.hdrs[i]);
    free(r.hdrs);
    free(r.parts);
    free(r.waiting);
    free(r.part_idx);
    free(r.srcs);
    free(own_pins);
    return err->code;
}
