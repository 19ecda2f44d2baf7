#include "fl_stage_table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

fl_status fl_stage_table_init(fl_stage_table *t, int64_t capacity) {
    memset(t, 0, sizeof(*t));
    if (capacity < 1) capacity = 1;
    t->rows = malloc((size_t)capacity * FL_STAGE_COLUMNS * sizeof(float));
    t->sizes = malloc((size_t)capacity * 2 * sizeof(int64_t));
    t->flags = calloc((size_t)capacity, 1);
    if (!t->rows || !t->sizes || !t->flags) {
        fl_stage_table_free(t);
        return FL_E_NOMEM;
    }
    t->capacity = capacity;
    return FL_OK;
}

void fl_stage_table_free(fl_stage_table *t) {
    free(t->rows);
    free(t->sizes);
    free(t->flags);
    t->rows = NULL;
    t->sizes = NULL;
    t->flags = NULL;
    t->capacity = 0;
}

/* Room for batch k: doubling, so a resumed or growing epoch pays O(1) per batch. */
static fl_status reserve(fl_stage_table *t, int64_t k) {
    if (k < 0) return FL_E_INVALID;
    if (k < t->capacity) return FL_OK;
    int64_t cap = t->capacity * 2 > k + 1 ? t->capacity * 2 : k + 1;
    float *rows = realloc(t->rows, (size_t)cap * FL_STAGE_COLUMNS * sizeof(float));
    if (!rows) return FL_E_NOMEM;
    t->rows = rows;
    int64_t *sizes = realloc(t->sizes, (size_t)cap * 2 * sizeof(int64_t));
    if (!sizes) return FL_E_NOMEM;
    t->sizes = sizes;
    uint8_t *flags = realloc(t->flags, (size_t)cap);
    if (!flags) return FL_E_NOMEM;
    memset(flags + t->capacity, 0, (size_t)(cap - t->capacity));
    t->flags = flags;
    t->capacity = cap;
    return FL_OK;
}

fl_status fl_stage_table_made(fl_stage_table *t, int64_t k, const double *seconds,
                              int64_t nbytes, int64_t samples) {
    fl_status st = reserve(t, k);
    if (st != FL_OK) return st;
    float *row = t->rows + k * FL_STAGE_COLUMNS;
    int64_t *size = t->sizes + 2 * k;
    if (t->flags[k] & FL_STAGE_MADE) { /* made again (a retried batch): replace it */
        for (int c = 0; c < FL_STAGE_BATCH_COLUMNS; c++) t->totals[c] -= row[c];
        t->made--;
        t->nbytes -= size[0];
        t->samples -= size[1];
    }
    size[0] = nbytes;
    size[1] = samples;
    for (int c = 0; c < FL_STAGE_BATCH_COLUMNS; c++) {
        row[c] = (float)seconds[c];
        t->totals[c] += seconds[c];
    }
    t->flags[k] |= FL_STAGE_MADE;
    t->made++;
    t->nbytes += nbytes;
    t->samples += samples;
    return FL_OK;
}

fl_status fl_stage_table_taken(fl_stage_table *t, int64_t k, double wait, double step) {
    fl_status st = reserve(t, k);
    if (st != FL_OK) return st;
    float *row = t->rows + k * FL_STAGE_COLUMNS + FL_STAGE_BATCH_COLUMNS;
    if (t->flags[k] & FL_STAGE_TAKEN) {
        t->totals[FL_STAGE_BATCH_COLUMNS] -= row[0];
        t->totals[FL_STAGE_BATCH_COLUMNS + 1] -= row[1];
        t->taken--;
    }
    row[0] = (float)wait;
    row[1] = (float)step;
    t->totals[FL_STAGE_BATCH_COLUMNS] += wait;
    t->totals[FL_STAGE_BATCH_COLUMNS + 1] += step;
    t->flags[k] |= FL_STAGE_TAKEN;
    t->taken++;
    return FL_OK;
}

static float median3(float x, float y, float z) {
    if (x > y) {
        float t = x;
        x = y;
        y = t;
    }
    return z < x ? x : (z > y ? y : z);
}

