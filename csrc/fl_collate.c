#define _GNU_SOURCE
#include "fl_collate.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fl_parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FL_HAVE_AVX2_PATH 1
#define FL_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define FL_HAVE_AVX2_PATH 0
#endif

#define FL_AI static inline __attribute__((always_inline))

/* Samples may start at any byte of a slab: element types with alignment 1 let
 * the compiler emit unaligned loads instead of assuming natural alignment. */
typedef uint8_t u8_u __attribute__((aligned(1)));
typedef uint16_t u16_u __attribute__((aligned(1), may_alias));
typedef uint32_t u32_u __attribute__((aligned(1), may_alias));
typedef uint64_t u64_u __attribute__((aligned(1), may_alias));
typedef float f32_u __attribute__((aligned(1), may_alias));

/* Floats in a thread's staging block: 16 KiB, so a block stays in L1 between
 * the convert pass and the pack pass, and a transposed tile stays in cache. */
#define FL_BLOCK_ELEMS 4096
/* Pixels in one period of the channels-last scale/shift pattern: 8 floats
 * per AVX2 vector, so C * 8 floats is whole vectors and whole pixels. */
#define FL_PATTERN_PX 8
/* Fewest pixels in a block: a channel-first run of 16 floats fills a cache line. */
#define FL_MIN_BLOCK_PX 16

enum { OP_KEEP_CL = 0, OP_KEEP_CF = 1, OP_CL_TO_CF = 2, OP_CF_TO_CL = 3 };

typedef struct {
    const fl_collate_args *a;
    int op;
    int raw;              /* plain element moves, no float arithmetic */
    int64_t ssz, dsz;     /* bytes per source / output element */
    int64_t P, C;
    int64_t spu;          /* whole samples per unit, or 0 when a unit is part of a sample */
    int64_t unit_px;      /* pixels per unit inside a sample (spu == 0) */
    int64_t ups;          /* units per sample (spu == 0) */
    int64_t units;
    int64_t block_px;     /* pixels per staging block */
    const float *apat;    /* scale / shift repeated over FL_PATTERN_PX pixels */
    const float *bpat;
    int isa;
    int stream;           /* large batch: streaming stores where a kernel has them */
    atomic_llong next;
} job_t;

/* ---- element conversions ---------------------------------------------- */

FL_AI float load_f(const char *s, int64_t i, int dt) {
    switch (dt) {
        case FL_DT_U8: return (float)((const u8_u *)s)[i];
        case FL_DT_U16: return (float)((const u16_u *)s)[i];
        default: return ((const f32_u *)s)[i];
    }
}

/* IEEE half, round to nearest even, without branches so the loop vectorises
 * (F. Giesen's float_to_half_fast3_rtne): normals re-bias the exponent and
 * round on the dropped 13 bits; subnormals let one float add do the rounding;
 * overflow gives inf, NaN a quiet NaN. */
