/* Error reporting shared by every C kernel. C never raises: a kernel returns
 * an fl_status and fills an fl_error; the Cython bridge maps it to a Python
 * exception through the one table in fastload/errors.py. */
#ifndef FL_ERROR_H
#define FL_ERROR_H

#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>
#include <string.h>

typedef enum {
    FL_OK = 0,
    FL_E_NOT_FOUND = 1,     /* file / object / bucket missing */
    FL_E_PERMISSION = 2,    /* EACCES, HTTP 401/403, bad signature */
    FL_E_RANGE = 3,         /* range past the end of the object (size in obj_size) */
    FL_E_INVALID = 4,       /* bad argument that slipped past the bridge */
    FL_E_NOMEM = 5,
    FL_E_IO = 6,            /* other OS error (sys_errno) */
    FL_E_TIMEOUT = 7,
    FL_E_CONNECTION = 8,    /* refused, reset, DNS, TLS handshake */
    FL_E_HTTP = 9,          /* other HTTP status (http_status) */
    FL_E_SHORT = 10,        /* object ended before the range did */
    FL_E_CANCELLED = 11,
    FL_E_UNSUPPORTED = 12,  /* e.g. O_DIRECT on a filesystem without it */
    FL_E_TLS = 13,          /* certificate verification failed */
    FL_E_CORRUPT = 14,      /* encoded data that cannot be decoded (corrupt, truncated) */
    FL_E_TOO_LARGE = 15,    /* declared size above the configured limit (decompression bomb) */
    FL_E_FORMAT = 16,       /* not a format this decoder reads */
    FL_E_CHANGED = 17,      /* the object changed during a read (ETag, Last-Modified or size) */
    FL_E_NOT_REGULAR = 18,  /* a local path is no regular file (directory, FIFO, device, socket, /proc) */
} fl_status;

typedef struct {
    int code;            /* fl_status */
    int sys_errno;       /* errno when the cause was a system call, else 0 */
    long http_status;    /* HTTP status when one was received, else 0 */
    int curl_code;       /* CURLcode when libcurl failed, else 0 */
    int src_index;       /* which source (path / URL) of the request */
    int64_t offset;      /* byte range being read when it failed */
    int64_t length;
    int64_t obj_size;    /* object size when known, else -1 */
    int attempts;        /* how many tries were made (network readers) */
    char msg[256];       /* short human text, never a secret */
} fl_error;

static inline void fl_error_clear(fl_error *e) {
    memset(e, 0, sizeof(*e));
    e->src_index = -1;
    e->obj_size = -1;
}

static inline int fl_error_set(fl_error *e, int code, int sys_errno, int src_index,
                               int64_t offset, int64_t length, const char *fmt, ...) {
    e->code = code;
    e->sys_errno = sys_errno;
    e->src_index = src_index;
    e->offset = offset;
    e->length = length;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return code;
}

#endif