/* The k-th smallest of a[0..n-1] (0-based), moving it to a[k] with everything before it
 * no larger and everything after it no smaller. Quickselect whose partitions have no
 * branch on the data (a random column mispredicts half its comparisons otherwise, most of
 * an epoch summary's time): one pass puts what is below the pivot first, and when the
 * k-th is not there a second pass puts what equals it next, so ties cost no extra pass. */
static float select_kth(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float p = median3(a[lo], a[lo + (hi - lo) / 2], a[hi]);
        int64_t j = lo;
        for (int64_t i = lo; i <= hi; i++) { /* a[lo..j-1] < p <= a[j..i] */
            float x = a[i];
            a[i] = a[j];
            a[j] = x;
            j += x < p;
        }
        if (k < j) {
            hi = j - 1;
            continue;
        }
        int64_t e = j;
        for (int64_t i = j; i <= hi; i++) { /* a[j..e-1] == p < a[e..i] */
            float x = a[i];
            a[i] = a[e];
            a[e] = x;
            e += x <= p;
        }
        if (k < e) return p;
        lo = e;
    }
    return a[k];
}

/* numpy.percentile(a, q) with linear interpolation; reorders a. Every element before
 * ``from`` must be no larger than any from ``from`` on, and ``from`` at most the q-th
 * position: the selection then runs on a[from..n-1] only (a p99 after the p50 of the
 * same column searches only the upper half). */
static double percentile_from(float *a, int64_t n, int64_t from, double q) {
    double pos = q / 100.0 * (double)(n - 1);
    int64_t below = (int64_t)pos;
    double frac = pos - (double)below;
    double lo = select_kth(a + from, n - from, below - from);
    if (frac == 0.0 || below + 1 >= n) return lo;
    float next = a[below + 1]; /* the smallest of the part after the k-th */
    for (int64_t i = below + 2; i < n; i++)
        if (a[i] < next) next = a[i];
    return lo + frac * ((double)next - lo);
}

fl_status fl_stage_table_percentiles(const fl_stage_table *t, double p50[FL_STAGE_COLUMNS],
                                     double p99[FL_STAGE_COLUMNS]) {
    /* One pass over the rows gathers every column (column-major, ``most`` per column);
     * a column every value of which is zero (a stage this path never has) needs no
     * selection. */
    int64_t most = t->made > t->taken ? t->made : t->taken;
    if (most < 1) most = 1;
    float *cols = malloc((size_t)most * FL_STAGE_COLUMNS * sizeof(float));
    if (!cols) return FL_E_NOMEM;
    int64_t n_made = 0, n_taken = 0;
    unsigned nonzero = 0; /* bit c: column c has a value other than zero */
    for (int64_t k = 0; k < t->capacity; k++) {
        const float *row = t->rows + k * FL_STAGE_COLUMNS;
        if (t->flags[k] & FL_STAGE_MADE) {
            for (int c = 0; c < FL_STAGE_BATCH_COLUMNS; c++) {
                /* a NaN would stall the selection (no element is below or equal to it) */
                float x = isfinite(row[c]) ? row[c] : 0.0f;
                cols[c * most + n_made] = x;
                nonzero |= (unsigned)(x != 0.0f) << c;
            }
            n_made++;
        }
        if (t->flags[k] & FL_STAGE_TAKEN) {
            for (int c = FL_STAGE_BATCH_COLUMNS; c < FL_STAGE_COLUMNS; c++) {
                float x = isfinite(row[c]) ? row[c] : 0.0f;
                cols[c * most + n_taken] = x;
                nonzero |= (unsigned)(x != 0.0f) << c;
            }
            n_taken++;
        }
    }
    for (int c = 0; c < FL_STAGE_COLUMNS; c++) {
        int64_t n = c < FL_STAGE_BATCH_COLUMNS ? n_made : n_taken;
        float *col = cols + c * most;
        if (n == 0 || !(nonzero >> c & 1u)) {
            p50[c] = p99[c] = 0.0;
            continue;
        }
        p50[c] = percentile_from(col, n, 0, 50.0);
        /* col[0..median] now hold the smaller half: the p99 searches the rest */
        p99[c] = percentile_from(col, n, (int64_t)(0.5 * (double)(n - 1)), 99.0);
    }
    free(cols);
    return FL_OK;
}