FL_AI uint16_t f32_to_f16_bits(float f) {
    uint32_t x, sub_bits;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    float sub_f, ax_f, magic = 0.5f; /* bits 0x3f000000: puts half's subnormal unit at bit 0 */
    memcpy(&ax_f, &ax, 4);
    sub_f = ax_f + magic;
    memcpy(&sub_bits, &sub_f, 4);
    uint32_t sub = sub_bits - 0x3f000000u;
    uint32_t norm = (ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13;
    uint32_t big = 0x7c00u | ((uint32_t)(ax > 0x7f800000u) << 9);
    uint32_t is_big = -(uint32_t)(ax >= 0x47800000u), is_sub = -(uint32_t)(ax < 0x38800000u);
    /* masks, not branches: the loop must stay free of control flow to vectorise */
    uint32_t r = (big & is_big) | (sub & is_sub & ~is_big) | (norm & ~is_sub & ~is_big);
    return (uint16_t)(sign | r);
}

FL_AI void pack_f16_generic(const float *t, char *d, int64_t n) {
    uint16_t *o = (uint16_t *)d;
    for (int64_t i = 0; i < n; i++) o[i] = f32_to_f16_bits(t[i]);
}

#if FL_HAVE_AVX2_PATH
/* With `stream`, 16-byte-aligned groups go out as non-temporal stores (see
 * u8c3_to_cf_f32_avx2 for why); the head up to that alignment is scalar. */
FL_TARGET_AVX2 static void pack_f16_avx2(const float *t, char *d, int64_t n, int stream) {
    uint16_t *o = (uint16_t *)d;
    int64_t i = 0;
    if (stream && !((uintptr_t)o & 1)) {
        for (; i < n && ((uintptr_t)(o + i) & 15); i++) o[i] = f32_to_f16_bits(t[i]);
        for (; i + 8 <= n; i += 8)
            _mm_stream_si128((__m128i *)(o + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(t + i), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(o + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(t + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) o[i] = f32_to_f16_bits(t[i]);
}
#endif

/* bfloat16 bits, round to nearest even; NaN -> 0x7fc0 as torch does. */
FL_AI void pack_bf16(const float *t, char *d, int64_t n) {
    uint16_t *o = (uint16_t *)d;
    for (int64_t i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, &t[i], 4);
        uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
        o[i] = (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
    }
}

/* uint16 output comes only from uint8 input: the floats are exact integers. */
FL_AI void pack_u16(const float *t, char *d, int64_t n) {
    uint16_t *o = (uint16_t *)d;
    for (int64_t i = 0; i < n; i++) o[i] = (uint16_t)(int32_t)t[i];
}

FL_AI void pack(const float *t, char *d, int64_t n, int ddt, int isa, int stream) {
    (void)stream;
    switch (ddt) {
        case FL_DT_F16:
#if FL_HAVE_AVX2_PATH
            if (isa == FL_ISA_AVX2) {
                pack_f16_avx2(t, d, n, stream);
                break;
            }
#endif
            pack_f16_generic(t, d, n);
            break;
        case FL_DT_BF16: pack_bf16(t, d, n); break;
        default: pack_u16(t, d, n); break;
    }
}

/* ---- float blocks: pixels [p0, p0 + nb) of one sample -------------------
 * Results go to o in the output layout: channels-first runs o[c * os + k],
 * or channels-last o[k * C + c]. */

/* Channels-last in and out: the scale/shift pattern repeats every C * 8 floats
 * (a whole number of pixels and of 8-float vectors), so one short pattern,
 * held in registers when C is a compile-time 1, 3 or 4, serves every chunk. */
FL_AI void conv_keep_cl(const char *s, float *restrict o, int64_t C, int64_t p0, int64_t nb,
                        int sdt, const float *apat, const float *bpat, int CC) {
    int64_t n = nb * C, base = p0 * C;
    if (CC == 1) {
        float a = apat[0], b = bpat[0];
        for (int64_t k = 0; k < n; k++) o[k] = load_f(s, base + k, sdt) * a + b;
        return;
    }
    int64_t L = (CC ? CC : C) * FL_PATTERN_PX;
    for (int64_t k = 0; k < n; k += L) {
        int64_t m = n - k < L ? n - k : L;
        if (CC && m == L) {
            for (int64_t i = 0; i < CC * FL_PATTERN_PX; i++)
                o[k + i] = load_f(s, base + k + i, sdt) * apat[i] + bpat[i];
        } else {
            for (int64_t i = 0; i < m; i++) o[k + i] = load_f(s, base + k + i, sdt) * apat[i] + bpat[i];
        }
    }
}

FL_AI void conv_keep_cf(const char *s, float *restrict o, int64_t os, int64_t P, int64_t C,
                        int64_t p0, int64_t nb, int sdt, const float *A, const float *B) {
    for (int64_t c = 0; c < C; c++) {
        float a = A[c], b = B[c];
        for (int64_t k = 0; k < nb; k++) o[c * os + k] = load_f(s, c * P + p0 + k, sdt) * a + b;
    }
}

/* Layout change of pixels [p0, p0 + nb): channels-last source to channels-first
 * runs (to_cf) or the reverse. CC > 0: channel count known at compile time,
 * pixel-major so the compiler vectorises the interleaved group; CC == 0: any
 * C, one channel at a time over a block that stays in cache. */
FL_AI void conv_transpose(const char *s, float *restrict o, int64_t os, int64_t P, int64_t C,
                          int64_t p0, int64_t nb, int sdt, const float *A, const float *B,
                          int to_cf, int CC) {
#define FL_SRC_I(c, k) (to_cf ? (p0 + (k)) * C + (c) : (c) * P + p0 + (k))
#define FL_DST_I(c, k) (to_cf ? (c) * os + (k) : (k) * C + (c))
    if (CC) {
        float a[4], b[4];
        C = CC;
        for (int c = 0; c < CC; c++) a[c] = A[c], b[c] = B[c];
        for (int64_t k = 0; k < nb; k++)
            for (int c = 0; c < CC; c++)
                o[FL_DST_I(c, k)] = load_f(s, FL_SRC_I(c, k), sdt) * a[c] + b[c];
        return;
    }
    for (int64_t c = 0; c < C; c++) {
        float a = A[c], b = B[c];
        for (int64_t k = 0; k < nb; k++) o[FL_DST_I(c, k)] = load_f(s, FL_SRC_I(c, k), sdt) * a + b;
    }
#undef FL_SRC_I
#undef FL_DST_I
}

FL_AI void conv_block(const job_t *j, const char *s, float *restrict o, int64_t os, int64_t p0,
                      int64_t nb, int sdt) {
    const fl_collate_args *a = j->a;
    int64_t P = j->P, C = j->C;
    switch (j->op) {
        case OP_KEEP_CL:
            if (C == 1) conv_keep_cl(s, o, C, p0, nb, sdt, j->apat, j->bpat, 1);
            else if (C == 3) conv_keep_cl(s, o, C, p0, nb, sdt, j->apat, j->bpat, 3);
            else if (C == 4) conv_keep_cl(s, o, C, p0, nb, sdt, j->apat, j->bpat, 4);
            else conv_keep_cl(s, o, C, p0, nb, sdt, j->apat, j->bpat, 0);
            break;
        case OP_KEEP_CF: conv_keep_cf(s, o, os, P, C, p0, nb, sdt, a->scale, a->shift); break;
        /* Direction and C = 3 / 4 as compile-time constants, one copy each. */
#define FL_CONV_T(TO_CF)                                                                      \
    do {                                                                                      \
        if (C == 3) conv_transpose(s, o, os, P, C, p0, nb, sdt, a->scale, a->shift, TO_CF, 3); \
        else if (C == 4)                                                                      \
            conv_transpose(s, o, os, P, C, p0, nb, sdt, a->scale, a->shift, TO_CF, 4);        \
        else conv_transpose(s, o, os, P, C, p0, nb, sdt, a->scale, a->shift, TO_CF, 0);       \
    } while (0)
        case OP_CL_TO_CF: FL_CONV_T(1); break;
        default: FL_CONV_T(0); break;
#undef FL_CONV_T
    }
}

#if FL_HAVE_AVX2_PATH
/* The common image case by hand: 3-channel uint8 pixels to float32 planes,
 * 16 pixels (one 64-byte line per plane) per step. Three 16-byte loads hold
 * the 48 interleaved bytes; one byte shuffle per load gathers a channel.
 * With `stream` and planes that share an alignment, whole lines go out as
 * non-temporal stores: a batch bigger than the cache is otherwise read into
 * cache before being written (read for ownership), which costs the memory bus
 * as much again as the output. Heads and tails take the generic code, so
 * every element is computed as there (x * a + b, fused). */
FL_TARGET_AVX2 static void u8c3_to_cf_f32_avx2(const uint8_t *s, float *o, int64_t P, int64_t p0,
                                               int64_t nb, const float *A, const float *B,
                                               int stream) {
    float *d0 = o + p0;
    int64_t head = 0;
    stream = stream && P % 16 == 0;
    if (stream) {
        head = (int64_t)(((64 - ((uintptr_t)d0 & 63)) & 63) / 4);
        if ((uintptr_t)d0 & 3) head = nb; /* not float-aligned: never reaches a line */
        if (head > nb) head = nb;
    }
    conv_transpose((const char *)s, d0, P, P, 3, p0, head, FL_DT_U8, A, B, 1, 3);
    uint8_t mask[3][3][16];
    for (int c = 0; c < 3; c++)
        for (int l = 0; l < 3; l++)
            for (int i = 0; i < 16; i++) {
                int at = 3 * i + c - 16 * l;
                mask[c][l][i] = at >= 0 && at < 16 ? (uint8_t)at : 0x80;
            }
    int64_t k = head;
    for (; k + 16 <= nb; k += 16) {
        const uint8_t *px = s + (p0 + k) * 3;
        __m128i v[3] = {_mm_loadu_si128((const __m128i *)px),
                        _mm_loadu_si128((const __m128i *)(px + 16)),
                        _mm_loadu_si128((const __m128i *)(px + 32))};
        for (int c = 0; c < 3; c++) {
            __m128i ch = _mm_or_si128(
                _mm_or_si128(_mm_shuffle_epi8(v[0], _mm_loadu_si128((const __m128i *)mask[c][0])),
                             _mm_shuffle_epi8(v[1], _mm_loadu_si128((const __m128i *)mask[c][1]))),
                _mm_shuffle_epi8(v[2], _mm_loadu_si128((const __m128i *)mask[c][2])));
            __m256 a = _mm256_set1_ps(A[c]), b = _mm256_set1_ps(B[c]);
            __m256 lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(ch)), a, b);
            __m256 hi = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(ch, 8))), a, b);
            float *d = d0 + c * P + k;
            if (stream) {
                _mm256_stream_ps(d, lo);
                _mm256_stream_ps(d + 8, hi);
            } else {
                _mm256_storeu_ps(d, lo);
                _mm256_storeu_ps(d + 8, hi);
            }
        }
    }
    conv_transpose((const char *)s, d0 + k, P, P, 3, p0 + k, nb - k, FL_DT_U8, A, B, 1, 3);
}

