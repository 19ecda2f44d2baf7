/* Resampling of 3-channel uint8 images, streamed row by row: rows arrive from
 * a decoder in order and each output row is written once its last input row
 * has arrived, so the decoded image is never stored whole.
 *
 * The filter is the triangle (bilinear) filter; when shrinking with
 * `antialias` it is widened by the scale (as PIL's and torchvision's
 * antialiased bilinear resize), so every input pixel contributes. An output
 * sample i of an axis maps the input box [box0, box1) onto `out` samples:
 * its centre is box0 + (i + 0.5) * (box1 - box0) / out, and only input pixels
 * inside [clip_lo, clip_hi) contribute (the box itself for crop-then-resize,
 * the whole image for resize-then-crop). Weights are normalised, so an output
 * that lands on input pixels one to one copies them exactly.
 *
 * Each input row is first accumulated into the output rows it contributes
 * to (vertical pass, contiguous: vectorised), then each finished row is
 * filtered horizontally into the output, mirrored when `flip`. */
#ifndef FL_RESAMPLE_H
#define FL_RESAMPLE_H

#include <stdint.h>

typedef struct {
    int64_t out;     /* output samples */
    int64_t taps;    /* most input samples one output sample reads */
    int64_t lo, hi;  /* input samples any output reads: [lo, hi) */
    int64_t *first;  /* per output: first input sample */
    int32_t *count;  /* per output: how many (1..taps) */
    float *w;        /* per output: taps weights, zero-padded */
} fl_axis;

/* Returns 0, or -1 when out of memory. The axis owns its arrays. */
int fl_axis_init(fl_axis *ax, double box0, double box1, int64_t out, int64_t clip_lo,
                 int64_t clip_hi, int antialias);
void fl_axis_free(fl_axis *ax);

typedef struct {
    fl_axis h, v;
    int64_t ring;      /* output rows open at once (accumulators) */
    float *acc;        /* ring x (h.hi - h.lo) x 3 floats (+ padding), then the input row as floats */
    int64_t acc_cap;   /* floats allocated */
    float *pairs;      /* AVX2 path: per output, its weights two taps at a time (8 floats) */
    int64_t pairs_cap;
    int64_t next_open, next_done;
    uint8_t *dst;      /* out rows of h.out x 3 bytes */
    int64_t dst_stride;
    int flip;
} fl_resampler;

/* Prepares a resampler whose axes are already initialised (h, v); keeps the
 * accumulator allocation across images. Returns 0, or -1 when out of memory. */
int fl_resampler_start(fl_resampler *r, uint8_t *dst, int64_t dst_stride, int flip);

/* Input row y: pixels x_first .. x_first + width - 1, 3 bytes each; it must
 * hold columns h.lo .. h.hi - 1. Rows outside [v.lo, v.hi) are ignored. */
void fl_resampler_push(fl_resampler *r, int64_t y, const uint8_t *row, int64_t x_first,
                       int64_t width);

/* 1 when every output row has been written. */
int fl_resampler_done(const fl_resampler *r);

void fl_resampler_free(fl_resampler *r);

#endif
