/* Streamed triangle-filter resampling: see fl_resample.h. */
#include "fl_resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* The hot loops get an AVX2+FMA clone picked at load time; the build stays portable. */
#define FL_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define FL_CLONES
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#define FL_SSE2 1
#else
#define FL_SSE2 0
#endif

/* Floats after each accumulator row (zeroed with it), so a 4-float load at its last
 * pixel, or an 8-float one (two pixels) at it, stays inside and reads finite values. */
#define FL_ROW_PAD 8

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FL_HAVE_AVX2 1
#define FL_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define FL_HAVE_AVX2 0
#endif

static int use_avx2(void) {
#if FL_HAVE_AVX2
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known;
#else
    return 0;
#endif
}

void fl_axis_free(fl_axis *ax) {
    free(ax->first);
    free(ax->count);
    free(ax->w);
    memset(ax, 0, sizeof(*ax));
}

int fl_axis_init(fl_axis *ax, double box0, double box1, int64_t out, int64_t clip_lo,
                 int64_t clip_hi, int antialias) {
    fl_axis_free(ax);
    if (out < 1 || clip_hi <= clip_lo) return -1;
    double scale = (box1 - box0) / (double)out;
    /* the filter's radius in input pixels: 1, or the scale when shrinking */
    double fs = (antialias && scale > 1.0) ? scale : 1.0;
    int64_t taps = 2 * (int64_t)ceil(fs) + 1;
    ax->first = malloc(sizeof(int64_t) * (size_t)out);
    ax->count = malloc(sizeof(int32_t) * (size_t)out);
    ax->w = calloc((size_t)(out * taps), sizeof(float));
    double *wtmp = malloc(sizeof(double) * (size_t)taps);
    if (!ax->first || !ax->count || !ax->w || !wtmp) {
        free(wtmp);
        fl_axis_free(ax);
        return -1;
    }
    ax->out = out;
    ax->taps = taps;
    ax->lo = clip_hi;
    ax->hi = clip_lo;
    for (int64_t i = 0; i < out; i++) {
        double centre = box0 + ((double)i + 0.5) * scale;
        /* input pixel j (centre j + 0.5) contributes when |j + 0.5 - centre| < fs */
        int64_t a = (int64_t)floor(centre - fs + 0.5);
        int64_t b = (int64_t)ceil(centre + fs - 0.5) - 1;
        if (a < clip_lo) a = clip_lo;
        if (b > clip_hi - 1) b = clip_hi - 1;
        double sum = 0;
        int64_t n = 0, first = a;
        for (int64_t j = a; j <= b && n < taps; j++) {
            double x = 1.0 - fabs((double)j + 0.5 - centre) / fs;
            if (x <= 0 && n == 0) {
                first = j + 1; /* no leading zero weights */
                continue;
            }
            wtmp[n++] = x > 0 ? x : 0;
            sum += x > 0 ? x : 0;
        }
        while (n > 0 && wtmp[n - 1] <= 0) n--;
        if (n == 0 || sum <= 0) { /* a centre outside the clip range: its nearest pixel */
            int64_t j = (int64_t)floor(centre);
            first = j < clip_lo ? clip_lo : j > clip_hi - 1 ? clip_hi - 1 : j;
            wtmp[0] = sum = 1.0;
            n = 1;
        }
        ax->first[i] = first;
        ax->count[i] = (int32_t)n;
        for (int64_t k = 0; k < n; k++) ax->w[i * taps + k] = (float)(wtmp[k] / sum);
        if (first < ax->lo) ax->lo = first;
        if (first + n > ax->hi) ax->hi = first + n;
    }
    free(wtmp);
    return 0;
}

/* Output rows open at once: row j is open from input row first[j] through its
 * last tap; both ends grow with j, so the open rows are a run. */
