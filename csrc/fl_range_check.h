/* The engine's check of a range table before any backend sees it. */
#ifndef FL_RANGE_CHECK_H
#define FL_RANGE_CHECK_H

#include <stdint.h>

/* What a valid table needs: the end of the destination it writes and its bytes. */
typedef struct {
    int64_t bad_row;  /* first invalid row, or -1 */
    int64_t end_row;  /* a row with the largest dst + length (0 for an empty table) */
    int64_t end;      /* that largest dst + length: the destination must hold it */
    int64_t total;    /* sum of the lengths */
} fl_range_summary;

/* `table`: nrows rows of int64 (src, offset, length, dst), row-major. A row is invalid
 * when src is not in [0, nsources), offset < 0, length <= 0, dst < 0, or offset +
 * length or dst + length does not fit in int64. Stops at the first invalid row. */
void fl_range_check(const int64_t *table, int64_t nrows, int64_t nsources,
                    fl_range_summary *out);

#endif
