#define _GNU_SOURCE
#include "fl_file_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
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
    /* Helpers: `helpers` posted up front (a large read, as many as the calling thread's
     * budget allows), `more` by the caller (thread 0) once one of its parts waited for
     * the disk (threads that wait for a device take no CPU from anyone). */
    fl_pool *pool;
    fl_pool_job pool_job, more_job;
    int helpers, more;
    int posted, more_posted;
    /* page_cache_mode auto, large parts: what the page cache holds is copied from it,
     * the rest read with O_DIRECT through dfds[src] (opened on first need; -2: refused). */
    const int *cold_direct; /* per source: 1 when its parts may go direct */
    int *dfds;
    char **maps; /* per source: its mapping for mincore, NULL until one is asked */
    int nsources;
    atomic_llong direct_parts;
    atomic_llong ahead_parts;
    int64_t *cold_cached; /* cold bytes auto has read into the page cache (see read_part_auto) */
} job_t;

/* ---- the descriptor cache --------------------------------------------------- */

/* One open file: valid while stat(path) shows the same device, inode, size, mtime. */
typedef struct {
    char *path;
    uint64_t hash;
    int direct;
    int fd;
    dev_t dev;
    ino_t ino;
    int64_t size;
    int64_t mtime_ns;
    int advice;    /* posix_fadvise advice last given (-1: none) */
    int refs;      /* reads using it now */
    int indexed;   /* in the cache (else owned by the reads still using it) */
    uint64_t used; /* for least-recently-used eviction */
} fd_entry;

struct fl_file_reader {
    pthread_mutex_t lock;
    pthread_cond_t idle; /* active fell to 0, or a close finished */
    int active;          /* reads in flight */
    int closing;
    int max_open;
    fd_entry **slots; /* open addressing, linear probing; nslots a power of two */
    int nslots, count;
    uint64_t clock;
    fl_pool *pool;
    unsigned gen;
    int64_t reads, parts, bytes, inline_reads, inline_starts, opens, reopens, hits,
        direct_parts, ahead_parts, cold_cached; /* atomics */
};

static uint64_t path_hash(const char *p, int direct) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)direct;
    for (; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int same_file(const fd_entry *e, const struct stat *st) {
    return e->dev == st->st_dev && e->ino == st->st_ino && e->size == (int64_t)st->st_size &&
           e->mtime_ns == mtime_ns(st);
}

/* The lock is held for every index operation below. */
static int index_find(fl_file_reader *r, const char *path, uint64_t h, int direct) {
    if (!r->nslots) return -1;
    int mask = r->nslots - 1;
    for (int i = (int)(h & (uint64_t)mask);; i = (i + 1) & mask) {
        fd_entry *e = r->slots[i];
        if (!e) return -1;
        if (e->hash == h && e->direct == direct && strcmp(e->path, path) == 0) return i;
    }
}

static void index_insert(fl_file_reader *r, fd_entry *e) {
    int mask = r->nslots - 1;
    int i = (int)(e->hash & (uint64_t)mask);
    while (r->slots[i]) i = (i + 1) & mask;
    r->slots[i] = e;
    e->indexed = 1;
    r->count++;
}

/* Backward-shift deletion keeps every probe sequence unbroken. */
static void index_remove_at(fl_file_reader *r, int i) {
    int mask = r->nslots - 1;
    r->slots[i]->indexed = 0;
    r->slots[i] = NULL;
    r->count--;
    for (int j = (i + 1) & mask; r->slots[j]; j = (j + 1) & mask) {
        int home = (int)(r->slots[j]->hash & (uint64_t)mask);
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays) continue;
        r->slots[i] = r->slots[j];
        r->slots[j] = NULL;
        i = j;
    }
}

static void entry_free(fd_entry *e) {
    close(e->fd);
    free(e->path);
    free(e);
}

static void entry_unref(fd_entry *e) {
    if (--e->refs == 0 && !e->indexed) entry_free(e);
}

static void index_detach(fl_file_reader *r, fd_entry *e) {
    if (!e->indexed) return;
    int i = index_find(r, e->path, e->hash, e->direct);
    if (i >= 0 && r->slots[i] == e) index_remove_at(r, i);
}

