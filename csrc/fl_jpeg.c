/* JPEG decoding with a libjpeg bound at run time: see fl_jpeg.h. */
#define _GNU_SOURCE
#include "fl_jpeg.h"

#include <dlfcn.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "fl_jpeg_abi.h"

static flj_api J;

int fl_jpeg_loaded(void) { return J.lib != NULL; }

/* An error manager that never prints and never exits: errors longjmp back to
 * the decode call; warnings are counted (and are errors when strict). */
typedef struct {
    struct flj_error_mgr pub; /* first: libjpeg sees only this part */
    jmp_buf jump;
    int strict;
    int too_many_scans;       /* the progress monitor stopped the decode */
    char text[FLJ_MSG_LENGTH_MAX];
} fl_jpeg_err;

/* Scans one image may have. A progressive JPEG's valid scans are few (libjpeg's
 * own progression writes 10, optimisers a few dozen); every scan is a pass over
 * the whole image's coefficients, so a file of thousands of tiny scans (lax
 * decoding lets an inconsistent progression go on) is a decompression-time bomb:
 * 33 bytes of file cost a pass over every block. TurboJPEG's TJPARAM_SCANLIMIT
 * guards the same; 500 as its tools use. */
#define FL_JPEG_MAX_SCANS 500

static void on_error_exit(flj_common_ptr c) {
    fl_jpeg_err *e = (fl_jpeg_err *)c->err;
    e->pub.format_message(c, e->text);
    longjmp(e->jump, 1);
}

static void on_emit_message(flj_common_ptr c, int level) {
    fl_jpeg_err *e = (fl_jpeg_err *)c->err;
    if (level >= 0) return; /* trace messages */
    e->pub.num_warnings++;
    if (e->strict) {
        e->pub.format_message(c, e->text);
        longjmp(e->jump, 1);
    }
}

static void on_output_message(flj_common_ptr c) { (void)c; }

static void on_progress(flj_common_ptr c) {
    struct flj_decompress *ci = (struct flj_decompress *)c;
    if (ci->input_scan_number > FL_JPEG_MAX_SCANS) {
        fl_jpeg_err *e = (fl_jpeg_err *)c->err;
        e->too_many_scans = 1;
        longjmp(e->jump, 1);
    }
}

struct fl_jpeg_decoder {
    struct flj_decompress cinfo;
    fl_jpeg_err err;
    struct flj_progress_mgr progress;
    int created;
    uint8_t *row;        /* one decoded row (3 or 4 bytes per pixel) */
    size_t row_cap;
    uint8_t *rgb;        /* CMYK rows converted */
    size_t rgb_cap;
};

int fl_jpeg_load(const char *path, char *why, size_t why_len) {
    if (J.lib) return 0;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, why_len, "%s", dlerror());
        return -1;
    }
    flj_api api;
    memset(&api, 0, sizeof(api));
#define SYM(field, name)                                                        \
    do {                                                                        \
        *(void **)(&api.field) = dlsym(lib, name);                              \
        if (!api.field) {                                                       \
            snprintf(why, why_len, "%s: symbol %s missing", path, name);        \
            dlclose(lib);                                                       \
            return -1;                                                          \
        }                                                                       \
    } while (0)
    SYM(std_error, "jpeg_std_error");
    SYM(create_decompress, "jpeg_CreateDecompress");
    SYM(destroy_decompress, "jpeg_destroy_decompress");
    SYM(abort_decompress, "jpeg_abort_decompress");
    SYM(mem_src, "jpeg_mem_src");
    SYM(read_header, "jpeg_read_header");
    SYM(calc_output_dimensions, "jpeg_calc_output_dimensions");
    SYM(start_decompress, "jpeg_start_decompress");
    SYM(read_scanlines, "jpeg_read_scanlines");
    SYM(skip_scanlines, "jpeg_skip_scanlines");
    SYM(crop_scanline, "jpeg_crop_scanline");
    SYM(read_coefficients, "jpeg_read_coefficients");
