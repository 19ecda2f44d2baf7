"""The planner (fastload.plan.planner): samples -> one coalesced range table, batch slices."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastload.plan.datasets import RecordDataset
from fastload.plan.planner import batch_slices
from fastload.storage.engine import RangeEngine
from tests.support.loader_helpers import write_records
from tests.support.plan_data import SHAPE, read_plan


def test_adjacent_records_coalesce_to_one_range_per_shard(records):
    ds = RecordDataset(records[0], SHAPE)
    plan, buf, _ = read_plan(ds, np.arange(10, 30))
    assert len(plan.sources) == 2 and plan.requests == 2  # shards 0 and 1
    assert np.array_equal(buf.reshape(20, *SHAPE), records[1][10:30])


def test_range_mode_splits_into_parts_sequential_does_not(tmp_path):
    data = write_records(str(tmp_path), 34, (64, 33), 2)  # 2112-byte records, 17 per shard
    ds = RecordDataset(str(tmp_path), (64, 33))
    seq, buf_seq, seq_parts = read_plan(ds, np.arange(17), reader_mode="sequential", part_size=4096)
    rng, buf_rng, rng_parts = read_plan(ds, np.arange(17), reader_mode="range", part_size=4096)
    assert seq.requests == 1 and seq_parts == 1  # one request for the whole run
    # the planner coalesces; the native reader cuts the run into parts (the one place it is cut)
    assert rng.requests == 1 and rng_parts == -(-17 * 2112 // 4096)
    assert np.array_equal(buf_seq, buf_rng) and np.array_equal(
        buf_seq.reshape(17, 64, 33), data[:17]
    )


def test_parts_cover_every_byte_once(tmp_path):
    """Ranges are cut into parts in one place, the native reader: every byte once, in place."""
    data = [np.random.default_rng(i).integers(0, 256, 20000, dtype=np.uint8) for i in range(2)]
    paths = []
    for i, d in enumerate(data):
        paths.append(str(tmp_path / f"s{i}.bin"))
        d.tofile(paths[-1])
    table = np.array([[0, 100, 10000, 0], [1, 0, 4096, 10000], [0, 7, 1, 14096]], dtype=np.int64)
    eng = RangeEngine(part_size=4096)
    out = np.zeros(14097, dtype=np.uint8)
    eng.read_into(paths, table, out)
    assert eng.backend("file").stats()["requests"] == 3 + 1 + 1
    assert np.array_equal(out[:10000], data[0][100:10100])
    assert np.array_equal(out[10000:14096], data[1][:4096]) and out[14096] == data[0][7]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 49), min_size=1, max_size=40),
    st.sampled_from(["range", "sequential"]),
    st.sampled_from([4096, 8192]),
)
def test_any_index_list_reads_byte_exact(tmp_path_factory, idx, mode, part):
    folder = str(tmp_path_factory.getbasetemp() / "hyp")
    if not os.path.isdir(folder):
        write_records(folder, 50, (64, 33), 3)
    data = np.concatenate(
        [
            np.fromfile(os.path.join(folder, n), np.uint8).reshape(-1, 64, 33)
            for n in sorted(os.listdir(folder))
        ]
    )
    ds = RecordDataset(folder, (64, 33))
    plan, buf, parts = read_plan(ds, idx, reader_mode=mode, part_size=part)
    if mode == "range":
        assert parts == int((-(-plan.table[:, 2] // part)).sum())  # each range cut at ``part``
    assert np.array_equal(buf.reshape(len(idx), 64, 33), data[idx])


def test_batch_slices():
    assert batch_slices(10, 4, False) == [(0, 4), (4, 8), (8, 10)]
    assert batch_slices(10, 4, True) == [(0, 4), (4, 8)]
    assert batch_slices(0, 4, False) == []
    with pytest.raises(ValueError, match="batch_size"):
        batch_slices(10, 0, False)
    s = batch_slices(10, 4, False)
    assert s[-1] == (8, 10) and s[1:] == [(4, 8), (8, 10)] and list(s) == s[:]
    with pytest.raises(IndexError):
        s[3]
    assert s.samples_in(np.array([True, False, True])) == 6  # 4 + the short last batch's 2
    assert batch_slices(10, 4, True).samples_in(np.array([False, True])) == 4


def test_batch_slices_take_constant_memory():
    # 10**6 batches of one sample: computed on demand, never a list of 10**6 tuples
    import tracemalloc

    tracemalloc.start()
    try:
        s = batch_slices(10**6, 1, False)
        assert len(s) == 10**6 and s[10**6 - 1] == (999_999, 10**6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10
