/* The planner's one pass: samples' byte ranges -> a packed, coalesced range table. */
#ifndef FL_PLAN_H
#define FL_PLAN_H

#include <stdint.h>

#include "fl_error.h"

/* Sample k (of n) is `length[k]` bytes at `offset[k]` of source `src[k]` (a dataset's
 * source index, >= 0). Samples are packed into the slab in order: offsets_out[k] gets
 * where sample k starts, *nbytes the slab's size. The sources the batch touches go to
 * used_out (sorted, distinct; *nused of them) and the table (rows src, offset, length,
 * dst; *nrows of them, at most n) names them by their position in used_out. Empty
 * samples need no row; a sample that continues the previous one in the same source
 * extends its row. Every output array holds n entries (table: 4 n). Returns FL_OK, or
 * FL_E_INVALID for a negative source, offset or length, or FL_E_NOMEM. */
int fl_plan_pack(const int64_t *src, const int64_t *offset, const int64_t *length, int64_t n,
                 int64_t *offsets_out, int64_t *nbytes, int64_t *used_out, int64_t *nused,
                 int64_t *table_out, int64_t *nrows, fl_error *err);

#endif