#undef SYM
    /* The library refuses an object of another size (or another ABI version)
     * through error_exit: create one here to know before any image. */
    static fl_jpeg_err e;
    static struct flj_decompress probe;
    memset(&probe, 0, sizeof(probe));
    api.std_error(&e.pub);
    e.pub.error_exit = on_error_exit;
    e.pub.emit_message = on_emit_message;
    e.pub.output_message = on_output_message;
    probe.err = &e.pub;
    if (setjmp(e.jump)) {
        snprintf(why, why_len, "%s does not take this build's libjpeg %d objects (%zu bytes): %s",
                 path, FLJ_LIB_VERSION, sizeof(struct flj_decompress), e.text);
        dlclose(lib);
        return -1;
    }
    api.create_decompress(&probe, FLJ_LIB_VERSION, sizeof(struct flj_decompress));
    api.destroy_decompress(&probe);
    api.lib = lib;
    J = api;
    return 0;
}

/* ---- the ABI as compiled, for tests ------------------------------------- */

#define SZ(t) {"sizeof " #t, (long)sizeof(struct t)}
#define OFF(t, f) {#t "." #f, (long)offsetof(struct t, f)}
static const struct {
    const char *name;
    long value;
} abi_table[] = {
    SZ(flj_error_mgr), SZ(flj_source_mgr), SZ(flj_decompress),
    OFF(flj_error_mgr, msg_code), OFF(flj_error_mgr, trace_level),
    OFF(flj_error_mgr, num_warnings), OFF(flj_error_mgr, last_addon_message),
    OFF(flj_decompress, src), OFF(flj_decompress, image_width),
    OFF(flj_decompress, jpeg_color_space), OFF(flj_decompress, out_color_space),
    OFF(flj_decompress, scale_num), OFF(flj_decompress, output_gamma),
    OFF(flj_decompress, dct_method), OFF(flj_decompress, do_fancy_upsampling),
    OFF(flj_decompress, output_width), OFF(flj_decompress, output_components),
    OFF(flj_decompress, output_scanline), OFF(flj_decompress, data_precision),
    OFF(flj_decompress, progressive_mode), OFF(flj_decompress, restart_interval),
    OFF(flj_decompress, saw_Adobe_marker), OFF(flj_decompress, Adobe_transform),
    OFF(flj_decompress, marker_list), OFF(flj_decompress, min_DCT_scaled_size),
    OFF(flj_decompress, MCU_membership), OFF(flj_decompress, unread_marker),
    OFF(flj_decompress, cquantize),
};
#undef SZ
#undef OFF

int fl_jpeg_abi_count(void) { return (int)(sizeof(abi_table) / sizeof(abi_table[0])); }
const char *fl_jpeg_abi_name(int i) { return abi_table[i].name; }
long fl_jpeg_abi_value(int i) { return abi_table[i].value; }

/* ---- the header, without libjpeg ---------------------------------------- */

