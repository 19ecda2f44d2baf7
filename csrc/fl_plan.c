#include "fl_plan.h"

#include <stdlib.h>

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Position of v in the sorted, distinct used[0..n). */
static int64_t find(const int64_t *used, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (used[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int fl_plan_pack(const int64_t *src, const int64_t *offset, const int64_t *length, int64_t n,
                 int64_t *offsets_out, int64_t *nbytes, int64_t *used_out, int64_t *nused,
                 int64_t *table_out, int64_t *nrows, fl_error *err) {
    fl_error_clear(err);
    *nbytes = *nused = *nrows = 0;
    int64_t lo = INT64_MAX, hi = -1, at = 0;
    for (int64_t k = 0; k < n; k++) {
        if (src[k] < 0 || offset[k] < 0 || length[k] < 0 || length[k] > INT64_MAX - at ||
            length[k] > INT64_MAX - offset[k])
            return fl_error_set(err, FL_E_INVALID, 0, -1, offset[k], length[k],
                                "sample %lld has source %lld, offset %lld, length %lld",
                                (long long)k, (long long)src[k], (long long)offset[k],
                                (long long)length[k]);
        offsets_out[k] = at;
        at += length[k];
        if (src[k] < lo) lo = src[k];
        if (src[k] > hi) hi = src[k];
    }
    *nbytes = at;
    if (n == 0) return FL_OK;

    /* The distinct sources, sorted: by a bitmap over their span when it is small (a
     * batch of records in a few shards), else by sorting a copy (one object each). */
    uint64_t span = (uint64_t)(hi - lo) + 1;
    int64_t nu = 0;
    int64_t *local = NULL; /* over the span: each source's position in used_out, or -1 */
    if (span <= (uint64_t)n * 8 || span <= (1u << 16)) {
        local = malloc(sizeof(int64_t) * (size_t)span);
        if (!local) return fl_error_set(err, FL_E_NOMEM, 0, -1, 0, 0, "out of memory");
        for (uint64_t s = 0; s < span; s++) local[s] = -1;
        for (int64_t k = 0; k < n; k++) local[src[k] - lo] = 0;
        for (uint64_t s = 0; s < span; s++)
            if (local[s] >= 0) {
                local[s] = nu;
                used_out[nu++] = lo + (int64_t)s;
            }
    } else {
        for (int64_t k = 0; k < n; k++) used_out[k] = src[k];
        qsort(used_out, (size_t)n, sizeof(int64_t), cmp_i64);
        for (int64_t k = 0; k < n; k++)
            if (nu == 0 || used_out[nu - 1] != used_out[k]) used_out[nu++] = used_out[k];
    }
    *nused = nu;

    int64_t rows = 0;
    int64_t *prev = NULL;
    for (int64_t k = 0; k < n; k++) {
        if (length[k] == 0) continue;
        int64_t s = local ? local[src[k] - lo] : find(used_out, nu, src[k]);
        if (prev && prev[0] == s && prev[1] + prev[2] == offset[k] &&
            prev[3] + prev[2] == offsets_out[k]) {
            prev[2] += length[k];
            continue;
        }
        prev = table_out + 4 * rows++;
        prev[0] = s;
        prev[1] = offset[k];
        prev[2] = length[k];
        prev[3] = offsets_out[k];
    }
    *nrows = rows;
    free(local);
    return FL_OK;
}