/* Room for one more: close the least recently used descriptor no read is using. */
static int index_make_room(fl_file_reader *r) {
    if (r->count < r->max_open) return 1;
    int victim = -1;
    for (int i = 0; i < r->nslots; i++) {
        fd_entry *e = r->slots[i];
        if (e && e->refs == 0 && (victim < 0 || e->used < r->slots[victim]->used)) victim = i;
    }
    if (victim < 0) return 0;
    fd_entry *e = r->slots[victim];
    index_remove_at(r, victim);
    entry_free(e);
    return 1;
}

static void index_clear(fl_file_reader *r) {
    for (int i = 0; i < r->nslots; i++) {
        fd_entry *e = r->slots[i];
        if (!e) continue;
        r->slots[i] = NULL;
        e->indexed = 0;
        if (e->refs == 0) entry_free(e);
    }
    r->count = 0;
}

static pthread_once_t reader_atfork_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t reader_reset_lock = PTHREAD_MUTEX_INITIALIZER;

static void reader_after_fork_in_child(void) { pthread_mutex_init(&reader_reset_lock, NULL); }
static void reader_register_atfork(void) {
    pthread_atfork(NULL, NULL, reader_after_fork_in_child);
}

/* In a child after fork: reads in flight and lock holders stayed in the parent. The
 * inherited descriptors are the child's own copies: close them and start over. */
static void reader_reset_if_forked(fl_file_reader *r) {
    unsigned gen = fl_fork_generation();
    if (__atomic_load_n(&r->gen, __ATOMIC_ACQUIRE) == gen) return;
    pthread_mutex_lock(&reader_reset_lock);
    if (r->gen != gen) {
        pthread_mutex_init(&r->lock, NULL);
        pthread_cond_init(&r->idle, NULL);
        r->active = 0;
        r->closing = 0;
        for (int i = 0; i < r->nslots; i++) {
            fd_entry *e = r->slots[i];
            if (!e) continue;
            r->slots[i] = NULL;
            entry_free(e);
        }
        r->count = 0;
        __atomic_store_n(&r->gen, gen, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&reader_reset_lock);
}

fl_file_reader *fl_file_reader_new(int max_open) {
    pthread_once(&reader_atfork_once, reader_register_atfork);
    fl_file_reader *r = calloc(1, sizeof(fl_file_reader));
    if (!r) return NULL;
    r->max_open = max_open > 0 ? max_open : 0;
    if (r->max_open) {
        int n = 8;
        while (n < 2 * r->max_open) n *= 2;
        r->slots = calloc((size_t)n, sizeof(fd_entry *));
        r->nslots = n;
    }
    r->pool = fl_pool_new();
    if ((r->max_open && !r->slots) || !r->pool) {
        free(r->slots);
        fl_pool_free(r->pool);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->idle, NULL);
    r->gen = fl_fork_generation();
    return r;
}

void fl_file_reader_close(fl_file_reader *r) {
    if (!r) return;
    reader_reset_if_forked(r);
    pthread_mutex_lock(&r->lock);
    while (r->closing) pthread_cond_wait(&r->idle, &r->lock);
    r->closing = 1;
    while (r->active > 0) pthread_cond_wait(&r->idle, &r->lock);
    index_clear(r);
    fl_pool_stop(r->pool); /* no read is running: its threads are idle */
    r->closing = 0;
    pthread_cond_broadcast(&r->idle);
    pthread_mutex_unlock(&r->lock);
}

void fl_file_reader_free(fl_file_reader *r) {
    if (!r) return;
    fl_file_reader_close(r);
    fl_pool_free(r->pool);
    free(r->slots);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->idle);
    free(r);
}

