/* Images -> one batch: see fl_image_batch.h. */
#define _GNU_SOURCE
#include "fl_image_batch.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fl_collate.h"
#include "fl_parallel.h"
#include "fl_resample.h"

/* ---- probing -------------------------------------------------------------- */

static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int check_pixels(const fl_image_info *in, int64_t max_pixels, int64_t len, fl_error *e) {
    int64_t px = (int64_t)in->width * in->height;
    if (max_pixels > 0 && px > max_pixels)
        return fl_error_set(e, FL_E_TOO_LARGE, 0, -1, 0, len,
                            "%d x %d = %lld pixels is more than max_pixels=%lld "
                            "(a decompression bomb?)",
                            in->width, in->height, (long long)px, (long long)max_pixels);
    return FL_OK;
}

static int probe_one(const uint8_t *d, int64_t len, int strict, int64_t max_pixels,
                     fl_image_info *in, fl_error *e) {
    memset(in, 0, sizeof(*in));
    in->orientation = 1;
    if (len <= 0) return fl_error_set(e, FL_E_CORRUPT, 0, -1, 0, 0, "empty file (0 bytes)");
    if (fl_jpeg_is_jpeg(d, len)) {
        fl_jpeg_header h;
        int rc = fl_jpeg_parse_header(d, len, strict, &h, e);
        in->format = FL_IMG_JPEG;
        in->width = h.width;
        in->height = h.height;
        in->components = h.components;
        in->orientation = h.orientation;
        in->progressive = h.progressive;
        if (rc == FL_OK && h.lossless) in->format = FL_IMG_UNKNOWN; /* Pillow decodes it */
        return rc != FL_OK ? rc : check_pixels(in, max_pixels, len, e);
    }
    if (len >= 8 && memcmp(d, PNG_MAGIC, 8) == 0) {
        in->format = FL_IMG_PNG;
        if (len < 24 || memcmp(d + 12, "IHDR", 4) != 0)
            return fl_error_set(e, FL_E_CORRUPT, 0, -1, 0, len, "corrupt PNG: no IHDR chunk");
        uint32_t w = be32(d + 16), h = be32(d + 20);
        if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
            return fl_error_set(e, FL_E_CORRUPT, 0, -1, 0, len, "corrupt PNG: size %u x %u", w, h);
        in->width = (int32_t)w;
        in->height = (int32_t)h;
        return check_pixels(in, max_pixels, len, e);
    }
    in->format = FL_IMG_UNKNOWN;
    return FL_OK;
}

int64_t fl_image_probe(const uint8_t *const *data, const int64_t *len, int64_t n, int strict,
                       int64_t max_pixels, fl_image_info *info, fl_error *errs) {
    int64_t failed = 0;
    for (int64_t i = 0; i < n; i++) {
        fl_error_clear(&errs[i]);
        if (probe_one(data[i], len[i], strict, max_pixels, &info[i], &errs[i]) != FL_OK) {
            errs[i].src_index = (int)i;
            failed++;
        }
    }
    return failed;
}

/* ---- one image ------------------------------------------------------------- */

typedef struct {
    const fl_image_batch_args *a;
    atomic_llong next;
    atomic_llong failed, scaled, decoded_px, source_px, decode_ns, resample_ns, convert_ns;
    fl_error *errs;
} job_t;

typedef struct {
    fl_jpeg_decoder *dec;
    fl_resampler rs;
    uint8_t *tile, *tile2;
    size_t tile_cap, tile2_cap;
    /* the image in progress */
    double box[4];   /* stored coordinates, full resolution */
    int64_t out_w, out_h, stored_w, stored_h;
    int scale_num;   /* the decoder's DCT scale, of 8 (8 for decoded pixels) */
    uint8_t *target;
    int flip;
    int clip, antialias;
    int64_t resample_ns, decoded_px;
    int timing;
} thread_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int grow(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    uint8_t *p = realloc(*buf, need);
    if (!p) return -1;
    *buf = p;
    *cap = need;
    return 0;
}

/* The displayed box in stored coordinates, for EXIF orientation o (the
 * transform that turns the stored image into the displayed one). */
