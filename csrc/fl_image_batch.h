/* Images -> one batch: decode (JPEG, fl_jpeg) or take decoded pixels, crop,
 * resample (fl_resample), apply EXIF orientation and a horizontal flip, and
 * convert (fl_collate: dtype, layout, per-channel affine) into each image's
 * slot of the output, on native threads that take images in turn.
 *
 * Boxes are in displayed coordinates (after the EXIF orientation when it is
 * applied); the decoder reads only the rows and iMCU columns the box needs,
 * at the largest DCT downscale (k/8) that keeps the box at least the output
 * size. Every image gets its own status: one bad file fails only itself. */
#ifndef FL_IMAGE_BATCH_H
#define FL_IMAGE_BATCH_H

#include <stdint.h>

#include "fl_error.h"
#include "fl_jpeg.h"

enum {
    FL_IMG_UNKNOWN = 0, /* not recognised (or a lossless JPEG): the bridge hands it to Pillow */
    FL_IMG_JPEG = 1,
    FL_IMG_PNG = 2,     /* size known from IHDR; decoded by Pillow */
    FL_IMG_PIXELS = 3,  /* already decoded: height x width x 3 uint8 */
};

enum { FL_DCT_SCALE_OFF = 0, FL_DCT_SCALE_POW2 = 1, FL_DCT_SCALE_ANY = 2 };

typedef struct {
    int32_t format;        /* FL_IMG_* */
    int32_t width, height; /* as stored */
    int32_t components;
    int32_t orientation;   /* EXIF 1..8 (1: none) */
    int32_t progressive;
} fl_image_info;

/* Recognises each image from its first bytes and reads JPEG and PNG headers.
 * errs[i].code is FL_OK, FL_E_CORRUPT (empty, damaged header), FL_E_FORMAT
 * or FL_E_TOO_LARGE (more than max_pixels; 0 = no limit). Returns the failures. */
int64_t fl_image_probe(const uint8_t *const *data, const int64_t *len, int64_t n, int strict,
                       int64_t max_pixels, fl_image_info *info, fl_error *errs);

typedef struct {
    int64_t n;
    const uint8_t *const *data; /* JPEG bytes, or height x width x 3 pixels (FL_IMG_PIXELS) */
    const int64_t *len;
    const fl_image_info *info;  /* format FL_IMG_JPEG or FL_IMG_PIXELS */
    const double *box;          /* n x 4: x0, y0, x1, y1, displayed coordinates */
    const uint8_t *flip;        /* n: mirror the output left-right */
    const int32_t *out_size;    /* n x 2: output height, width */
    const int64_t *dst_offset;  /* n: byte offset of each image's slot in dst */
    char *dst;
    int apply_orientation;
    int clip_to_box;            /* 1: crop, then resize; 0: resize, then crop */
    int antialias;
    int dct_scaling;            /* FL_DCT_SCALE_* */
    fl_jpeg_settings jpeg;
    int64_t max_pixels;         /* 0 = no limit */
    int convert;                /* 0: slots are uint8 HWC, written directly */
    int dst_dtype;              /* fl_dtype of the slots (FL_DT_RAW: uint8, transposed) */
    int dst_channels_last;
    const float *scale;         /* 3 multipliers, 3 offsets (float outputs) */
    const float *shift;
    int isa;                    /* fl_isa for the conversion */
    int nthreads;               /* 0 = one per CPU, at most one per image */
    int timing;                 /* measure the stages (costs two clock reads per row) */
} fl_image_batch_args;

typedef struct {
    int threads;
    int64_t failed;
    int64_t scaled;          /* JPEGs decoded at a DCT scale below 8/8 */
    int64_t decoded_pixels;  /* pixels the decoder produced (after scaling and cropping) */
    int64_t source_pixels;   /* pixels of the images as stored */
    int64_t decode_ns;       /* summed over threads (timing only) */
    int64_t resample_ns;
    int64_t convert_ns;
} fl_image_batch_stats;

/* errs[i] (n of them) gets image i's status. Returns FL_OK, or the code of the
 * lowest-index failure (every image was still attempted). */
int fl_image_decode_batch(const fl_image_batch_args *a, fl_error *errs, fl_image_batch_stats *st);

#endif
