/* The collate kernel: gathers N samples into one batch in one pass, with the
 * layout change (channels-last <-> channels-first), the dtype conversion and a
 * per-channel affine map x * scale[c] + shift[c] fused into that pass.
 *
 * A sample is C channels of P pixels (an H x W x C image has P = H * W; a
 * sample that is not an image is C = 1 channel of all its elements). It is
 * stored channels-last (pixel-major, element (p, c) at p * C + c) or
 * channels-first (element (p, c) at c * P + p). Samples may sit at any
 * address (no alignment needed); the batch is dst[n][sample in dst layout].
 *
 * The batch is cut into work units of about unit_bytes of output each (a piece
 * of one sample, or several whole samples) that nthreads native threads take
 * from a shared counter. */
#ifndef FL_COLLATE_H
#define FL_COLLATE_H

#include <stdint.h>

#include "fl_error.h"

typedef enum {
    FL_DT_RAW = 0, /* same dtype in and out, no arithmetic: elements of elem_size bytes */
    FL_DT_U8 = 1,
    FL_DT_U16 = 2,
    FL_DT_F32 = 3,
    FL_DT_F16 = 4,  /* IEEE half, round to nearest even */
    FL_DT_BF16 = 5, /* bfloat16 bits, round to nearest even */
} fl_dtype;

typedef enum {
    FL_ISA_AUTO = 0,    /* AVX2+FMA+F16C when the CPU has them, else generic */
    FL_ISA_GENERIC = 1, /* portable C (SSE2 on x86-64) */
    FL_ISA_AVX2 = 2,
} fl_isa;

typedef enum {
    FL_STORES_AUTO = 0,   /* streaming stores for an output above FL_STREAM_MIN_BYTES */
    FL_STORES_PLAIN = 1,  /* the batch stays in cache for a consumer that reads it soon */
    FL_STORES_STREAM = 2, /* non-temporal stores where a kernel has them: the caller knows the
                             batch's lines will have left the cache before anyone reads them */
} fl_stores;

typedef struct {
    const char *const *src;  /* n sample pointers, any alignment */
    char *dst;               /* the batch; aligned to the output element size */
    int64_t n;               /* samples */
    int64_t pixels;          /* P */
    int64_t channels;        /* C >= 1 */
    int src_channels_last;   /* 1: (P, C) samples, 0: (C, P) */
    int dst_channels_last;   /* layout written; differs from the source's = transpose */
    int src_dtype;           /* fl_dtype; FL_DT_RAW for a plain copy (then dst_dtype too) */
    int dst_dtype;
    int elem_size;           /* bytes per element for FL_DT_RAW: 1, 2, 4 or 8 (any when
                                the layout is kept) */
    const float *scale;      /* C multipliers (float conversions only) */
    const float *shift;      /* C offsets */
    int64_t unit_bytes;      /* output bytes per work unit; 0 = automatic */
    int nthreads;            /* 0 = automatic */
    int isa;                 /* fl_isa */
    int stores;              /* fl_stores */
} fl_collate_args;

typedef struct {
    int64_t units;        /* work units the batch was cut into */
    int64_t unit_bytes;   /* output bytes of one unit (the last of a sample may be less) */
    int threads;          /* native threads that ran */
    int isa;              /* fl_isa used */
    int transposed;       /* 1 when the layout was converted */
    int streamed;         /* 1 when streaming stores were asked for */
} fl_collate_stats;

/* Returns FL_OK, or FL_E_INVALID / FL_E_NOMEM with err filled (the bridge checks
 * every argument first, so those mean a bug or no memory). */
int fl_collate(const fl_collate_args *a, fl_collate_stats *stats, fl_error *err);

/* Packs n byte strings back to back into dst: string i goes to
 * dst[start[i] : start[i + 1]] (start holds n + 1 ascending offsets, start[0] = 0).
 * Parallel over units of unit_bytes of dst (0 = automatic). */
int fl_gather_bytes(const char *const *src, const int64_t *start, int64_t n, char *dst,
                    int nthreads, int64_t unit_bytes, fl_error *err);

/* The fl_isa that FL_ISA_AUTO picks on this CPU. */
int fl_collate_best_isa(void);

/* Native threads that "automatic" may use (the CPUs this process may run on). */
int fl_collate_cpu_count(void);

#endif