/* Channels-last uint8 to float32, layout kept: 8 elements per step against the
 * scale/shift pattern (L = C * 8 floats, stored twice so 8 floats from any
 * phase are contiguous). Streaming stores as in u8c3_to_cf_f32_avx2; the
 * scalar head and tail use the same fused multiply-add. */
FL_TARGET_AVX2 static void u8_keep_cl_f32_avx2(const uint8_t *s, float *d, int64_t n, int64_t L,
                                               const float *apat, const float *bpat, int stream) {
    int64_t k = 0, ph = 0, head = 0;
    if (stream && !((uintptr_t)d & 3)) head = (int64_t)(((32 - ((uintptr_t)d & 31)) & 31) / 4);
    else stream = 0;
    if (head > n) head = n;
#define FL_SCALAR_TO(END)                                                   \
    for (; k < (END); k++) {                                                \
        d[k] = __builtin_fmaf((float)s[k], apat[ph], bpat[ph]);             \
        if (++ph == L) ph = 0;                                              \
    }
    FL_SCALAR_TO(head)
    for (; k + 8 <= n; k += 8) {
        __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(s + k))));
        __m256 y = _mm256_fmadd_ps(x, _mm256_loadu_ps(apat + ph), _mm256_loadu_ps(bpat + ph));
        if (stream) _mm256_stream_ps(d + k, y);
        else _mm256_storeu_ps(d + k, y);
        ph += 8;
        if (ph >= L) ph -= L;
    }
    FL_SCALAR_TO(n)