static int64_t open_rows(const fl_axis *v) {
    int64_t most = 1, p = 0;
    for (int64_t j = 0; j < v->out; j++) {
        while (p < j && v->first[p] + v->count[p] - 1 < v->first[j]) p++;
        if (j - p + 1 > most) most = j - p + 1;
    }
    return most;
}

int fl_resampler_start(fl_resampler *r, uint8_t *dst, int64_t dst_stride, int flip) {
    r->ring = open_rows(&r->v);
    /* the ring, then one row: the input row as floats (converted once, read by every
     * output row it contributes to) */
    int64_t need = (r->ring + 1) * ((r->h.hi - r->h.lo) * 3 + FL_ROW_PAD);
    if (need > r->acc_cap) {
        float *p = realloc(r->acc, sizeof(float) * (size_t)need);
        if (!p) return -1;
        r->acc = p;
        r->acc_cap = need;
    }
    if (use_avx2()) {
        /* weights of taps 2p, 2p + 1 as [w w w w w' w' w' w'], zero past the last tap */
        const fl_axis *h = &r->h;
        int64_t np = (h->taps + 1) / 2, n = h->out * np * 8;
        if (n > r->pairs_cap) {
            float *p = realloc(r->pairs, sizeof(float) * (size_t)n);
            if (!p) return -1;
            r->pairs = p;
            r->pairs_cap = n;
        }
        for (int64_t i = 0; i < h->out; i++)
            for (int64_t k = 0; k < 2 * np; k++) {
                float w = k < h->count[i] ? h->w[i * h->taps + k] : 0.0f;
                float *q = r->pairs + (i * np + k / 2) * 8 + (k % 2) * 4;
                q[0] = q[1] = q[2] = q[3] = w;
            }
    }
    r->next_open = r->next_done = 0;
    r->dst = dst;
    r->dst_stride = dst_stride;
    r->flip = flip;
    return 0;
}

FL_CLONES static void widen(float *dst, const uint8_t *src, int64_t n) {
    for (int64_t k = 0; k < n; k++) dst[k] = (float)src[k];
}

FL_CLONES static void accumulate(float *acc, const float *src, float w, int64_t n) {
    for (int64_t k = 0; k < n; k++) acc[k] += w * src[k];
}

static inline uint8_t to_u8(float x) {
    x += 0.5f;
    return x <= 0.0f ? 0 : x >= 255.0f ? 255 : (uint8_t)x;
}

/* Horizontal pass of one accumulated row into uint8 RGB: each output pixel sums its taps'
 * RGB triples (one 4-float load each, the fourth lane unused), then rounds and clamps. */
static void horizontal(const fl_axis *h, const float *acc, uint8_t *d, int flip) {
    const int64_t taps = h->taps, out = h->out;
#if FL_SSE2
    const __m128 half = _mm_set1_ps(0.5f), top = _mm_set1_ps(255.0f), zero = _mm_setzero_ps();
    for (int64_t i = 0; i < out; i++) {
        const float *wt = h->w + i * taps;
        const float *s = acc + (h->first[i] - h->lo) * 3;
        __m128 sum = zero;
        for (int32_t k = 0; k < h->count[i]; k++, s += 3)
            sum = _mm_add_ps(sum, _mm_mul_ps(_mm_set1_ps(wt[k]), _mm_loadu_ps(s)));
        sum = _mm_min_ps(_mm_max_ps(_mm_add_ps(sum, half), zero), top);
        __m128i v = _mm_cvttps_epi32(sum);
        v = _mm_packus_epi16(_mm_packs_epi32(v, v), v);
        uint32_t px = (uint32_t)_mm_cvtsi128_si32(v);
        uint8_t *o = d + 3 * (flip ? out - 1 - i : i);
        o[0] = (uint8_t)px;
        o[1] = (uint8_t)(px >> 8);
        o[2] = (uint8_t)(px >> 16);
    }
#else
    for (int64_t i = 0; i < out; i++) {
        const float *wt = h->w + i * taps;
        const float *s = acc + (h->first[i] - h->lo) * 3;
        float r = 0, g = 0, b = 0;
        for (int32_t k = 0; k < h->count[i]; k++, s += 3) {
            r += wt[k] * s[0];
            g += wt[k] * s[1];
            b += wt[k] * s[2];
        }
        uint8_t *o = d + 3 * (flip ? out - 1 - i : i);
        o[0] = to_u8(r);
        o[1] = to_u8(g);
        o[2] = to_u8(b);
    }
#endif
}

