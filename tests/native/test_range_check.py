"""The engine's one-pass range-table check (fastload._native.range_check)."""

from __future__ import annotations

import numpy as np
import pytest

from fastload._native.range_check import check_ranges

I64_MAX = np.iinfo(np.int64).max


def test_summary_of_a_valid_table():
    t = np.array([[0, 0, 10, 0], [1, 5, 20, 100], [0, 7, 3, 10]], dtype=np.int64)
    assert check_ranges(t, 2) == (-1, 1, 120, 33)
    assert check_ranges(np.zeros((0, 4), np.int64), 1) == (-1, 0, 0, 0)


@pytest.mark.parametrize(
    "row",
    [
        (2, 0, 1, 0),  # no such source
        (-1, 0, 1, 0),
        (0, -1, 1, 0),
        (0, 0, 0, 0),  # empty
        (0, 0, 1, -1),
        (0, I64_MAX - 3, 10, 0),  # offset + length wraps
        (0, 0, 10, I64_MAX - 3),  # dst + length wraps
    ],
)
def test_the_first_bad_row_is_named(row):
    t = np.array([[0, 0, 10, 0], row, (0, -5, 1, 0)], dtype=np.int64)
    assert check_ranges(t, 2)[0] == 1


def test_needs_four_columns():
    with pytest.raises(ValueError, match="4 columns"):
        check_ranges(np.zeros((2, 3), np.int64), 1)