static void box_to_stored(int o, const double *b, double W, double H, double *s) {
    double x0 = b[0], y0 = b[1], x1 = b[2], y1 = b[3];
    switch (o) {
        case 2: s[0] = W - x1; s[2] = W - x0; s[1] = y0; s[3] = y1; break;
        case 3: s[0] = W - x1; s[2] = W - x0; s[1] = H - y1; s[3] = H - y0; break;
        case 4: s[0] = x0; s[2] = x1; s[1] = H - y1; s[3] = H - y0; break;
        case 5: s[0] = y0; s[2] = y1; s[1] = x0; s[3] = x1; break;
        case 6: s[0] = y0; s[2] = y1; s[1] = H - x1; s[3] = H - x0; break;
        case 7: s[0] = W - y1; s[2] = W - y0; s[1] = H - x1; s[3] = H - x0; break;
        case 8: s[0] = W - y1; s[2] = W - y0; s[1] = x0; s[3] = x1; break;
        default: s[0] = x0; s[1] = y0; s[2] = x1; s[3] = y1; break;
    }
}

/* The stored-orientation tile t (sw x sh) as displayed (dw x dh), mirrored when flip. */
static void orient_tile(const uint8_t *t, int64_t sw, int64_t sh, int o, int flip, uint8_t *d,
                        int64_t dw, int64_t dh) {
    for (int64_t yd = 0; yd < dh; yd++) {
        for (int64_t x = 0; x < dw; x++) {
            int64_t xd = flip ? dw - 1 - x : x, xs, ys;
            switch (o) {
                case 2: xs = sw - 1 - xd; ys = yd; break;
                case 3: xs = sw - 1 - xd; ys = sh - 1 - yd; break;
                case 4: xs = xd; ys = sh - 1 - yd; break;
                case 5: xs = yd; ys = xd; break;
                case 6: xs = yd; ys = sh - 1 - xd; break;
                case 7: xs = sw - 1 - yd; ys = sh - 1 - xd; break;
                case 8: xs = sw - 1 - yd; ys = xd; break;
                default: xs = xd; ys = yd; break;
            }
            const uint8_t *p = t + (ys * sw + xs) * 3;
            uint8_t *q = d + (yd * dw + x) * 3;
            q[0] = p[0];
            q[1] = p[1];
            q[2] = p[2];
        }
    }
}

/* The decoder knows the scaled size: set up both axes and ask for their window. */
static int on_begin(void *ctx, int64_t sw, int64_t sh, int64_t win[4], fl_error *err) {
    thread_t *t = (thread_t *)ctx;
    /* Scaled pixel j covers stored pixels [8j/k, 8(j+1)/k): the scale is k/8 exactly, and
     * the last pixel of a size that is no multiple of 8/k is a part pixel. Mapping by
     * sw / stored_w instead would stretch every box towards the right and bottom edges
     * (by up to half a scaled pixel: four stored pixels at 1/8). */
    double k = t->scale_num / 8.0;
    double sx = (int64_t)ceil(t->stored_w * k - 1e-9) == sw ? k : (double)sw / (double)t->stored_w;
    double sy = (int64_t)ceil(t->stored_h * k - 1e-9) == sh ? k : (double)sh / (double)t->stored_h;
    double b0 = t->box[0] * sx, b1 = t->box[2] * sx, c0 = t->box[1] * sy, c1 = t->box[3] * sy;
    int64_t xlo = 0, xhi = sw, ylo = 0, yhi = sh;
    if (t->clip) {
        xlo = (int64_t)floor(b0 + 1e-9), xhi = (int64_t)ceil(b1 - 1e-9);
        ylo = (int64_t)floor(c0 + 1e-9), yhi = (int64_t)ceil(c1 - 1e-9);
        if (xlo < 0) xlo = 0;
        if (ylo < 0) ylo = 0;
        if (xhi > sw) xhi = sw;
        if (yhi > sh) yhi = sh;
        if (xhi <= xlo) xhi = xlo + 1;
        if (yhi <= ylo) yhi = ylo + 1;
    }
    if (fl_axis_init(&t->rs.h, b0, b1, t->out_w, xlo, xhi, t->antialias) ||
        fl_axis_init(&t->rs.v, c0, c1, t->out_h, ylo, yhi, t->antialias) ||
        fl_resampler_start(&t->rs, t->target, t->out_w * 3, t->flip))
        return fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate the resampler");
    /* two pixels of margin left and right: libjpeg upsamples chroma at a
     * cropped window's edges as at the image's, so the pixels used stay inside */
    win[0] = t->rs.h.lo - 2;
    win[1] = t->rs.v.lo;
    win[2] = t->rs.h.hi + 2;
    win[3] = t->rs.v.hi;
    return FL_OK;
}