#undef FL_SCALAR_TO
}
#endif

/* One block of one sample through the float path: straight into a float32
 * batch, else into the staging block and packed from there. */
FL_AI void float_block(const job_t *j, const char *s, char *d, int64_t p0, int64_t nb,
                       float *tmp, int isa) {
    const fl_collate_args *a = j->a;
    int64_t P = j->P, C = j->C;
    int dst_cf = !a->dst_channels_last;
    int direct = a->dst_dtype == FL_DT_F32;
#if FL_HAVE_AVX2_PATH
    if (direct && isa == FL_ISA_AVX2 && a->src_dtype == FL_DT_U8) {
        if (j->op == OP_CL_TO_CF && C == 3) {
            u8c3_to_cf_f32_avx2((const uint8_t *)s, (float *)d, P, p0, nb, a->scale, a->shift,
                                j->stream);
            return;
        }
        if (j->op == OP_KEEP_CL) {
            u8_keep_cl_f32_avx2((const uint8_t *)s + p0 * C, (float *)d + p0 * C, nb * C,
                                FL_PATTERN_PX * C, j->apat, j->bpat, j->stream);
            return;
        }
    }
#endif
    float *o = direct ? (float *)d + (dst_cf ? p0 : p0 * C) : tmp;
    int64_t os = direct ? P : nb;
    switch (a->src_dtype) {
        case FL_DT_U8: conv_block(j, s, o, os, p0, nb, FL_DT_U8); break;
        case FL_DT_U16: conv_block(j, s, o, os, p0, nb, FL_DT_U16); break;
        default: conv_block(j, s, o, os, p0, nb, FL_DT_F32); break;
    }
    if (direct) return;
    if (dst_cf) {
        for (int64_t c = 0; c < C; c++)
            pack(tmp + c * nb, d + (c * P + p0) * j->dsz, nb, a->dst_dtype, isa, j->stream);
    } else {
        pack(tmp, d + p0 * C * j->dsz, nb * C, a->dst_dtype, isa, j->stream);
    }
}