static inline unsigned be16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }
static inline unsigned rd16(const uint8_t *p, int le) {
    return le ? ((unsigned)p[1] << 8) | p[0] : be16(p);
}
static inline uint32_t rd32(const uint8_t *p, int le) {
    return le ? ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0]
              : ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int fl_jpeg_is_jpeg(const uint8_t *data, int64_t len) {
    return len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

static int is_exif(const uint8_t *p, int64_t n) { return n >= 6 && memcmp(p, "Exif\0\0", 6) == 0; }

/* The orientation tag (0x0112) of IFD0 in an APP1 "Exif" payload; 1 when absent. As
 * Pillow's getexif() reads it: a SHORT, or a BYTE or LONG where a writer stored one. */
static int exif_orientation(const uint8_t *p, int64_t n) {
    if (n < 14 || !is_exif(p, n)) return 1;
    const uint8_t *t = p + 6;
    int64_t tn = n - 6;
    int le;
    if (t[0] == 'I' && t[1] == 'I') le = 1;
    else if (t[0] == 'M' && t[1] == 'M') le = 0;
    else return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if ((int64_t)ifd + 2 > tn) return 1;
    unsigned count = rd16(t + ifd, le);
    for (unsigned k = 0; k < count; k++) {
        int64_t e = (int64_t)ifd + 2 + 12 * (int64_t)k;
        if (e + 12 > tn) return 1;
        if (rd16(t + e, le) == 0x0112) {
            unsigned type = rd16(t + e + 2, le);
            uint32_t v = type == 1 ? t[e + 8] : type == 3 ? rd16(t + e + 8, le)
                       : type == 4 ? rd32(t + e + 8, le) : 0;
            return (v >= 1 && v <= 8) ? (int)v : 1;
        }
    }
    return 1;
}

static int has_eoi_after(const uint8_t *data, int64_t len, int64_t from) {
    for (int64_t i = len - 1; i > from; i--)
        if (data[i] == 0xD9 && data[i - 1] == 0xFF) return 1;
    return 0;
}

int fl_jpeg_parse_header(const uint8_t *data, int64_t len, int strict, fl_jpeg_header *h,
                         fl_error *err) {
    memset(h, 0, sizeof(*h));
    h->orientation = 1;
    if (!fl_jpeg_is_jpeg(data, len))
        return fl_error_set(err, FL_E_CORRUPT, 0, -1, 0, len, "not a JPEG stream (no SOI marker)");
    int64_t pos = 2;
    int have_sof = 0, saw_exif = 0;
    for (;;) {
        while (pos + 1 < len && data[pos] == 0xFF && data[pos + 1] == 0xFF) pos++;
        if (pos + 2 > len)
            return fl_error_set(err, FL_E_CORRUPT, 0, -1, pos, len,
                                "truncated JPEG: the stream ends inside its header (byte %lld)",
                                (long long)pos);
        if (data[pos] != 0xFF)
            return fl_error_set(err, FL_E_CORRUPT, 0, -1, pos, len,
                                "corrupt JPEG: no marker at byte %lld of the header", (long long)pos);
        unsigned m = data[pos + 1];
        pos += 2;
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; /* no payload */
        if (m == 0xD9)
            return fl_error_set(err, FL_E_CORRUPT, 0, -1, pos, len,
                                "corrupt JPEG: end of image before any scan");
        if (pos + 2 > len)
            return fl_error_set(err, FL_E_CORRUPT, 0, -1, pos, len,
                                "truncated JPEG: the stream ends inside its header");
        int64_t seg = be16(data + pos);
        if (seg < 2 || pos + seg > len)
            return fl_error_set(err, FL_E_CORRUPT, 0, -1, pos, len,
                                "%s JPEG: marker 0x%02X at byte %lld claims %lld bytes",
                                seg < 2 ? "corrupt" : "truncated", m, (long long)pos - 2,
                                (long long)seg);
        const uint8_t *p = data + pos + 2;
        int64_t n = seg - 2;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && !have_sof) {
            if (n < 6)
                return fl_error_set(err, FL_E_CORRUPT, 0, -1, pos, len,
                                    "corrupt JPEG: short frame header");
            have_sof = 1;
            h->height = (int32_t)be16(p + 1);
            h->width = (int32_t)be16(p + 3);
            h->components = p[5];
            h->progressive = (m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE);
            h->lossless = (m == 0xC3 || m == 0xC7 || m == 0xCB || m == 0xCF);
            if (h->height == 0 || h->width == 0)
                return fl_error_set(err, FL_E_FORMAT, 0, -1, pos, len,
                                    "JPEG without a width or height in its frame header");
            if (h->lossless) {
                pos += seg;
                continue;
            }
            if (p[0] != 8)
                return fl_error_set(err, FL_E_FORMAT, 0, -1, pos, len,
                                    "%d-bit JPEG samples are not supported (8-bit only)", p[0]);
            if (h->components != 1 && h->components != 3 && h->components != 4)
                return fl_error_set(err, FL_E_FORMAT, 0, -1, pos, len,
                                    "JPEG with %d components (1, 3 or 4 supported)",
                                    h->components);
        } else if (m == 0xE1 && !saw_exif && is_exif(p, n)) {
            saw_exif = 1; /* the first Exif segment only, as Pillow */
            h->orientation = exif_orientation(p, n);
        } else if (m == 0xDA) {
            if (!have_sof)
                return fl_error_set(err, FL_E_CORRUPT, 0, -1, pos, len,
                                    "corrupt JPEG: a scan before the frame header");
            h->scan_offset = pos + seg;
            break;
        }
        pos += seg;
    }
    if (strict && !has_eoi_after(data, len, h->scan_offset))
        return fl_error_set(err, FL_E_CORRUPT, 0, -1, 0, len,
                            "truncated JPEG: no end-of-image marker after the scan data");
    return FL_OK;
}

