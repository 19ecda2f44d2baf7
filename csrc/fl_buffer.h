/* Aligned, zeroed, optionally pre-faulted and page-locked host memory. */
#ifndef FL_BUFFER_H
#define FL_BUFFER_H

#include <stddef.h>

#define FL_ALIGN 4096

enum { FL_PIN_NONE = 0, FL_PIN_MLOCK = 1, FL_PIN_CUDA = 2 };

/* Allocates at least `size` zeroed bytes (rounded up to FL_ALIGN), 4096-byte aligned.
 * Blocks of 2 MiB and more are mmap'ed with MADV_HUGEPAGE when `hugepages`, and
 * `prefault` faults their pages in now, in one call, so the first read does not pay
 * for page faults one by one; smaller blocks are never pre-faulted (see fl_buffer.c).
 * Returns NULL and sets *err_errno on failure. *mapped_size gets the real size. */
void *fl_buffer_alloc(size_t size, int hugepages, int prefault, size_t *mapped_size,
                      int *err_errno);
void fl_buffer_free(void *p, size_t mapped_size);

/* Page-locks [p, p+size). Tries cudaHostRegister first when a CUDA runtime is
 * loadable and `try_cuda`, then mlock. Returns FL_PIN_* actually used; on
 * FL_PIN_NONE, `why` holds the reason. */
int fl_buffer_pin(void *p, size_t size, int try_cuda, char *why, size_t why_len);
void fl_buffer_unpin(void *p, size_t size, int mode);

/* 1 when a CUDA runtime with at least one device could be loaded. */
int fl_cuda_available(void);

#endif
