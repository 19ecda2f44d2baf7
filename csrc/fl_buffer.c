#define _GNU_SOURCE
#include "fl_buffer.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Three sizes of block, each allocated the way that costs least for it:
 * - below FL_HEAP_MAX, from the heap, zeroed (a few pages the heap mostly has faulted);
 * - up to FL_MMAP_THRESHOLD, a private mapping left unfaulted: its pages are zero
 *   already, and faulting them now would only move the cost the first read pays
 *   anyway (touching 1 MiB page by page took ~0.7 ms of a 4 KiB-to-1 MiB read);
 * - from FL_MMAP_THRESHOLD, a mapping rounded to huge pages, faulted in one call
 *   when `prefault` (MADV_POPULATE_WRITE is several times faster than faulting page
 *   by page inside pread or a copy), returned to the OS on free. */
#define FL_HEAP_MAX (64u << 10)
#define FL_MMAP_THRESHOLD (2u << 20)

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

void *fl_buffer_alloc(size_t size, int hugepages, int prefault, size_t *mapped_size,
                      int *err_errno) {
    if (size > SIZE_MAX - FL_MMAP_THRESHOLD) { /* rounding up would wrap to a tiny block */
        *err_errno = ENOMEM;
        return NULL;
    }
    size_t n = round_up(size ? size : 1, FL_ALIGN);
    void *p = NULL;
    if (n < FL_HEAP_MAX) {
        int rc = posix_memalign(&p, FL_ALIGN, n);
        if (rc != 0) {
            *err_errno = rc;
            return NULL;
        }
        memset(p, 0, n);
        *mapped_size = n;
        return p;
    }
    int large = n >= FL_MMAP_THRESHOLD;
    if (large) n = round_up(n, FL_MMAP_THRESHOLD);
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        *err_errno = errno;
        return NULL;
    }
    if (large && hugepages) madvise(p, n, MADV_HUGEPAGE);
    if (large && prefault && madvise(p, n, MADV_POPULATE_WRITE) != 0) {
        /* Older kernels: touch one byte per page. */
        volatile char *c = (volatile char *)p;
        for (size_t i = 0; i < n; i += FL_ALIGN) c[i] = 0;
    }
    *mapped_size = n;
    return p;
}

void fl_buffer_free(void *p, size_t mapped_size) {
    if (!p) return;
    if (mapped_size < FL_HEAP_MAX)
        free(p);
    else
        munmap(p, mapped_size);
}

/* ---- CUDA runtime, bound at run time so the build needs no CUDA. ---- */

typedef int (*cuda_host_register_fn)(void *, size_t, unsigned int);
typedef int (*cuda_host_unregister_fn)(void *);
typedef int (*cuda_get_device_count_fn)(int *);

static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;
static cuda_host_register_fn cuda_host_register;
static cuda_host_unregister_fn cuda_host_unregister;
static int cuda_devices;

static void cuda_load(void) {
    static const char *names[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12",
                                  "libcudart.so.11.0", NULL};
    for (int i = 0; names[i]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (!h) continue;
        cuda_get_device_count_fn count = (cuda_get_device_count_fn)dlsym(h, "cudaGetDeviceCount");
        cuda_host_register = (cuda_host_register_fn)dlsym(h, "cudaHostRegister");
        cuda_host_unregister = (cuda_host_unregister_fn)dlsym(h, "cudaHostUnregister");
        if (count && cuda_host_register && cuda_host_unregister && count(&cuda_devices) == 0 &&
            cuda_devices > 0)
            return;
        cuda_host_register = NULL;
        cuda_host_unregister = NULL;
        cuda_devices = 0;
    }
}

int fl_cuda_available(void) {
    pthread_once(&cuda_once, cuda_load);
    return cuda_devices > 0;
}

int fl_buffer_pin(void *p, size_t size, int try_cuda, char *why, size_t why_len) {
    why[0] = 0;
    if (try_cuda && fl_cuda_available()) {
        /* cudaHostRegisterPortable = 1: pinned for every CUDA context. */
        int rc = cuda_host_register(p, size, 1);
        if (rc == 0) return FL_PIN_CUDA;
        snprintf(why, why_len, "cudaHostRegister failed with CUDA error %d", rc);
    }
    if (mlock(p, size) == 0) return FL_PIN_MLOCK;
    int e = errno;
    size_t used = strlen(why);
    snprintf(why + used, why_len - used, "%smlock of %zu bytes refused: %s%s", used ? "; " : "",
             size, strerror(e),
             (e == ENOMEM || e == EPERM) ? " (raise the memlock limit: ulimit -l)" : "");
    return FL_PIN_NONE;
}

void fl_buffer_unpin(void *p, size_t size, int mode) {
    if (mode == FL_PIN_CUDA && cuda_host_unregister)
        cuda_host_unregister(p);
    else if (mode == FL_PIN_MLOCK)
        munlock(p, size);
}
