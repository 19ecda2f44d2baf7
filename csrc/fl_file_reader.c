#define _GNU_SOURCE
#include "fl_file_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "fl_buffer.h"
#include "fl_cancel.h"
#include "fl_parallel.h"

/* A part: one piece of one range, read by one thread in one go. */
typedef struct {
    int32_t src;
    int64_t offset;
    int64_t length;
    int64_t dst;
} part_t;

typedef struct {
    const char *const *paths;
    const int *fds;
    const int64_t *sizes;
    const part_t *parts;
    int64_t nparts;
    char *dst;
    int direct;
    int64_t bounce_size;
    const fl_file_opts *opts;
    double deadline;  /* CLOCK_MONOTONIC seconds, 0: none */
    atomic_llong next;
    atomic_int failed;
    fl_error *err;
    pthread_mutex_t err_lock;
} job_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int status_for_errno(int e) {
    switch (e) {
        case ENOENT:
        case ENOTDIR: return FL_E_NOT_FOUND;
        case EACCES:
        case EPERM: return FL_E_PERMISSION;
        case ENOMEM: return FL_E_NOMEM;
        default: return FL_E_IO;
    }
}

static void job_fail(job_t *j, int code, int sys_errno, const part_t *p, const char *what) {
    pthread_mutex_lock(&j->err_lock);
    if (!atomic_load(&j->failed)) {
        fl_error_set(j->err, code, sys_errno, p->src, p->offset, p->length, "%s", what);
        j->err->obj_size = j->sizes[p->src];
        atomic_store(&j->failed, 1);
    }
    pthread_mutex_unlock(&j->err_lock);
}

/* pread until `len` bytes arrived; EINTR and short reads continue. Returns bytes
 * read (< len only at end of file) or -errno. */
static int64_t pread_full(int fd, char *buf, int64_t len, int64_t off) {
    int64_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, (size_t)(len - got), off + got);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0) break;
        got += n;
    }
    return got;
}

static int read_part_buffered(job_t *j, const part_t *p) {
    int64_t n = pread_full(j->fds[p->src], j->dst + p->dst, p->length, p->offset);
    if (n < 0) {
        job_fail(j, status_for_errno((int)-n), (int)-n, p, "read failed");
        return -1;
    }
    if (n < p->length) {
        job_fail(j, FL_E_SHORT, 0, p, "file ended before the range did (truncated while reading?)");
        return -1;
    }
    return 0;
}

/* O_DIRECT needs block-aligned offset, length and memory: read the aligned
 * superset (into the destination itself when it is aligned, else through a
 * bounce buffer) and keep the exact bytes asked for. */
static int read_part_direct(job_t *j, const part_t *p, char *bounce) {
    int64_t start = p->offset & ~(int64_t)(FL_ALIGN - 1);
    int64_t end = (p->offset + p->length + FL_ALIGN - 1) & ~(int64_t)(FL_ALIGN - 1);
    char *target = j->dst + p->dst;
    int in_place = start == p->offset && end == p->offset + p->length &&
                   ((uintptr_t)target % FL_ALIGN) == 0;
    char *buf = in_place ? target : bounce;
    int64_t n = pread_full(j->fds[p->src], buf, end - start, start);
    if (n < 0) {
        job_fail(j, n == -EINVAL ? FL_E_UNSUPPORTED : status_for_errno((int)-n), (int)-n, p,
                 n == -EINVAL ? "O_DIRECT read refused by the filesystem" : "read failed");
        return -1;
    }
    if (n < p->offset + p->length - start) {
        job_fail(j, FL_E_SHORT, 0, p, "file ended before the range did (truncated while reading?)");
        return -1;
    }
    if (!in_place) memcpy(target, bounce + (p->offset - start), (size_t)p->length);
    return 0;
}

static void worker(void *ctx, int tid) {
    (void)tid;
    job_t *j = (job_t *)ctx;
    char *bounce = NULL;
    size_t bounce_mapped = 0;
    for (;;) {
        if (atomic_load(&j->failed)) break;
        if (fl_cancel_requested(j->opts->cancel)) {
            pthread_mutex_lock(&j->err_lock);
            if (!atomic_load(&j->failed)) {
                fl_error_set(j->err, FL_E_CANCELLED, 0, -1, 0, 0, "read cancelled");
                atomic_store(&j->failed, 1);
            }
            pthread_mutex_unlock(&j->err_lock);
            break;
        }
        int64_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->nparts) break;
        const part_t *p = &j->parts[i];
        /* A part once started runs to its end; the deadline is checked between parts. */
        if (j->deadline > 0 && now_s() > j->deadline) {
            job_fail(j, FL_E_TIMEOUT, 0, p, "read did not finish within the timeout");
            break;
        }
        if (j->direct) {
            if (!bounce) {
                int e = 0;
                bounce = fl_buffer_alloc((size_t)j->bounce_size, 0, 0, &bounce_mapped, &e);
                if (!bounce) {
                    job_fail(j, FL_E_NOMEM, e, p, "no memory for the O_DIRECT bounce buffer");
                    break;
                }
            }
            if (read_part_direct(j, p, bounce) != 0) break;
        } else if (read_part_buffered(j, p) != 0) {
            break;
        }
        if (j->opts->cache_mode == FL_CACHE_DONT_NEED)
            posix_fadvise(j->fds[p->src], p->offset, p->length, POSIX_FADV_DONTNEED);
    }
    fl_buffer_free(bounce, bounce_mapped);
}