/* ---- raw blocks: same dtype, no arithmetic ------------------------------ */

#define FL_MOVE(T, dst_i, src_i) ((T *)d)[dst_i] = ((const T *)s)[src_i]

FL_AI void move_elem(const char *s, int64_t si, char *d, int64_t di, int64_t es) {
    switch (es) {
        case 1: FL_MOVE(u8_u, di, si); break;
        case 2: FL_MOVE(u16_u, di, si); break;
        case 4: FL_MOVE(u32_u, di, si); break;
        case 8: FL_MOVE(u64_u, di, si); break;
        default: memcpy(d + di * es, s + si * es, (size_t)es); break;
    }
}

FL_AI void raw_transpose(const char *s, char *d, int64_t P, int64_t C, int64_t p0, int64_t nb,
                         int to_cf, int64_t es, int CC) {
    if (CC) {
        for (int64_t k = 0; k < nb; k++)
            for (int c = 0; c < CC; c++) {
                if (to_cf) move_elem(s, (p0 + k) * CC + c, d, c * P + p0 + k, es);
                else move_elem(s, c * P + p0 + k, d, (p0 + k) * CC + c, es);
            }
        return;
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t k = 0; k < nb; k++) {
            if (to_cf) move_elem(s, (p0 + k) * C + c, d, c * P + p0 + k, es);
            else move_elem(s, c * P + p0 + k, d, (p0 + k) * C + c, es);
        }
}

/* Instantiates the moves for each element size, with C = 3 and 4 unrolled. */
#define FL_RAW_T(ES)                                                           \
    do {                                                                       \
        if (C == 3) raw_transpose(s, d, P, C, p0, nb, to_cf, ES, 3);           \
        else if (C == 4) raw_transpose(s, d, P, C, p0, nb, to_cf, ES, 4);      \
        else raw_transpose(s, d, P, C, p0, nb, to_cf, ES, 0);                  \
    } while (0)

FL_AI void raw_transpose_es(const char *s, char *d, int64_t P, int64_t C, int64_t p0,
                            int64_t nb, int to_cf, int64_t es) {
    switch (es) {
        case 1: FL_RAW_T(1); break;
        case 2: FL_RAW_T(2); break;
        case 4: FL_RAW_T(4); break;
        case 8: FL_RAW_T(8); break;
        default: raw_transpose(s, d, P, C, p0, nb, to_cf, es, 0); break;
    }
}

