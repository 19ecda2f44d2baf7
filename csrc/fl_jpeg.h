/* JPEG decoding with libjpeg(-turbo), bound at run time (dlopen), so the build
 * needs no libjpeg headers and the library can come from a pip wheel: the
 * bridge hands in the path of the libjpeg Pillow's wheel ships, or a system
 * libjpeg.so.62.
 *
 * Two parts: a header parser that walks the marker segments without libjpeg
 * (size, components, EXIF orientation, where the scan starts), and a decoder
 * object (one per thread) that decodes one image from memory at a DCT scale of
 * k/8, only the window of rows and columns its caller asks for, and hands each
 * decoded RGB row to a sink. libjpeg never prints and never calls exit():
 * its errors (and, when strict, its corrupt-data warnings) come back as an
 * fl_error with FL_E_CORRUPT. */
#ifndef FL_JPEG_H
#define FL_JPEG_H

#include <stdint.h>

#include "fl_error.h"

/* Binds libjpeg from `path` (once per process; call under the GIL before any
 * decode). Checks the library accepts this build's decompression object.
 * Returns 0, or -1 with `why` set. */
int fl_jpeg_load(const char *path, char *why, size_t why_len);
int fl_jpeg_loaded(void);

/* Sizes and field offsets of the ABI structs as compiled here (name, value),
 * so a test can hold them against a jpeglib.h. */
int fl_jpeg_abi_count(void);
const char *fl_jpeg_abi_name(int i);
long fl_jpeg_abi_value(int i);

typedef struct {
    int32_t width, height;   /* as stored (SOF marker) */
    int32_t components;      /* 1, 3 or 4 */
    int32_t orientation;     /* EXIF orientation 1..8; 1 when there is none */
    int32_t progressive;
    int32_t lossless;        /* a lossless frame (SOF3/7/11/15): libjpeg-turbo 3 decodes it
                                whole only (no DCT scaling, cropping, skipping or colour
                                conversion), so it goes to Pillow */
    int64_t scan_offset;     /* first byte after the first SOS segment */
} fl_jpeg_header;

/* 1 when `data` starts like a JPEG (SOI marker). */
int fl_jpeg_is_jpeg(const uint8_t *data, int64_t len);

/* Parses the marker segments up to the first scan. With `strict`, a stream
 * without an end-of-image marker after its scan data is truncated. Returns
 * FL_OK, FL_E_CORRUPT or FL_E_FORMAT (not 8-bit, no height) with err set. */
int fl_jpeg_parse_header(const uint8_t *data, int64_t len, int strict, fl_jpeg_header *h,
                         fl_error *err);

typedef struct {
    int dct_method;        /* 0 islow (libjpeg's default, Pillow's), 1 ifast, 2 float */
    int fancy_upsampling;  /* 1: libjpeg's default (Pillow's) */
    int strict;            /* corrupt-data warnings are errors */
} fl_jpeg_settings;

/* Where the decoded rows go. `begin` learns the scaled image size and fills
 * win = {x0, y0, x1, y1}: the scaled pixels it needs (the decoder reads at
 * least those, and may widen x to iMCU boundaries). `row` gets each decoded
 * row y of the window as RGB bytes, pixels x_first .. x_first + width - 1. */
typedef struct {
    int (*begin)(void *ctx, int64_t scaled_w, int64_t scaled_h, int64_t win[4], fl_error *err);
    void (*row)(void *ctx, int64_t y, const uint8_t *rgb, int64_t x_first, int64_t width);
    void *ctx;
} fl_jpeg_sink;

typedef struct fl_jpeg_decoder fl_jpeg_decoder;

fl_jpeg_decoder *fl_jpeg_decoder_new(void);
void fl_jpeg_decoder_free(fl_jpeg_decoder *d);

/* Decodes `data` at scale scale_num/8 (1..8) into `sink`. CMYK and YCCK
 * images come out as RGB (taken as Adobe-inverted CMYK, as Photoshop writes it
 * and Pillow reads every CMYK JPEG). */
int fl_jpeg_decode(fl_jpeg_decoder *d, const uint8_t *data, int64_t len,
                   const fl_jpeg_settings *s, int scale_num, const fl_jpeg_sink *sink,
                   fl_error *err);

/* Entropy decoding alone (jpeg_read_coefficients: Huffman, no IDCT), for the
 * per-stage breakdown of benchmarks. */
int fl_jpeg_entropy_only(fl_jpeg_decoder *d, const uint8_t *data, int64_t len, fl_error *err);

#endif
