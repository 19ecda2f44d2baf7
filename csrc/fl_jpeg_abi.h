/* The part of the libjpeg 6.2 ABI (JPEG_LIB_VERSION 62, as libjpeg-turbo and
 * Pillow's wheel build it) that fastload's decoder uses, declared here so the
 * build needs no libjpeg headers: the library is bound at run time (fl_jpeg.c).
 *
 * The decompression object must have exactly the library's size and field
 * offsets: jpeg_CreateDecompress refuses an object of another size, and the
 * decoder reads and writes fields by offset. The layout follows the field
 * order of jpeglib.h for version 62 (no fields of versions 70/80), with
 * boolean = int, JDIMENSION = unsigned int and enums the size of int;
 * tests/native/test_jpeg.py compares sizes and offsets with a system
 * jpeglib.h where one is installed. */
#ifndef FL_JPEG_ABI_H
#define FL_JPEG_ABI_H

#include <stddef.h>

#define FLJ_LIB_VERSION 62
#define FLJ_MSG_LENGTH_MAX 200
#define FLJ_HEADER_OK 1

typedef int flj_boolean;
typedef unsigned int flj_dim;

/* J_COLOR_SPACE */
enum {
    FLJ_CS_UNKNOWN = 0,
    FLJ_CS_GRAYSCALE = 1,
    FLJ_CS_RGB = 2,
    FLJ_CS_YCBCR = 3,
    FLJ_CS_CMYK = 4,
    FLJ_CS_YCCK = 5,
};

/* J_DCT_METHOD */
enum { FLJ_DCT_ISLOW = 0, FLJ_DCT_IFAST = 1, FLJ_DCT_FLOAT = 2 };

typedef struct flj_common *flj_common_ptr;
typedef struct flj_decompress *flj_decompress_ptr;

struct flj_error_mgr {
    void (*error_exit)(flj_common_ptr cinfo);
    void (*emit_message)(flj_common_ptr cinfo, int msg_level);
    void (*output_message)(flj_common_ptr cinfo);
    void (*format_message)(flj_common_ptr cinfo, char *buffer);
    void (*reset_error_mgr)(flj_common_ptr cinfo);
    int msg_code;
    union {
        int i[8];
        char s[80];
    } msg_parm;
    int trace_level;
    long num_warnings;
    const char *const *jpeg_message_table;
    int last_jpeg_message;
    const char *const *addon_message_table;
    int first_addon_message;
    int last_addon_message;
};

struct flj_source_mgr {
    const unsigned char *next_input_byte;
    size_t bytes_in_buffer;
    void (*init_source)(flj_decompress_ptr cinfo);
    flj_boolean (*fill_input_buffer)(flj_decompress_ptr cinfo);
    void (*skip_input_data)(flj_decompress_ptr cinfo, long num_bytes);
    flj_boolean (*resync_to_restart)(flj_decompress_ptr cinfo, int desired);
    void (*term_source)(flj_decompress_ptr cinfo);
};

struct flj_progress_mgr {
    void (*progress_monitor)(flj_common_ptr cinfo);
    long pass_counter;
    long pass_limit;
    int completed_passes;
    int total_passes;
};

/* The fields both kinds of libjpeg object start with. */
#define FLJ_COMMON_FIELDS            \
    struct flj_error_mgr *err;       \
    void *mem;                       \
    struct flj_progress_mgr *progress; \
    void *client_data;               \
    flj_boolean is_decompressor;     \
    int global_state

struct flj_common {
    FLJ_COMMON_FIELDS;
};

struct flj_decompress {
    FLJ_COMMON_FIELDS;
    struct flj_source_mgr *src;
    /* from the SOF marker (jpeg_read_header) */
    flj_dim image_width;
    flj_dim image_height;
    int num_components;
    int jpeg_color_space;
    /* decompression parameters (set between jpeg_read_header and jpeg_start_decompress) */
    int out_color_space;
    unsigned int scale_num, scale_denom;
    double output_gamma;
    flj_boolean buffered_image;
    flj_boolean raw_data_out;
    int dct_method;
    flj_boolean do_fancy_upsampling;
    flj_boolean do_block_smoothing;
    flj_boolean quantize_colors;
    int dither_mode;
    flj_boolean two_pass_quantize;
    int desired_number_of_colors;
    flj_boolean enable_1pass_quant;
    flj_boolean enable_external_quant;
    flj_boolean enable_2pass_quant;
    /* the output image (jpeg_calc_output_dimensions / jpeg_start_decompress) */
    flj_dim output_width;
    flj_dim output_height;
    int out_color_components;
    int output_components;
    int rec_outbuf_height;
    int actual_number_of_colors;
    unsigned char **colormap;
    flj_dim output_scanline;
    int input_scan_number;
    flj_dim input_iMCU_row;
    int output_scan_number;
    flj_dim output_iMCU_row;
    int (*coef_bits)[64];
    void *quant_tbl_ptrs[4];
    void *dc_huff_tbl_ptrs[4];
    void *ac_huff_tbl_ptrs[4];
    int data_precision;
    void *comp_info;
    flj_boolean progressive_mode;
    flj_boolean arith_code;
    unsigned char arith_dc_L[16];
    unsigned char arith_dc_U[16];
    unsigned char arith_ac_K[16];
    unsigned int restart_interval;
    flj_boolean saw_JFIF_marker;
    unsigned char JFIF_major_version;
    unsigned char JFIF_minor_version;
    unsigned char density_unit;
    unsigned short X_density;
    unsigned short Y_density;
    flj_boolean saw_Adobe_marker;
    unsigned char Adobe_transform;
    flj_boolean CCIR601_sampling;
    void *marker_list;
    int max_h_samp_factor;
    int max_v_samp_factor;
    int min_DCT_scaled_size;
    flj_dim total_iMCU_rows;
    unsigned char *sample_range_limit;
    int comps_in_scan;
    void *cur_comp_info[4];
    flj_dim MCUs_per_row;
    flj_dim MCU_rows_in_scan;
    int blocks_in_MCU;
    int MCU_membership[10];
    int Ss, Se, Ah, Al;
    int unread_marker;
    void *master;
    void *main;
    void *coef;
    void *post;
    void *inputctl;
    void *marker;
    void *entropy;
    void *idct;
    void *upsample;
    void *cconvert;
    void *cquantize;
};

/* The library functions the decoder calls (looked up with dlsym). */
typedef struct {
    void *lib;
    struct flj_error_mgr *(*std_error)(struct flj_error_mgr *err);
    void (*create_decompress)(flj_decompress_ptr cinfo, int version, size_t structsize);
    void (*destroy_decompress)(flj_decompress_ptr cinfo);
    void (*abort_decompress)(flj_decompress_ptr cinfo);
    void (*mem_src)(flj_decompress_ptr cinfo, const unsigned char *buf, unsigned long len);
    int (*read_header)(flj_decompress_ptr cinfo, flj_boolean require_image);
    void (*calc_output_dimensions)(flj_decompress_ptr cinfo);
    flj_boolean (*start_decompress)(flj_decompress_ptr cinfo);
    flj_dim (*read_scanlines)(flj_decompress_ptr cinfo, unsigned char **rows, flj_dim max_lines);
    flj_dim (*skip_scanlines)(flj_decompress_ptr cinfo, flj_dim num_lines);
    void (*crop_scanline)(flj_decompress_ptr cinfo, flj_dim *xoffset, flj_dim *width);
    void **(*read_coefficients)(flj_decompress_ptr cinfo);
} flj_api;

#endif
