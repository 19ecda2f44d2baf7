# distutils: sources = csrc/fl_range_check.c
"""Bridge to csrc/fl_range_check.c: one pass over a range table before any backend reads it."""

from libc.stdint cimport int64_t

from fastload._native.includes.fl cimport fl_range_check, fl_range_summary


def check_ranges(const int64_t[:, ::1] table, int64_t nsources):
    """``(bad_row, end_row, end, total)`` of an int64 table of rows (src, offset, length,
    dst): the first invalid row or -1 (see fl_range_check.h), a row whose dst + length is
    the largest, that end, and the sum of the lengths."""
    cdef fl_range_summary s
    if table.shape[1] != 4:
        raise ValueError(f"the range table must have 4 columns, got {table.shape[1]}")
    if table.shape[0] == 0:
        return -1, 0, 0, 0
    with nogil:
        fl_range_check(&table[0, 0], table.shape[0], nsources, &s)
    return s.bad_row, s.end_row, s.end, s.total
