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
    int64_t writes;        /* write-callback calls of this GET */
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
    s->writes++;
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
    s->got = s->skip = s->writes = 0;
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
    r->ctx->stats.writes += s->writes;
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
    /* A long curl message is cut to the buffer: the cause stays readable. */
    if (snprintf(cause, sizeof(cause), "%s%s%s", C.easy_strerror(res), s->errbuf[0] ? ": " : "",
                 s->errbuf) >= (int)sizeof(cause))
        cause[sizeof(cause) - 1] = 0;
    if (transient)
        retry_or_fail(r, p, code, status, res, 0, cause);
    else
        fail(r, code, p, status, res, "%s", cause);
    return 0;
}

static struct curl_slist *header_list(const char *lines) {
    struct curl_slist *l = NULL;
    if (!lines) return NULL;
    const char *p = lines;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t k = e ? (size_t)(e - p) : strlen(p);
        if (k > 0) {
            /* any length: a session token has no fixed size, and a dropped
             * signed header voids the signature */
            char *line = strndup(p, k);
            struct curl_slist *n = line ? C.slist_append(l, line) : NULL;
            free(line);
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

    double t0 = now_s(), deadline = opts->timeout > 0 ? t0 + opts->timeout : 0;
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
        int left, finished = 0;
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
            finished++;
            done += complete;
        }
        if (r.failed || done == nparts) break;
        t = now_s();
        if (deadline && t >= deadline) {
            part_t *p = NULL;
            for (int si = 0; si < inflight_max && !p; si++) p = ctx->slots[si].part;
            if (!p && r.nwaiting) p = &r.parts[r.waiting[0]];
            char msg[96];
            snprintf(msg, sizeof(msg), "the read did not finish within timeout=%.3gs", opts->timeout);
            fail(&r, FL_E_TIMEOUT, p, 0, 0, "%s", msg);
            break;
        }
        if (fl_cancel_requested(opts->cancel)) { /* no GIL needed, so every turn */
            fail(&r, FL_E_CANCELLED, NULL, 0, 0, "%s", "read cancelled");
            break;
        }
        double wait = opts->cancel ? 0.02 : 0.1; /* a cancel is seen within 20 ms */
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
            if (ctx->slots[si].part) stop_get(&r, &ctx->slots[si]);
    if (r.hdrs)
        for (int i = 0; i < nsrc; i++) C.slist_free_all(r.hdrs[i]);
    free(r.hdrs);
    free(r.parts);
    free(r.waiting);
    return err->code;
}