FL_AI void raw_block(const job_t *j, const char *s, char *d, int64_t p0, int64_t nb) {
    int64_t P = j->P, C = j->C, es = j->ssz;
    switch (j->op) {
        case OP_KEEP_CL: memcpy(d + p0 * C * es, s + p0 * C * es, (size_t)(nb * C * es)); break;
        case OP_KEEP_CF:
            for (int64_t c = 0; c < C; c++)
                memcpy(d + (c * P + p0) * es, s + (c * P + p0) * es, (size_t)(nb * es));
            break;
        case OP_CL_TO_CF: raw_transpose_es(s, d, P, C, p0, nb, 1, es); break;
        default: raw_transpose_es(s, d, P, C, p0, nb, 0, es); break;
    }
}

/* ---- work units ---------------------------------------------------------- */

FL_AI void unit_body(const job_t *j, int64_t u, float *tmp, int isa) {
    const fl_collate_args *a = j->a;
    int64_t first, last, p_begin, p_end;
    if (j->spu) {
        first = u * j->spu;
        last = first + j->spu < a->n ? first + j->spu : a->n;
        p_begin = 0;
        p_end = j->P;
    } else {
        first = u / j->ups;
        last = first + 1;
        p_begin = (u % j->ups) * j->unit_px;
        p_end = p_begin + j->unit_px < j->P ? p_begin + j->unit_px : j->P;
    }
    int64_t sample_out = j->P * j->C * j->dsz;
    for (int64_t i = first; i < last; i++) {
        const char *s = a->src[i];
        char *d = a->dst + i * sample_out;
        for (int64_t p0 = p_begin; p0 < p_end; p0 += j->block_px) {
            int64_t nb = p_end - p0 < j->block_px ? p_end - p0 : j->block_px;
            if (j->raw) raw_block(j, s, d, p0, nb);
            else float_block(j, s, d, p0, nb, tmp, isa);
        }
    }
}

static void unit_generic(const job_t *j, int64_t u, float *tmp) {
    unit_body(j, u, tmp, FL_ISA_GENERIC);
}

#if FL_HAVE_AVX2_PATH
FL_TARGET_AVX2 static void unit_avx2(const job_t *j, int64_t u, float *tmp) {
    unit_body(j, u, tmp, FL_ISA_AVX2);
}
#endif

static void collate_worker(void *ctx, int thread_index) {
    (void)thread_index;
    job_t *j = (job_t *)ctx;
    float *tmp = NULL;
    if (!j->raw && j->a->dst_dtype != FL_DT_F32) {
        /* A thread without its staging block takes no unit; the caller sees
         * the untaken units and reports out of memory. */
        tmp = malloc(sizeof(float) * (size_t)(j->block_px * j->C));
        if (!tmp) return;
    }
    for (;;) {
        int64_t u = atomic_fetch_add(&j->next, 1);
        if (u >= j->units) break;
#if FL_HAVE_AVX2_PATH
        if (j->isa == FL_ISA_AVX2) {
            unit_avx2(j, u, tmp);
            /* Streaming stores are weakly ordered: drain them before the unit counts as done. */
            if (j->stream) _mm_sfence();
            continue;
        }
#endif
        unit_generic(j, u, tmp);
    }
    free(tmp);
}

int fl_collate_best_isa(void) {
#if FL_HAVE_AVX2_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return FL_ISA_AVX2;
#endif
    return FL_ISA_GENERIC;
}

int fl_collate_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int64_t dtype_size(int dt, int elem_size) {
    switch (dt) {
        case FL_DT_U8: return 1;
        case FL_DT_U16:
        case FL_DT_F16:
        case FL_DT_BF16: return 2;
        case FL_DT_F32: return 4;
        default: return elem_size;
    }
}

/* Automatic sizes: units of 1/8 of a thread's share, 64 KiB to 1 MiB (small
 * enough to balance threads on a busy machine, large enough that taking a unit
 * costs nothing); a thread for every 256 KiB of output at most. */