#if FL_HAVE_AVX2
/* Two taps per step: the RGB of pixels k and k + 1 (6 floats) spread into two lanes of 4,
 * times their weights, summed; the halves added at the end. */
FL_TARGET_AVX2 static void horizontal_avx2(const fl_resampler *r, const float *acc, uint8_t *d,
                                           int flip) {
    const fl_axis *h = &r->h;
    const int64_t out = h->out, np = (h->taps + 1) / 2;
    const __m256i spread = _mm256_setr_epi32(0, 1, 2, 2, 3, 4, 5, 5);
    const __m128 half = _mm_set1_ps(0.5f), top = _mm_set1_ps(255.0f), zero = _mm_setzero_ps();
    for (int64_t i = 0; i < out; i++) {
        const float *s = acc + (h->first[i] - h->lo) * 3;
        const float *w = r->pairs + i * np * 8;
        __m256 sum = _mm256_setzero_ps();
        for (int32_t p = 0; 2 * p < h->count[i]; p++, s += 6, w += 8)
            sum = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(s), spread),
                                  _mm256_loadu_ps(w), sum);
        __m128 v = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        v = _mm_min_ps(_mm_max_ps(_mm_add_ps(v, half), zero), top);
        __m128i q = _mm_cvttps_epi32(v);
        q = _mm_packus_epi16(_mm_packs_epi32(q, q), q);
        uint32_t px = (uint32_t)_mm_cvtsi128_si32(q);
        uint8_t *o = d + 3 * (flip ? out - 1 - i : i);
        o[0] = (uint8_t)px;
        o[1] = (uint8_t)(px >> 8);
        o[2] = (uint8_t)(px >> 16);
    }
}
#endif

void fl_resampler_push(fl_resampler *r, int64_t y, const uint8_t *row, int64_t x_first,
                       int64_t width) {
    const fl_axis *v = &r->v;
    (void)width;
    if (y < v->lo || y >= v->hi) return;
    const int64_t aw = (r->h.hi - r->h.lo) * 3, stride = aw + FL_ROW_PAD;
    float *src = r->acc + r->ring * stride;
    widen(src, row + (r->h.lo - x_first) * 3, aw);
    while (r->next_open < v->out && v->first[r->next_open] <= y) {
        memset(r->acc + (r->next_open % r->ring) * stride, 0, sizeof(float) * (size_t)stride);
        r->next_open++;
    }
    for (int64_t j = r->next_done; j < r->next_open; j++) {
        int64_t k = y - v->first[j];
        if (k >= 0 && k < v->count[j])
            accumulate(r->acc + (j % r->ring) * stride, src, v->w[j * v->taps + k], aw);
    }
    while (r->next_done < r->next_open && v->first[r->next_done] + v->count[r->next_done] - 1 <= y) {
        const float *a = r->acc + (r->next_done % r->ring) * stride;
        uint8_t *d = r->dst + r->next_done * r->dst_stride;
#if FL_HAVE_AVX2
        if (r->pairs) horizontal_avx2(r, a, d, r->flip);
        else
#endif
            horizontal(&r->h, a, d, r->flip);
        r->next_done++;
    }
}

int fl_resampler_done(const fl_resampler *r) { return r->next_done == r->v.out; }

void fl_resampler_free(fl_resampler *r) {
    fl_axis_free(&r->h);
    fl_axis_free(&r->v);
    free(r->acc);
    free(r->pairs);
    memset(r, 0, sizeof(*r));
}