/* Only regular files have a size that says what a read returns: a FIFO or device
 * would block or never end, a /proc or /sys file reports 0 or 4096 bytes whatever it
 * holds. Refused from stat alone, before an open that could block or have effects. */
static int not_regular(const struct stat *st, const struct statfs *fs, int src, fl_error *err) {
    const char *what = NULL;
    if (S_ISDIR(st->st_mode)) what = "is a directory";
    else if (S_ISFIFO(st->st_mode)) what = "is a FIFO (named pipe), not a regular file";
    else if (S_ISSOCK(st->st_mode)) what = "is a socket, not a regular file";
    else if (S_ISCHR(st->st_mode)) what = "is a character device, not a regular file";
    else if (S_ISBLK(st->st_mode)) what = "is a block device, not a regular file";
    else if (!S_ISREG(st->st_mode)) what = "is not a regular file";
    else if (fs) {
        switch ((unsigned long)fs->f_type) {
            case 0x9fa0:      /* proc */
            case 0x62656572:  /* sysfs */
            case 0x64626720:  /* debugfs */
            case 0x74726163:  /* tracefs */
            case 0x73636673:  /* securityfs */
            case 0x27e0eb:    /* cgroup */
            case 0x63677270:  /* cgroup2 */
            case 0x62656570:  /* configfs */
            case 0xcafe4a11:  /* bpf */
                what = "is a pseudo-file (/proc, /sys, ...) whose size is not its content";
        }
    }
    if (!what) return 0;
    fl_error_set(err, FL_E_NOT_REGULAR, S_ISDIR(st->st_mode) ? EISDIR : 0, src, 0, 0, "%s", what);
    return -1;
}

int64_t fl_file_size(const char *path, fl_error *err) {
    struct stat st;
    struct statfs fs;
    if (stat(path, &st) != 0) {
        int e = errno;
        fl_error_set(err, status_for_errno(e), e, 0, 0, 0, "cannot stat");
        return -1;
    }
    if (not_regular(&st, statfs(path, &fs) == 0 ? &fs : NULL, 0, err)) return -1;
    return (int64_t)st.st_size;
}

static int advice_for(int mode, int64_t nranges, int64_t total, int64_t size) {
    switch (mode) {
        case FL_CACHE_SEQUENTIAL: return POSIX_FADV_SEQUENTIAL;
        case FL_CACHE_RANDOM: return POSIX_FADV_RANDOM;
        case FL_CACHE_NORMAL: return POSIX_FADV_NORMAL;
        case FL_CACHE_DONT_NEED: return POSIX_FADV_NORMAL; /* dropped after each part */
        default:
            /* auto: a few large ranges read ahead; many small scattered ones do not. */
            return (total >= size / 2 || total / (nranges ? nranges : 1) >= (1 << 20))
                       ? POSIX_FADV_SEQUENTIAL
                       : POSIX_FADV_RANDOM;
    }
}