#define FL_AUTO_UNIT_MIN (64 * 1024)
#define FL_AUTO_UNIT_MAX (1024 * 1024)
#define FL_BYTES_PER_THREAD (256 * 1024)

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Output bytes above which kernels that have streaming stores use them (stores
 * FL_STORES_AUTO: a batch used right after it is made, its buffer reused for the next). A
 * batch the cache can hold stays there for its consumer (and a pooled batch
 * is still in cache from its last use), where plain stores are faster. On a
 * 2-core EPYC VM with 32 MiB of L3, 224x224x3 to float32, plain stores won up
 * to 48 samples (29 MB) and tied at 96 (58 MB); streaming won by ~10% at 128
 * (77 MB) and ~18% at 256 (154 MB). A fixed size rather than sysconf's L3:
 * glibc reports the whole socket's (384 MiB there). */
#define FL_STREAM_MIN_BYTES (64 * 1024 * 1024)

static int resolve_threads(int requested, int64_t total, int64_t units) {
    int64_t nt = requested > 0 ? requested
                               : clamp64(total / FL_BYTES_PER_THREAD, 1, fl_collate_cpu_count());
    return (int)clamp64(nt, 1, units);
}

int fl_collate(const fl_collate_args *a, fl_collate_stats *stats, fl_error *err) {
    memset(stats, 0, sizeof(*stats));
    int raw = a->src_dtype == FL_DT_RAW;
    if (a->n < 0 || a->pixels < 0 || a->channels < 1 || (raw && a->elem_size < 1) ||
        (raw && a->dst_dtype != FL_DT_RAW) || (!raw && (!a->scale || !a->shift)) ||
        (!raw && (a->src_dtype > FL_DT_F32 || a->dst_dtype < FL_DT_U16)))
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "invalid collate arguments");
    int isa = a->isa == FL_ISA_AUTO ? fl_collate_best_isa() : a->isa;
    if (isa == FL_ISA_AVX2 && fl_collate_best_isa() != FL_ISA_AVX2) isa = FL_ISA_GENERIC;
    stats->isa = isa;
    int64_t P = a->pixels, C = a->channels;
    int64_t ssz = dtype_size(a->src_dtype, a->elem_size), dsz = dtype_size(a->dst_dtype, a->elem_size);
    int transpose = C > 1 && a->src_channels_last != a->dst_channels_last;
    stats->transposed = transpose;
    /* Sizes that do not fit an int64 would wrap around to small ones: refused, never moved. */
    int64_t pc, sample_in, sample_out, total;
    if (__builtin_mul_overflow(P, C, &pc) || __builtin_mul_overflow(pc, ssz, &sample_in) ||
        __builtin_mul_overflow(pc, dsz, &sample_out) ||
        __builtin_mul_overflow(a->n, sample_out, &total))
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "collate sizes overflow int64");
    (void)sample_in;
    if (a->n == 0 || sample_out == 0) return FL_OK;

    job_t *j = calloc(1, sizeof(job_t));
    if (!j) return fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate the collate job");
    j->a = a;
    j->raw = raw;
    j->ssz = ssz;
    j->dsz = dsz;
    j->P = P;
    j->C = C;
    j->isa = isa;
    /* With one channel both layouts are the same bytes: no transpose. */
    j->op = !transpose ? (a->src_channels_last || C == 1 ? OP_KEEP_CL : OP_KEEP_CF)
                       : (a->src_channels_last ? OP_CL_TO_CF : OP_CF_TO_CL);
    /* Whole cache lines per plane: streamed lines are never split between blocks. */
    j->block_px = FL_BLOCK_ELEMS / C > FL_MIN_BLOCK_PX ? FL_BLOCK_ELEMS / C : FL_MIN_BLOCK_PX;
    j->block_px -= j->block_px % FL_MIN_BLOCK_PX;

    j->stream = a->stores == FL_STORES_AUTO ? total > FL_STREAM_MIN_BYTES
                                           : a->stores == FL_STORES_STREAM;
    stats->streamed = j->stream;
    int64_t ub = a->unit_bytes;
    if (ub <= 0)
        ub = clamp64(total / ((int64_t)fl_collate_cpu_count() * 8), FL_AUTO_UNIT_MIN, FL_AUTO_UNIT_MAX);
    /* A unit larger than the batch is the batch: keeps n + spu - 1 from overflowing. */
    if (ub > total) ub = total;
    if (ub >= sample_out) {
        j->spu = ub / sample_out;
        j->units = (a->n + j->spu - 1) / j->spu;
        stats->unit_bytes = j->spu * sample_out;
    } else {
        int64_t px = ub / (C * dsz);
        if (px >= FL_MIN_BLOCK_PX) px -= px % FL_MIN_BLOCK_PX; /* whole cache lines per plane */
        j->unit_px = px > 0 ? px : 1;
        j->ups = (P + j->unit_px - 1) / j->unit_px;
        j->units = a->n * j->ups;
        stats->unit_bytes = j->unit_px * C * dsz;
    }
    stats->units = j->units;

    float *pat = NULL;
    if (!raw && j->op == OP_KEEP_CL) {
        /* Each pattern twice over, for u8_keep_cl_f32_avx2's loads from any phase. */
        int64_t n = 2 * FL_PATTERN_PX * C;
        pat = malloc(sizeof(float) * (size_t)(2 * n));
        if (!pat) {
            free(j);
            return fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate the collate job");
        }
        for (int64_t k = 0; k < n; k++) {
            pat[k] = a->scale[k % C];
            pat[n + k] = a->shift[k % C];
        }
        j->apat = pat;
        j->bpat = pat + n;
    }
    atomic_init(&j->next, 0);
    stats->threads = fl_parallel_run(resolve_threads(a->nthreads, total, j->units), collate_worker, j);
    int rc = FL_OK;
    if (atomic_load(&j->next) < j->units)
        rc = fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate collate staging blocks");
    free(pat);
    free(j);
    return rc;
}

