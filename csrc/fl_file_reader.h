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

/* A read of at most this many bytes in all runs on the calling thread, unless its
 * parts turn out to wait for the disk (see fl_file_read). Measured on page-cached
 * files: waking pool threads costs more than it saves below this. A larger read does
 * the same when the calling thread's budget is 1 (fl_thread_budget_set). */
#define FL_INLINE_MAX_BYTES (1 << 20)

/* page_cache_mode auto, a source read in a few large ranges of FL_DIRECT_MIN_READ
 * bytes or more in all: parts of at least FL_DIRECT_MIN_PART bytes whose pages are
 * mostly not in the page cache are cold. A cold part of a source no larger than
 * `cache_fit` is read through the page cache, the kernel first asked to read the whole
 * part ahead (POSIX_FADV_WILLNEED: the device sees every thread's part at once), so the
 * next epoch finds it cached; a cold part of a larger source is read with O_DIRECT. Smaller reads are never
 * checked: finding out costs ~25 us a source (a mapping), a third of a warm 1 MiB read. */
#define FL_DIRECT_MIN_PART (1 << 20)
#define FL_DIRECT_MIN_READ (8 << 20)

typedef struct {
    int64_t part_size;      /* ranges are cut into parts of at most this many bytes */
    int max_inflight;       /* native threads reading parts at once */
    int direct;             /* open with O_DIRECT */
    int cache_mode;         /* FL_CACHE_*: posix_fadvise hint */
    volatile int *cancel;   /* optional: set non-zero to stop early */
    double timeout_s;       /* > 0: fail with FL_E_TIMEOUT once the read has taken longer */
    int64_t cache_fit;      /* auto: cold sources up to this size stay in the page cache */
} fl_file_opts;

/* What a reader keeps between reads: its threads and a bounded cache of open
 * descriptors. Reads may share one from several threads at once. */
typedef struct fl_file_reader fl_file_reader;

typedef struct {
    int64_t reads;         /* fl_file_read calls */
    int64_t parts;         /* preads of one part each */
    int64_t bytes;         /* bytes delivered */
    int64_t inline_reads;  /* calls that ran on the calling thread only */
    int64_t inline_starts; /* calls whose parts started on the calling thread alone (small,
                              or a thread budget of 1), pool threads called in or not */
    int64_t opens;         /* open() calls (cache misses) */
    int64_t reopens;       /* of those, for a cached file that had changed */
    int64_t hits;          /* sources served by a cached descriptor */
    int64_t direct_parts;  /* cold parts read with O_DIRECT by auto */
    int64_t ahead_parts;   /* cold parts read through the page cache, read ahead, by auto */
    int64_t open_files;    /* descriptors cached now */
    int64_t threads;       /* pool threads alive now */
} fl_file_stats;

/* max_open: descriptors kept open at most (>= 0; 0 caches none). NULL when out of memory. */
fl_file_reader *fl_file_reader_new(int max_open);
/* Waits for reads in flight, joins the threads, closes the cached descriptors; the
 * reader stays usable (threads and descriptors come back on demand). */
void fl_file_reader_close(fl_file_reader *r);
void fl_file_reader_free(fl_file_reader *r);
void fl_file_reader_stats(fl_file_reader *r, fl_file_stats *out);

/* Size of a file in bytes, or -1 with err filled. */
int64_t fl_file_size(const char *path, fl_error *err);

/* Reads every range (bytes [offset, offset+length) of paths[src]) into
 * dst + range.dst, cut into parts of at most opts->part_size bytes (the one
 * place ranges are cut; *nparts, when not NULL, receives how many). Ranges must
 * lie inside their files and dst must hold them: both are checked, and a
 * violation is an error, not a crash. Returns FL_OK or an fl_status with err
 * filled (range and source of the first failure).
 *
 * `reader` (may be NULL: open and close each file, threads of a process-wide pool)
 * supplies the threads and the descriptor cache. A cached descriptor is used only
 * while stat(path) still shows the file it was opened on (device, inode, size and
 * mtime); otherwise the path is opened again. Up to FL_INLINE_MAX_BYTES in all, the
 * parts are read on the calling thread, and pool threads join only if a part waits
 * for the disk; larger reads use min(max_inflight, parts) threads from the start, or
 * as many as the calling thread's budget allows (fl_thread_budget_set), the rest
 * joining once a part waits for the disk.
 * With FL_CACHE_AUTO, a source read in a few large ranges (read-ahead advice) of
 * FL_DIRECT_MIN_READ bytes or more has each part of FL_DIRECT_MIN_PART bytes or more
 * that is mostly not in the page cache read with O_DIRECT (and not cached
 * afterwards); cached parts are copied as before. */
int fl_file_read(fl_file_reader *reader, const char *const *paths, int npaths,
                 const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                 const fl_file_opts *opts, fl_error *err, int64_t *nparts);

#endif