int fl_file_read(const char *const *paths, int npaths, const fl_range *ranges, int64_t nranges,
                 char *dst, int64_t dst_len, const fl_file_opts *opts, fl_error *err,
                 int64_t *nparts_out) {
    double started = now_s();
    fl_error_clear(err);
    if (nparts_out) *nparts_out = 0;
    if (opts->part_size < FL_ALIGN)
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "part_size=%lld must be >= %d",
                            (long long)opts->part_size, FL_ALIGN);
    if (opts->max_inflight < 1)
        return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "max_inflight_parts=%d must be >= 1",
                            opts->max_inflight);
    if (npaths < 1) return fl_error_set(err, FL_E_INVALID, 0, -1, 0, 0, "no source files");
    int rc = FL_OK;
    int *fds = malloc(sizeof(int) * (size_t)npaths);
    int64_t *sizes = malloc(sizeof(int64_t) * (size_t)npaths);
    int64_t *totals = calloc((size_t)npaths, sizeof(int64_t));
    int64_t *counts = calloc((size_t)npaths, sizeof(int64_t));
    part_t *parts = NULL;
    if (!fds || !sizes || !totals || !counts) {
        rc = fl_error_set(err, FL_E_NOMEM, ENOMEM, -1, 0, 0, "out of memory");
        goto out_free;
    }
    for (int s = 0; s < npaths; s++) fds[s] = -1;

    /* Check every range and count parts before any I/O. */
    int64_t nparts = 0, longest = 0;
    for (int64_t i = 0; i < nranges; i++) {
        const fl_range *r = &ranges[i];
        /* dst_len - dst, not dst + length: the sum of int64 extremes overflows. */
        if (r->src < 0 || r->src >= npaths || r->offset < 0 || r->length <= 0 || r->dst < 0 ||
            r->length > dst_len - r->dst) {
            rc = fl_error_set(err, FL_E_INVALID, 0, r->src, r->offset, r->length,
                              "range %lld is invalid or does not fit the buffer", (long long)i);
            goto out_free;
        }
        nparts += r->length / opts->part_size + (r->length % opts->part_size != 0);
        if (r->length > longest) longest = r->length;
        totals[r->src] += r->length;
        counts[r->src]++;
    }

    /* O_NONBLOCK: a FIFO swapped in after the stat still cannot block the open */
    int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (opts->direct ? O_DIRECT : 0);
    for (int s = 0; s < npaths; s++) {
        if (!counts[s]) continue;
        struct stat pre;
        if (stat(paths[s], &pre) == 0 && not_regular(&pre, NULL, s, err)) {
            rc = err->code;
            goto out_close;
        }
        fds[s] = open(paths[s], flags);
        if (fds[s] < 0) {
            int e = errno;
            rc = fl_error_set(err, e == EINVAL && opts->direct ? FL_E_UNSUPPORTED : status_for_errno(e),
                              e, s, 0, 0, "cannot open");
            goto out_close;
        }
        struct stat st;
        struct statfs fs;
        if (fstat(fds[s], &st) != 0) {
            int e = errno;
            rc = fl_error_set(err, FL_E_IO, e, s, 0, 0, "cannot stat");
            goto out_close;
        }
        if (not_regular(&st, fstatfs(fds[s], &fs) == 0 ? &fs : NULL, s, err)) {
            rc = err->code;
            goto out_close;
        }
        sizes[s] = (int64_t)st.st_size;
        posix_fadvise(fds[s], 0, 0, advice_for(opts->cache_mode, counts[s], totals[s], sizes[s]));
    }
    for (int64_t i = 0; i < nranges; i++) {
        const fl_range *r = &ranges[i];
        if (r->offset > sizes[r->src] - r->length) {
            rc = fl_error_set(err, FL_E_RANGE, 0, r->src, r->offset, r->length,
                              "range ends past the end of the object");
            err->obj_size = sizes[r->src];
            goto out_close;
        }
    }

    parts = malloc(sizeof(part_t) * (size_t)(nparts ? nparts : 1));
    if (!parts) {
        rc = fl_error_set(err, FL_E_NOMEM, ENOMEM, -1, 0, 0, "out of memory for %lld parts",
                          (long long)nparts);
        goto out_close;
    }
    int64_t k = 0;
    for (int64_t i = 0; i < nranges; i++) {
        const fl_range *r = &ranges[i];
        for (int64_t off = 0; off < r->length; off += opts->part_size) {
            int64_t len = r->length - off < opts->part_size ? r->length - off : opts->part_size;
            parts[k++] = (part_t){r->src, r->offset + off, len, r->dst + off};
        }
    }

    /* The bounce buffer holds the aligned superset of the longest part: sized by
     * the parts really read, so a huge part_size does not ask for huge memory. */
    int64_t longest_part = opts->part_size < longest ? opts->part_size : longest;
    job_t job = {
        .paths = paths, .fds = fds, .sizes = sizes, .parts = parts, .nparts = nparts,
        .dst = dst, .direct = opts->direct, .bounce_size = longest_part + 2 * FL_ALIGN,
        .opts = opts, .err = err,
        .deadline = opts->timeout_s > 0 ? started + opts->timeout_s : 0,
    };
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    pthread_mutex_init(&job.err_lock, NULL);
    if (nparts_out) *nparts_out = nparts;
    int nthreads = opts->max_inflight < nparts ? opts->max_inflight : (int)nparts;
    if (nthreads > 0) fl_parallel_run(nthreads, worker, &job);
    pthread_mutex_destroy(&job.err_lock);
    rc = err->code;

out_close:
    for (int s = 0; s < npaths; s++)
        if (fds[s] >= 0) close(fds[s]);
out_free:
    free(parts);
    free(fds);
    free(sizes);
    free(totals);
    free(counts);
    return rc;
}
