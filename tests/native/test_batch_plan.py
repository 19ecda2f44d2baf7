"""The planner's native pass (fastload._native.batch_plan) against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastload._native.batch_plan import pack_ranges
from fastload.errors import InvalidRequestError


def reference(src, off, length):
    """The numpy recipe the kernel replaced: unique + stack + drop empty + coalesce."""
    dst = np.concatenate(([0], np.cumsum(length)))
    used, local = np.unique(src, return_inverse=True)
    rows = [
        [int(a), int(o), int(n), int(d)]
        for a, o, n, d in zip(local, off, length, dst[:-1], strict=True)
        if n > 0
    ]
    merged: list[list[int]] = []
    for r in rows:
        p = merged[-1] if merged else None
        if p and p[0] == r[0] and p[1] + p[2] == r[1] and p[3] + p[2] == r[3]:
            p[2] += r[2]
        else:
            merged.append(r)
    return dst[:-1], int(dst[-1]), used, np.array(merged, dtype=np.int64).reshape(-1, 4)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40), st.integers(0, 3)), max_size=60),
    st.sampled_from([1, 1 << 40]),  # small span (bitmap) and a huge one (sort)
)
def test_pack_matches_the_numpy_recipe(samples, spread):
    src = np.array([s * spread for s, _, _ in samples], dtype=np.int64)
    off = np.array([o * 4 for _, o, _ in samples], dtype=np.int64)
    length = np.array([n * 4 for _, _, n in samples], dtype=np.int64)
    got = pack_ranges(src, off, length)
    want = reference(src, off, length)
    assert np.array_equal(got[0], want[0]) and got[1] == want[1]
    assert np.array_equal(got[2], want[2]) and np.array_equal(got[3], want[3])
    assert got[3].flags.c_contiguous and got[3].dtype == np.int64


def test_records_in_order_become_one_row_per_shard():
    src = np.array([0, 0, 0, 1, 1], dtype=np.int64)
    off = np.array([0, 16, 32, 0, 16], dtype=np.int64)
    offsets, nbytes, used, table = pack_ranges(src, off, np.full(5, 16, dtype=np.int64))
    assert nbytes == 80 and offsets.tolist() == [0, 16, 32, 48, 64]
    assert used.tolist() == [0, 1]
    assert table.tolist() == [[0, 0, 48, 0], [1, 0, 32, 48]]


@pytest.mark.parametrize("bad", [(-1, 0, 1), (0, -1, 1), (0, 0, -1)])
def test_negative_values_are_refused(bad):
    s, o, n = (np.array([v], dtype=np.int64) for v in bad)
    with pytest.raises(InvalidRequestError, match="sample 0 has source"):
        pack_ranges(s, o, n)


def test_empty_batch():
    e = np.zeros(0, dtype=np.int64)
    offsets, nbytes, used, table = pack_ranges(e, e, e)
    assert nbytes == 0 and len(offsets) == len(used) == 0 and table.shape == (0, 4)
