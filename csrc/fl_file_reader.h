/* Parallel ranged reads of local files (pread, or O_DIRECT) into one buffer. */
#ifndef FL_FILE_READER_H
#define FL_FILE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "fl_error.h"
#include "fl_range.h"

enum {
    FL_CACHE_AUTO = 0,
    FL_CACHE_SEQUENTIAL = 1,
    FL_CACHE_RANDOM = 2,
    FL_CACHE_DONT_NEED = 3,
    FL_CACHE_NORMAL = 4,
};

typedef struct {
    int64_t part_size;      /* ranges are cut into parts of at most this many bytes */
    int max_inflight;       /* native threads reading parts at once */
    int direct;             /* open with O_DIRECT */
    int cache_mode;         /* FL_CACHE_*: posix_fadvise hint */
    volatile int *cancel;   /* optional: set non-zero to stop early */
    double timeout_s;       /* > 0: fail with FL_E_TIMEOUT once the read has taken longer */
} fl_file_opts;

/* Size of a file in bytes, or -1 with err filled. */
int64_t fl_file_size(const char *path, fl_error *err);

/* Reads every range (bytes [offset, offset+length) of paths[src]) into
 * dst + range.dst, cut into parts of at most opts->part_size bytes (the one
 * place ranges are cut; *nparts, when not NULL, receives how many). Ranges must
 * lie inside their files and dst must hold them: both are checked, and a
 * violation is an error, not a crash. Returns FL_OK or an fl_status with err
 * filled (range and source of the first failure). */
int fl_file_read(const char *const *paths, int npaths, const fl_range *ranges, int64_t nranges,
                 char *dst, int64_t dst_len, const fl_file_opts *opts, fl_error *err,
                 int64_t *nparts);

#endif
