#include "fl_range_check.h"

void fl_range_check(const int64_t *table, int64_t nrows, int64_t nsources,
                    fl_range_summary *out) {
    out->bad_row = -1;
    out->end_row = 0;
    out->end = 0;
    out->total = 0;
    uint64_t total = 0;
    for (int64_t i = 0; i < nrows; i++) {
        const int64_t *r = table + 4 * i;
        int64_t src = r[0], off = r[1], len = r[2], dst = r[3];
        /* offset + length and dst + length must not wrap: compared without adding */
        if (src < 0 || src >= nsources || off < 0 || len <= 0 || dst < 0 ||
            len > INT64_MAX - off || len > INT64_MAX - dst) {
            out->bad_row = i;
            return;
        }
        if (dst + len > out->end) {
            out->end = dst + len;
            out->end_row = i;
        }
        total += (uint64_t)len; /* only reported: wraps harmlessly past 2**64 bytes */
    }
    out->total = (int64_t)(total > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX : total);
}