/* ---- decoding ------------------------------------------------------------ */

fl_jpeg_decoder *fl_jpeg_decoder_new(void) { return calloc(1, sizeof(fl_jpeg_decoder)); }

void fl_jpeg_decoder_free(fl_jpeg_decoder *d) {
    if (!d) return;
    if (d->created) J.destroy_decompress(&d->cinfo);
    free(d->row);
    free(d->rgb);
    free(d);
}

static int grow(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    uint8_t *p = realloc(*buf, need);
    if (!p) return -1;
    *buf = p;
    *cap = need;
    return 0;
}

/* A fresh object for every image. jpeg_abort_decompress would keep the
 * quantization and Huffman tables of the image before (libjpeg keeps them for
 * abbreviated streams), so a file without its own DQT, or whose DHT was damaged,
 * would decode with a previous file's tables -- an answer that depends on which
 * images a thread decoded before -- where alone it is refused. Creating the
 * object costs a few small allocations; its per-image buffers are freed by the
 * abort either way. */
static int ensure_created(fl_jpeg_decoder *d, fl_error *err) {
    if (d->created) {
        J.destroy_decompress(&d->cinfo);
        memset(&d->cinfo, 0, sizeof(d->cinfo));
        d->created = 0;
    }
    if (!J.lib)
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "libjpeg is not loaded");
    J.std_error(&d->err.pub);
    d->err.pub.error_exit = on_error_exit;
    d->err.pub.emit_message = on_emit_message;
    d->err.pub.output_message = on_output_message;
    d->cinfo.err = &d->err.pub;
    if (setjmp(d->err.jump))
        return fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "libjpeg: %s", d->err.text);
    J.create_decompress(&d->cinfo, FLJ_LIB_VERSION, sizeof(struct flj_decompress));
    memset(&d->progress, 0, sizeof(d->progress));
    d->progress.progress_monitor = on_progress;
    d->cinfo.progress = &d->progress;
    d->created = 1;
    return FL_OK;
}

/* round(a * b / 255) for a, b in 0..255, exactly */
static inline uint8_t mul255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (uint8_t)((t + (t >> 8)) >> 8);
}

/* CMYK -> RGB: R = (255 - C)(255 - K) / 255, and so on. Adobe's CMYK (as
 * Photoshop writes every CMYK/YCCK JPEG) stores the inks inverted, so the
 * stored values are 255 - C and 255 - K. Pillow takes every CMYK JPEG so,
 * with or without an Adobe marker ("assume adobe conventions"), and so does
 * this: a file without the marker decodes as Pillow decodes it. */
static void cmyk_to_rgb(const uint8_t *s, uint8_t *d, int64_t n) {
    for (int64_t i = 0; i < n; i++, s += 4, d += 3) {
        unsigned c = s[0], m = s[1], y = s[2], k = s[3];
        d[0] = mul255(c, k);
        d[1] = mul255(m, k);
        d[2] = mul255(y, k);
    }
}