/* ---- ragged batches ------------------------------------------------------ */

typedef struct {
    const char *const *src;
    const int64_t *start; /* n + 1 prefix sums of the lengths */
    int64_t n;
    char *dst;
    int64_t unit;
    int64_t units;
    atomic_llong next;
} gather_t;

/* First string whose bytes reach past `pos` (start[i + 1] > pos). */
static int64_t string_at(const int64_t *start, int64_t n, int64_t pos) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (start[mid + 1] > pos) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static void gather_worker(void *ctx, int thread_index) {
    (void)thread_index;
    gather_t *g = (gather_t *)ctx;
    for (;;) {
        int64_t u = atomic_fetch_add(&g->next, 1);
        if (u >= g->units) break;
        int64_t lo = u * g->unit, hi = lo + g->unit < g->start[g->n] ? lo + g->unit : g->start[g->n];
        for (int64_t i = string_at(g->start, g->n, lo); i < g->n && g->start[i] < hi; i++) {
            int64_t a = g->start[i] > lo ? g->start[i] : lo;
            int64_t b = g->start[i + 1] < hi ? g->start[i + 1] : hi;
            if (b > a) memcpy(g->dst + a, g->src[i] + (a - g->start[i]), (size_t)(b - a));
        }
    }
}

int fl_gather_bytes(const char *const *src, const int64_t *start, int64_t n, char *dst,
                    int nthreads, int64_t unit_bytes, fl_error *err) {
    (void)err;
    if (n <= 0 || start[n] <= 0) return FL_OK;
    gather_t g;
    g.src = src;
    g.start = start;
    g.n = n;
    g.dst = dst;
    g.unit = unit_bytes > 0 ? unit_bytes : FL_AUTO_UNIT_MAX;
    if (g.unit > start[n]) g.unit = start[n]; /* one unit; keeps lo + unit from overflowing */
    g.units = (start[n] + g.unit - 1) / g.unit;
    atomic_init(&g.next, 0);
    fl_parallel_run(resolve_threads(nthreads, start[n], g.units), gather_worker, &g);
    return FL_OK;
}
