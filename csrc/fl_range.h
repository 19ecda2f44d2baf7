/* One byte range of one source, and where its bytes go in the destination. */
#ifndef FL_RANGE_H
#define FL_RANGE_H

#include <stdint.h>

typedef struct {
    int32_t src;      /* index into the request's source table (paths or URLs) */
    int32_t _pad;
    int64_t offset;   /* first byte in the source */
    int64_t length;   /* bytes to read (> 0) */
    int64_t dst;      /* offset of the first byte in the destination buffer */
} fl_range;

#endif