static void on_row(void *ctx, int64_t y, const uint8_t *rgb, int64_t x_first, int64_t width) {
    thread_t *t = (thread_t *)ctx;
    t->decoded_px += width;
    if (!t->timing) {
        fl_resampler_push(&t->rs, y, rgb, x_first, width);
        return;
    }
    int64_t t0 = now_ns();
    fl_resampler_push(&t->rs, y, rgb, x_first, width);
    t->resample_ns += now_ns() - t0;
}

/* The smallest k (of 8) that keeps a box of bw x bh at least ow x oh. */
static int dct_scale(int mode, double bw, double bh, int64_t ow, int64_t oh) {
    if (mode == FL_DCT_SCALE_OFF) return 8;
    int k = 1;
    while (k < 8 && (bw * k / 8.0 < (double)ow || bh * k / 8.0 < (double)oh)) k++;
    if (mode == FL_DCT_SCALE_POW2) k = k <= 1 ? 1 : k <= 2 ? 2 : k <= 4 ? 4 : 8;
    return k;
}

static int process(thread_t *t, job_t *j, int64_t i, fl_error *e) {
    const fl_image_batch_args *a = j->a;
    const fl_image_info *in = &a->info[i];
    int o = a->apply_orientation ? in->orientation : 1;
    if (o < 1 || o > 8) o = 1;
    int transposed = o >= 5;
    int64_t dh = a->out_size[2 * i], dw = a->out_size[2 * i + 1];
    t->out_w = transposed ? dh : dw;
    t->out_h = transposed ? dw : dh;
    t->stored_w = in->width;
    t->stored_h = in->height;
    t->flip = a->flip[i] != 0;
    t->clip = a->clip_to_box;
    t->antialias = a->antialias;
    t->timing = a->timing;
    t->resample_ns = 0;
    t->decoded_px = 0;
    if (in->width < 1 || in->height < 1 || dw < 1 || dh < 1)
        return fl_error_set(e, FL_E_INVALID, 0, (int)i, 0, 0, "empty image or output");
    if (a->max_pixels > 0 && (int64_t)in->width * in->height > a->max_pixels)
        return fl_error_set(e, FL_E_TOO_LARGE, 0, (int)i, 0, a->len[i],
                            "%d x %d pixels is more than max_pixels=%lld", in->width, in->height,
                            (long long)a->max_pixels);
    box_to_stored(o, a->box + 4 * i, in->width, in->height, t->box);
    char *slot = a->dst + a->dst_offset[i];
    int direct = !a->convert && o == 1;
    size_t tile_bytes = (size_t)(dw * dh * 3);
    if (!direct && grow(&t->tile, &t->tile_cap, tile_bytes))
        return fl_error_set(e, FL_E_NOMEM, 0, (int)i, 0, 0, "cannot allocate an image tile");
    t->target = direct ? (uint8_t *)slot : t->tile;
    if (o != 1) t->flip = 0; /* the orientation pass mirrors instead */
    int64_t t0 = a->timing ? now_ns() : 0;
    int rc;
    if (in->format == FL_IMG_JPEG) {
        if (!t->dec && !(t->dec = fl_jpeg_decoder_new()))
            return fl_error_set(e, FL_E_NOMEM, 0, (int)i, 0, 0, "cannot allocate a JPEG decoder");
        int k = dct_scale(a->dct_scaling, t->box[2] - t->box[0], t->box[3] - t->box[1],
                          t->out_w, t->out_h);
        if (k < 8) atomic_fetch_add(&j->scaled, 1);
        t->scale_num = k;
        fl_jpeg_sink sink = {on_begin, on_row, t};
        rc = fl_jpeg_decode(t->dec, a->data[i], a->len[i], &a->jpeg, k, &sink, e);
    } else {
        int64_t W = in->width, H = in->height;
        t->scale_num = 8;
        rc = on_begin(t, W, H, (int64_t[4]){0, 0, W, H}, e);
        for (int64_t y = t->rs.v.lo; rc == FL_OK && y < t->rs.v.hi; y++)
            on_row(t, y, a->data[i] + y * W * 3, 0, W);
    }
    if (rc == FL_OK && !fl_resampler_done(&t->rs))
        rc = fl_error_set(e, FL_E_CORRUPT, 0, (int)i, 0, a->len[i],
                          "the decoder stopped before the rows the crop needs");
    int64_t t1 = a->timing ? now_ns() : 0;
    atomic_fetch_add(&j->decoded_px, t->decoded_px);
    atomic_fetch_add(&j->source_px, (int64_t)in->width * in->height);
    if (rc != FL_OK) {
        e->src_index = (int)i;
        return rc;
    }
    const uint8_t *tile = t->tile;
    if (o != 1) {
        uint8_t *d = t->tile;
        if (!a->convert) d = (uint8_t *)slot;
        else if (grow(&t->tile2, &t->tile2_cap, tile_bytes))
            return fl_error_set(e, FL_E_NOMEM, 0, (int)i, 0, 0, "cannot allocate an image tile");
        else d = t->tile2;
        orient_tile(t->tile, t->out_w, t->out_h, o, a->flip[i] != 0, d, dw, dh);
        tile = d;
    }
    if (a->convert) {
        fl_collate_args ca;
        memset(&ca, 0, sizeof(ca));
        const char *src = (const char *)tile;
        ca.src = &src;
        ca.dst = slot;
        ca.n = 1;
        ca.pixels = dw * dh;
        ca.channels = 3;
        ca.src_channels_last = 1;
        ca.dst_channels_last = a->dst_channels_last;
        ca.src_dtype = a->dst_dtype == FL_DT_RAW ? FL_DT_RAW : FL_DT_U8;
        ca.dst_dtype = a->dst_dtype;
        ca.elem_size = 1;
        ca.scale = a->scale;
        ca.shift = a->shift;
        ca.nthreads = 1;
        ca.isa = a->isa;
        fl_collate_stats cs;
        rc = fl_collate(&ca, &cs, e);
        if (rc != FL_OK) {
            e->src_index = (int)i;
            return rc;
        }
    }
    if (a->timing) {
        int64_t t2 = now_ns();
        atomic_fetch_add(&j->decode_ns, t1 - t0 - t->resample_ns);
        atomic_fetch_add(&j->resample_ns, t->resample_ns);
        atomic_fetch_add(&j->convert_ns, t2 - t1);
    }
    return FL_OK;
}

