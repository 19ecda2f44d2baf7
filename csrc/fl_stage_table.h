/* The loader's always-on stage timing: one row of seconds per batch of an epoch.
 *
 * A row holds the batch's stage seconds (plan, read, decode, transform, collate, output)
 * and the consumer's (wait, step). Totals are kept as rows arrive, so the end of an
 * epoch only needs the percentiles, one selection pass per column. */
#ifndef FL_STAGE_TABLE_H
#define FL_STAGE_TABLE_H

#include <stdint.h>

#include "fl_error.h"

#define FL_STAGE_BATCH_COLUMNS 6                         /* made by the reader threads */
#define FL_STAGE_COLUMNS (FL_STAGE_BATCH_COLUMNS + 2)     /* + wait, step: the consumer's */
#define FL_STAGE_MADE 1u  /* flags: the batch's stage row is in */
#define FL_STAGE_TAKEN 2u /* the consumer's wait and step are in */

typedef struct {
    float *rows;     /* capacity x FL_STAGE_COLUMNS seconds (float: 4 bytes a cell) */
    int64_t *sizes;  /* capacity x 2: each made batch's bytes and samples */
    uint8_t *flags;  /* capacity flags, FL_STAGE_MADE | FL_STAGE_TAKEN */
    int64_t capacity;
    int64_t made, taken; /* how many rows carry each flag */
    int64_t nbytes, samples;
    double totals[FL_STAGE_COLUMNS];
} fl_stage_table;

/* An empty table with room for `capacity` batches (grows on demand). */
fl_status fl_stage_table_init(fl_stage_table *t, int64_t capacity);
void fl_stage_table_free(fl_stage_table *t);

/* Batch k's stage seconds (FL_STAGE_BATCH_COLUMNS of them), bytes and samples; a batch
 * recorded again replaces its earlier row. FL_E_INVALID for k < 0, FL_E_NOMEM when the
 * table cannot grow to hold k. */
fl_status fl_stage_table_made(fl_stage_table *t, int64_t k, const double *seconds,
                              int64_t nbytes, int64_t samples);
/* The consumer's wait for batch k and its step before asking (same errors). */
fl_status fl_stage_table_taken(fl_stage_table *t, int64_t k, double wait, double step);

/* p50 and p99 of every column over the rows that carry it (numpy's default linear
 * interpolation; 0 for a column no row carries). FL_E_NOMEM without scratch memory. */
fl_status fl_stage_table_percentiles(const fl_stage_table *t, double p50[FL_STAGE_COLUMNS],
                                     double p99[FL_STAGE_COLUMNS]);

#endif