/* The body of one decode: everything libjpeg may longjmp out of. */
static int decode_body(fl_jpeg_decoder *d, const uint8_t *data, int64_t len,
                       const fl_jpeg_settings *s, int scale_num, const fl_jpeg_sink *sink,
                       fl_error *err) {
    struct flj_decompress *ci = &d->cinfo;
    J.mem_src(ci, data, (unsigned long)len);
    if (J.read_header(ci, 1) != FLJ_HEADER_OK)
        return fl_error_set(err, FL_E_CORRUPT, 0, -1, 0, len, "corrupt JPEG: no image in the stream");
    int cmyk = ci->jpeg_color_space == FLJ_CS_CMYK || ci->jpeg_color_space == FLJ_CS_YCCK;
    ci->out_color_space = cmyk ? FLJ_CS_CMYK : FLJ_CS_RGB;
    ci->dct_method = s->dct_method;
    ci->do_fancy_upsampling = s->fancy_upsampling ? 1 : 0;
    ci->scale_num = (unsigned)scale_num;
    ci->scale_denom = 8;
    J.calc_output_dimensions(ci);
    int64_t win[4] = {0, 0, ci->output_width, ci->output_height};
    int rc = sink->begin(sink->ctx, ci->output_width, ci->output_height, win, err);
    if (rc != FL_OK) return rc;
    int64_t W = ci->output_width, H = ci->output_height;
    if (win[0] < 0) win[0] = 0;
    if (win[1] < 0) win[1] = 0;
    if (win[2] > W) win[2] = W;
    if (win[3] > H) win[3] = H;
    if (win[2] <= win[0] || win[3] <= win[1])
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "empty decode window");
    J.start_decompress(ci);
    flj_dim xoff = (flj_dim)win[0], width = (flj_dim)(win[2] - win[0]);
    if (width < ci->output_width) J.crop_scanline(ci, &xoff, &width);
    int comps = ci->output_components;
    if (grow(&d->row, &d->row_cap, (size_t)ci->output_width * (size_t)comps) ||
        (cmyk && grow(&d->rgb, &d->rgb_cap, (size_t)ci->output_width * 3)))
        return fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "cannot allocate a decode row");
    if (win[1] > 0) J.skip_scanlines(ci, (flj_dim)win[1]);
    for (int64_t y = win[1]; y < win[3]; y++) {
        uint8_t *rows[1] = {d->row};
        if (J.read_scanlines(ci, rows, 1) != 1)
            return fl_error_set(err, FL_E_CORRUPT, 0, -1, 0, len, "corrupt JPEG: row %lld missing",
                                (long long)y);
        const uint8_t *rgb = d->row;
        if (cmyk) {
            cmyk_to_rgb(d->row, d->rgb, width);
            rgb = d->rgb;
        }
        sink->row(sink->ctx, y, rgb, xoff, width);
    }
    return FL_OK;
}

/* libjpeg's error_exit: out of memory (a huge image, with max_pixels off) is no corrupt
 * data; everything else it refuses is. */
static int libjpeg_failed(fl_jpeg_decoder *d, int64_t len, fl_error *err) {
    J.abort_decompress(&d->cinfo);
    if (d->err.too_many_scans)
        return fl_error_set(err, FL_E_TOO_LARGE, 0, -1, 0, len,
                            "progressive JPEG with more than %d scans (a decompression bomb?)",
                            FL_JPEG_MAX_SCANS);
    if (strncmp(d->err.text, "Insufficient memory", 19) == 0)
        return fl_error_set(err, FL_E_NOMEM, 0, -1, 0, len,
                            "libjpeg cannot allocate the memory to decode this %u x %u JPEG: %s",
                            d->cinfo.image_width, d->cinfo.image_height, d->err.text);
    return fl_error_set(err, FL_E_CORRUPT, 0, -1, 0, len, "corrupt JPEG: %s", d->err.text);
}

int fl_jpeg_decode(fl_jpeg_decoder *d, const uint8_t *data, int64_t len,
                   const fl_jpeg_settings *s, int scale_num, const fl_jpeg_sink *sink,
                   fl_error *err) {
    int rc = ensure_created(d, err);
    if (rc != FL_OK) return rc;
    if (scale_num < 1 || scale_num > 8)
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "scale %d/8 out of range", scale_num);
    d->err.strict = s->strict;
    d->err.too_many_scans = 0;
    d->err.pub.num_warnings = 0;
    if (setjmp(d->err.jump)) return libjpeg_failed(d, len, err);
    rc = decode_body(d, data, len, s, scale_num, sink, err);
    /* Rows below the window are never decoded: abort instead of finish. */
    J.abort_decompress(&d->cinfo);
    return rc;
}

int fl_jpeg_entropy_only(fl_jpeg_decoder *d, const uint8_t *data, int64_t len, fl_error *err) {
    int rc = ensure_created(d, err);
    if (rc != FL_OK) return rc;
    d->err.strict = 0;
    d->err.too_many_scans = 0;
    if (setjmp(d->err.jump)) return libjpeg_failed(d, len, err);
    J.mem_src(&d->cinfo, data, (unsigned long)len);
    J.read_header(&d->cinfo, 1);
    J.read_coefficients(&d->cinfo);
    J.abort_decompress(&d->cinfo);
    return FL_OK;
}