static void worker(void *ctx, int thread_index) {
    (void)thread_index;
    job_t *j = (job_t *)ctx;
    thread_t t;
    memset(&t, 0, sizeof(t));
    for (;;) {
        int64_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->a->n) break;
        fl_error_clear(&j->errs[i]);
        if (process(&t, j, i, &j->errs[i]) != FL_OK) {
            j->errs[i].src_index = (int)i;
            atomic_fetch_add(&j->failed, 1);
        }
    }
    fl_jpeg_decoder_free(t.dec);
    fl_resampler_free(&t.rs);
    free(t.tile);
    free(t.tile2);
}

int fl_image_decode_batch(const fl_image_batch_args *a, fl_error *errs, fl_image_batch_stats *st) {
    memset(st, 0, sizeof(*st));
    if (a->n <= 0) return FL_OK;
    job_t *j = calloc(1, sizeof(job_t));
    if (!j) {
        for (int64_t i = 0; i < a->n; i++)
            fl_error_set(&errs[i], FL_E_NOMEM, 0, (int)i, 0, 0, "cannot allocate the decode job");
        return FL_E_NOMEM;
    }
    j->a = a;
    j->errs = errs;
    int nt = a->nthreads > 0 ? a->nthreads : fl_collate_cpu_count();
    if (nt > a->n) nt = (int)a->n;
    st->threads = fl_parallel_run(nt, worker, j);
    st->failed = atomic_load(&j->failed);
    st->scaled = atomic_load(&j->scaled);
    st->decoded_pixels = atomic_load(&j->decoded_px);
    st->source_pixels = atomic_load(&j->source_px);
    st->decode_ns = atomic_load(&j->decode_ns);
    st->resample_ns = atomic_load(&j->resample_ns);
    st->convert_ns = atomic_load(&j->convert_ns);
    free(j);
    int rc = FL_OK;
    for (int64_t i = 0; i < a->n && rc == FL_OK; i++) rc = errs[i].code;
    return rc;
}