static int64_t stat_load(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static void stat_add(int64_t *p, int64_t v) { __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }

void fl_file_reader_stats(fl_file_reader *r, fl_file_stats *out) {
    memset(out, 0, sizeof(*out));
    if (!r) return;
    reader_reset_if_forked(r);
    out->reads = stat_load(&r->reads);
    out->parts = stat_load(&r->parts);
    out->bytes = stat_load(&r->bytes);
    out->inline_reads = stat_load(&r->inline_reads);
    out->inline_starts = stat_load(&r->inline_starts);
    out->opens = stat_load(&r->opens);
    out->reopens = stat_load(&r->reopens);
    out->hits = stat_load(&r->hits);
    out->direct_parts = stat_load(&r->direct_parts);
    out->ahead_parts = stat_load(&r->ahead_parts);
    pthread_mutex_lock(&r->lock);
    out->open_files = r->count;
    pthread_mutex_unlock(&r->lock);
    out->threads = fl_pool_threads(r->pool);
}

/* ---- reading ------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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
 * bounce buffer) and keep the exact bytes asked for. `fallback`: a file system that
 * refuses the O_DIRECT read (EINVAL) gets a buffered one instead of an error. */
static int read_part_direct_fd(job_t *j, const part_t *p, int fd, char *bounce, int fallback) {
    int64_t start = p->offset & ~(int64_t)(FL_ALIGN - 1);
    int64_t end = (p->offset + p->length + FL_ALIGN - 1) & ~(int64_t)(FL_ALIGN - 1);
    char *target = j->dst + p->dst;
    int in_place = start == p->offset && end == p->offset + p->length &&
                   ((uintptr_t)target % FL_ALIGN) == 0;
    char *buf = in_place ? target : bounce;
    int64_t n = pread_full(fd, buf, end - start, start);
    if (n == -EINVAL && fallback) return read_part_buffered(j, p);
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

static int read_part_direct(job_t *j, const part_t *p, char *bounce) {
    return read_part_direct_fd(j, p, j->fds[p->src], bounce, 0);
}

/* The O_DIRECT descriptor of a source, opened by the first thread that needs it;
 * -1 when the file system refuses O_DIRECT (the part is then read buffered). */
static int direct_fd(job_t *j, int src) {
    int fd = __atomic_load_n(&j->dfds[src], __ATOMIC_ACQUIRE);
    if (fd != -1) return fd >= 0 ? fd : -1;
    int mine = open(j->paths[src], O_RDONLY | O_CLOEXEC | O_DIRECT);
    int want = mine >= 0 ? mine : -2, expected = -1;
    if (!__atomic_compare_exchange_n(&j->dfds[src], &expected, want, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        if (mine >= 0) close(mine); /* another thread opened it first */
        return expected >= 0 ? expected : -1;
    }
    return mine >= 0 ? mine : -1;
}

#define FL_RESIDENT_SAMPLES 16

/* A mapping of the whole of a source, never touched, for mincore (made by the first
 * part that asks, unmapped at the end of the read); MAP_FAILED when it cannot be. */
static char *source_map(job_t *j, int src) {
    char *m = __atomic_load_n(&j->maps[src], __ATOMIC_ACQUIRE);
    if (m) return m;
    char *mine = j->sizes[src] > 0 ? mmap(NULL, (size_t)j->sizes[src], PROT_READ, MAP_SHARED,
                                          j->fds[src], 0)
                                   : MAP_FAILED;
    char *expected = NULL;
    if (!__atomic_compare_exchange_n(&j->maps[src], &expected, mine, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        if (mine != MAP_FAILED) munmap(mine, (size_t)j->sizes[src]);
        return expected;
    }
    return mine;
}

/* Of FL_RESIDENT_SAMPLES pages spread over part p, how many are in the page cache
 * (mincore: no I/O); -1 when the file cannot be mapped. Sampled, over one mapping per
 * source and read: a mapping per part, or every page, cost ~20% of a warm read. */
static int resident_samples(job_t *j, const part_t *p) {
    char *m = source_map(j, p->src);
    if (m == MAP_FAILED) return -1;
    int64_t first = p->offset / FL_ALIGN;
    int64_t npages = (p->offset + p->length + FL_ALIGN - 1) / FL_ALIGN - first;
    int in = 0;
    for (int k = 0; k < FL_RESIDENT_SAMPLES; k++) {
        unsigned char v = 0;
        int64_t page = first + npages * k / FL_RESIDENT_SAMPLES;
        if (mincore(m + page * FL_ALIGN, FL_ALIGN, &v) != 0) return -1;
        in += v & 1;
    }
    return in;
}

/* Cold bytes read into the page cache by reads without a reader (see read_part_auto). */
static int64_t process_cold_cached;

/* Cold large reads (page_cache_mode auto): plain buffered reads of several threads at
 * once defeat the kernel's read-ahead (each thread's part is a new stream): measured
 * cold on this VM, 4 threads ~1.0 GB/s, one sequential reader ~1.5 GB/s, O_DIRECT with
 * 4 parts in flight 2.7-3.1 GB/s with almost no CPU. Asking for each part ahead
 * (WILLNEED) before reading it gives the device the same depth while the bytes enter
 * the page cache, so a source that fits there (cache_fit) is read that way and the next
 * epoch copies it from memory; larger sources go O_DIRECT (they would only evict each
 * other). A part whose pages are mostly cached is copied from there. (A RWF_NOWAIT
 * probe would not do: on a miss it starts read-ahead before saying EAGAIN.) */
static int read_part_auto(job_t *j, const part_t *p, char **bounce, size_t *bounce_mapped) {
    int in = resident_samples(j, p);
    if (in < 0 || 2 * in >= FL_RESIDENT_SAMPLES) return read_part_buffered(j, p);
    /* The page cache keeps the first cache_fit cold bytes this reader meets (a dataset
     * of many files that fit one by one, but not all together, must not evict itself
     * every epoch): past that budget, and for any file larger than it, O_DIRECT. */
    int64_t fit = j->opts->cache_fit;
    if (j->sizes[p->src] <= fit) {
        int64_t before = __atomic_fetch_add(j->cold_cached, p->length, __ATOMIC_RELAXED);
        if (before + p->length <= fit) {
            (void)posix_fadvise(j->fds[p->src], p->offset, p->length, POSIX_FADV_WILLNEED);
            atomic_fetch_add(&j->ahead_parts, 1);
            return read_part_buffered(j, p);
        }
        __atomic_fetch_sub(j->cold_cached, p->length, __ATOMIC_RELAXED);
    }
    int dfd = direct_fd(j, p->src);
    if (dfd < 0) return read_part_buffered(j, p);
    if (!*bounce) {
        int e = 0;
        *bounce = fl_buffer_alloc((size_t)j->bounce_size, 0, 0, bounce_mapped, &e);
        if (!*bounce) {
            job_fail(j, FL_E_NOMEM, e, p, "no memory for the O_DIRECT bounce buffer");
            return -1;
        }
    }
    atomic_fetch_add(&j->direct_parts, 1);
    return read_part_direct_fd(j, p, dfd, *bounce, 1);
}

/* A part slower than a page-cache copy (20 us + 1 ns per byte, i.e. 1 GB/s) waited
 * for the device: more threads in flight will help. */
static int part_waited(int64_t ns, int64_t length) { return ns > 20000 + length; }

static void worker(void *ctx, int tid) {
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
        int watch = tid == 0 && !j->more_posted && j->more > 0 && i + 1 < j->nparts;
        int64_t t0 = watch ? now_ns() : 0;
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
        } else if (j->cold_direct && j->cold_direct[p->src] && p->length >= FL_DIRECT_MIN_PART) {
            if (read_part_auto(j, p, &bounce, &bounce_mapped) != 0) break;
        } else if (read_part_buffered(j, p) != 0) {
            break;
        }
        if (j->opts->cache_mode == FL_CACHE_DONT_NEED)
            posix_fadvise(j->fds[p->src], p->offset, p->length, POSIX_FADV_DONTNEED);
        if (watch && part_waited(now_ns() - t0, p->length)) {
            fl_pool_post(j->pool, &j->more_job, worker, j, j->more, 0);
            j->more_posted = 1;
        }
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

/* One source of one read: the descriptor it reads with and where that came from. */
typedef struct {
    fd_entry *entry; /* cached descriptor in use (a reference held) */
    fd_entry *stale; /* cached descriptor of a file that changed: dropped in phase 3 */
    int fd;
    int owned; /* fd opened for this read only: closed after it */
    struct stat st;
} source_t;

static int open_source(const char *path, const fl_file_opts *opts, source_t *s, int index,
                       fl_error *err) {
    /* Only regular files: a FIFO would block the open forever, a device or /proc file
     * reads as size 0. Checked before the open, and again on what was opened. */
    struct stat pre;
    if (stat(path, &pre) == 0 && not_regular(&pre, NULL, index, err)) return err->code;
    /* O_NONBLOCK: a FIFO swapped in after the stat still cannot block the open */
    int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (opts->direct ? O_DIRECT : 0);
    s->fd = open(path, flags);
    if (s->fd < 0) {
        int e = errno;
        return fl_error_set(err,
                            e == EINVAL && opts->direct ? FL_E_UNSUPPORTED : status_for_errno(e),
                            e, index, 0, 0, "cannot open");
    }
    s->owned = 1;
    if (fstat(s->fd, &s->st) != 0) {
        int e = errno;
        return fl_error_set(err, FL_E_IO, e, index, 0, 0, "cannot stat");
    }
    struct statfs fs;
    if (not_regular(&s->st, fstatfs(s->fd, &fs) == 0 ? &fs : NULL, index, err)) return err->code;
    return FL_OK;
}

/* Descriptors for every source a read touches (counts[s] > 0): cached ones that still
 * name the same file, else newly opened ones, cached when there is room. */
static int acquire_sources(fl_file_reader *r, const char *const *paths, int npaths,
                           const int64_t *counts, const int64_t *totals,
                           const fl_file_opts *opts, source_t *src, fl_error *err) {
    int cache = r && r->max_open > 0;
    uint64_t *hashes = NULL;
    if (cache) {
        hashes = malloc(sizeof(uint64_t) * (size_t)npaths);
        if (!hashes) cache = 0;
    }
    if (cache) { /* 1: take the cached entries */
        pthread_mutex_lock(&r->lock);
        for (int s = 0; s < npaths; s++) {
            if (!counts[s]) continue;
            hashes[s] = path_hash(paths[s], opts->direct);
            int i = index_find(r, paths[s], hashes[s], opts->direct);
            if (i < 0) continue;
            src[s].entry = r->slots[i];
            src[s].entry->refs++;
        }
        pthread_mutex_unlock(&r->lock);
    }
    int rc = FL_OK;
    int64_t hits = 0, opens = 0, reopens = 0;
    for (int s = 0; s < npaths && rc == FL_OK; s++) { /* 2: check them, open the others */
        if (!counts[s]) continue;
        fd_entry *e = src[s].entry;
        if (e) {
            if (stat(paths[s], &src[s].st) != 0) { /* gone: drop the descriptor (its space) */
                int en = errno;
                src[s].stale = e;
                src[s].entry = NULL;
                rc = fl_error_set(err, status_for_errno(en), en, s, 0, 0, "cannot open");
                break;
            }
            if (same_file(e, &src[s].st)) {
                src[s].fd = e->fd;
                hits++;
                continue;
            }
            src[s].stale = e;
            src[s].entry = NULL;
            reopens++;
        }
        rc = open_source(paths[s], opts, &src[s], s, err);
        opens++;
    }
    if (r) {
        stat_add(&r->hits, hits);
        stat_add(&r->opens, opens);
        stat_add(&r->reopens, reopens);
    }
    if (cache) { /* 3: drop changed files, cache the new descriptors, give advice */
        pthread_mutex_lock(&r->lock);
        for (int s = 0; s < npaths; s++) {
            source_t *x = &src[s];
            if (x->stale) {
                index_detach(r, x->stale);
                entry_unref(x->stale);
                x->stale = NULL;
            }
            if (!x->owned || rc != FL_OK || index_find(r, paths[s], hashes[s], opts->direct) >= 0 ||
                !index_make_room(r))
                continue; /* kept for this read only */
            fd_entry *e = calloc(1, sizeof(fd_entry));
            char *p = e ? strdup(paths[s]) : NULL;
            if (!p) {
                free(e);
                continue;
            }
            *e = (fd_entry){.path = p, .hash = hashes[s], .direct = opts->direct, .fd = x->fd,
                            .dev = x->st.st_dev, .ino = x->st.st_ino, .size = (int64_t)x->st.st_size,
                            .mtime_ns = mtime_ns(&x->st), .advice = -1, .refs = 1};
            index_insert(r, e);
            x->entry = e;
            x->owned = 0;
        }
        if (rc == FL_OK) {
            uint64_t now = ++r->clock;
            for (int s = 0; s < npaths; s++) {
                fd_entry *e = src[s].entry;
                if (!counts[s] || !e) continue;
                e->used = now;
                int advice = advice_for(opts->cache_mode, counts[s], totals[s], e->size);
                if (e->advice != advice) posix_fadvise(e->fd, 0, 0, advice);
                e->advice = advice;
            }
        }
        pthread_mutex_unlock(&r->lock);
    }
    free(hashes);
    if (rc == FL_OK)
        for (int s = 0; s < npaths; s++)
            if (counts[s] && src[s].owned)
                posix_fadvise(src[s].fd, 0, 0,
                              advice_for(opts->cache_mode, counts[s], totals[s],
                                         (int64_t)src[s].st.st_size));
    return rc;
}

static void release_sources(fl_file_reader *r, int npaths, source_t *src) {
    int any = 0;
    for (int s = 0; s < npaths; s++) any |= src[s].entry != NULL || src[s].stale != NULL;
    if (any) {
        pthread_mutex_lock(&r->lock);
        for (int s = 0; s < npaths; s++) {
            if (src[s].stale) entry_unref(src[s].stale);
            if (src[s].entry) entry_unref(src[s].entry);
        }
        pthread_mutex_unlock(&r->lock);
    }
    for (int s = 0; s < npaths; s++)
        if (src[s].owned) close(src[s].fd);
}

static void reader_enter(fl_file_reader *r) {
    reader_reset_if_forked(r);
    pthread_mutex_lock(&r->lock);
    while (r->closing) pthread_cond_wait(&r->idle, &r->lock);
    r->active++;
    pthread_mutex_unlock(&r->lock);
}

static void reader_leave(fl_file_reader *r) {
    pthread_mutex_lock(&r->lock);
    if (--r->active == 0) pthread_cond_broadcast(&r->idle);
    pthread_mutex_unlock(&r->lock);
}

int fl_file_read(fl_file_reader *reader, const char *const *paths, int npaths,
                 const fl_range *ranges, int64_t nranges, char *dst, int64_t dst_len,
                 const fl_file_opts *opts, fl_error *err, int64_t *nparts_out) {
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
    /* The per-source arrays in one zeroed block (one allocation, not eight: a small
     * read's fixed cost counts), the widest members first so that each stays aligned. */
    size_t n = (size_t)npaths;
    char *block = calloc(n, sizeof(source_t) + 3 * sizeof(int64_t) + sizeof(char *) +
                                3 * sizeof(int));
    source_t *src = (source_t *)block;
    int64_t *sizes = (int64_t *)(block + n * sizeof(source_t));
    int64_t *totals = sizes + n;
    int64_t *counts = totals + n;
    char **maps = (char **)(counts + n);
    int *fds = (int *)(maps + n);
    int *cold = fds + n;
    int *dfds = cold + n;
    part_t *parts = NULL;
    int entered = 0;
    if (!block) {
        rc = fl_error_set(err, FL_E_NOMEM, ENOMEM, -1, 0, 0, "out of memory");
        goto out_free;
    }
    for (int s = 0; s < npaths; s++) dfds[s] = -1;

    /* Check every range and count parts before any I/O. */
    int64_t nparts = 0, longest = 0, total = 0;
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
        total += r->length;
    }
    if (nranges == 0) goto out_free;

    if (reader) {
        reader_enter(reader);
        entered = 1;
    }
    rc = acquire_sources(reader, paths, npaths, counts, totals, opts, src, err);
    if (rc != FL_OK) goto out_release;
    for (int s = 0; s < npaths; s++) {
        fds[s] = src[s].fd;
        sizes[s] = counts[s] ? (int64_t)src[s].st.st_size : 0;
    }
    for (int64_t i = 0; i < nranges; i++) {
        const fl_range *r = &ranges[i];
        if (r->offset > sizes[r->src] - r->length) {
            rc = fl_error_set(err, FL_E_RANGE, 0, r->src, r->offset, r->length,
                              "range ends past the end of the object");
            err->obj_size = sizes[r->src];
            goto out_release;
        }
    }

    parts = malloc(sizeof(part_t) * (size_t)nparts);
    if (!parts) {
        rc = fl_error_set(err, FL_E_NOMEM, ENOMEM, -1, 0, 0, "out of memory for %lld parts",
                          (long long)nparts);
        goto out_release;
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
    int nthreads = opts->max_inflight < nparts ? opts->max_inflight : (int)nparts;
    job_t job = {
        .paths = paths, .fds = fds, .sizes = sizes, .parts = parts, .nparts = nparts,
        .dst = dst, .direct = opts->direct, .bounce_size = longest_part + 2 * FL_ALIGN,
        .opts = opts, .err = err,
        .deadline = opts->timeout_s > 0 ? started + opts->timeout_s : 0,
        .pool = reader ? reader->pool : fl_pool_global(),
        .cold_cached = reader ? &reader->cold_cached : &process_cold_cached,
    };
    /* Up to FL_INLINE_MAX_BYTES, or with a thread budget of 1, the parts start on this
     * thread alone; the others join once a part waits for the disk. */
    int up = total > FL_INLINE_MAX_BYTES ? fl_thread_budget_cap(nthreads) : 1;
    job.helpers = up - 1;
    job.more = nthreads - up;
    /* auto: a source read in a few large ranges, FL_DIRECT_MIN_READ bytes or more, may
     * have its cold parts read direct (below that, checking costs more than it saves) */
    for (int s = 0; s < npaths; s++)
        cold[s] = opts->cache_mode == FL_CACHE_AUTO && !opts->direct && counts[s] &&
                  totals[s] >= FL_DIRECT_MIN_READ &&
                  advice_for(opts->cache_mode, counts[s], totals[s], sizes[s]) ==
                      POSIX_FADV_SEQUENTIAL;
    job.cold_direct = cold;
    job.dfds = dfds;
    job.maps = maps;
    job.nsources = npaths;
    atomic_init(&job.direct_parts, 0);
    atomic_init(&job.ahead_parts, 0);
    atomic_init(&job.next, 0);
    atomic_init(&job.failed, 0);
    pthread_mutex_init(&job.err_lock, NULL);
    if (nparts_out) *nparts_out = nparts;
    if (job.helpers > 0) {
        fl_pool_post(job.pool, &job.pool_job, worker, &job, job.helpers, 0);
        job.posted = 1;
    }
    worker(&job, 0);
    int ran = 1;
    if (job.posted) ran += fl_pool_wait(job.pool, &job.pool_job) - 1;
    if (job.more_posted) ran += fl_pool_wait(job.pool, &job.more_job) - 1;
    pthread_mutex_destroy(&job.err_lock);
    rc = err->code;
    for (int s = 0; s < npaths; s++) {
        if (dfds[s] >= 0) close(dfds[s]);
        if (maps[s] && maps[s] != MAP_FAILED) munmap(maps[s], (size_t)sizes[s]);
    }
    if (reader) {
        stat_add(&reader->direct_parts, atomic_load(&job.direct_parts));
        stat_add(&reader->ahead_parts, atomic_load(&job.ahead_parts));
        stat_add(&reader->reads, 1);
        stat_add(&reader->parts, nparts);
        if (rc == FL_OK) stat_add(&reader->bytes, total);
        if (ran == 1) stat_add(&reader->inline_reads, 1);
        if (!job.posted) stat_add(&reader->inline_starts, 1);
    }

out_release:
    release_sources(reader, npaths, src);
    if (entered) reader_leave(reader);
out_free:
    free(parts);
    free(block);
    return rc;
}
