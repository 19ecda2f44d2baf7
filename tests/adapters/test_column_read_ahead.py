"""Read-ahead of Parquet column chunks in fastload's fsspec files: pyarrow reading a local
Parquet file through the filesystem (the engine's file backend), what is read ahead, what
is taken, what it costs a reader that stops early, and a background read that fails."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("fsspec")

import fastload  # noqa: E402
from fastload.adapters.column_read_ahead import (  # noqa: E402
    ROW_GROUPS_AHEAD,
    ColumnChunkReadAhead,
    SharedReadAhead,
)

GROUPS = 6
ROWS = 6_000
COLUMNS = [f"c{i}" for i in range(6)]


@pytest.fixture
def table_path(tmp_path):
    rng = np.random.default_rng(1)
    table = pa.table({c: rng.random(ROWS) for c in COLUMNS})
    path = str(tmp_path / "t.parquet")
    pq.write_table(table, path, row_group_size=ROWS // GROUPS, compression="none")
    return path, table


def _fs(**kw):
    return fastload.filesystem(skip_instance_cache=True, **kw)


def test_read_table_takes_every_chunk_read_ahead(table_path):
    path, table = table_path
    fs = _fs()
    got = pq.read_table(path, columns=["c1", "c4"], filesystem=fs)
    assert got.equals(table.select(["c1", "c4"]))
    stats = fs.column_read_ahead_stats()
    # each column's chunk of row group 0 (at least) is read by the caller; later ones ahead
    assert 0 < stats["read_ahead"] <= 2 * (GROUPS - 1)
    assert stats["taken"] == stats["read_ahead"]


def test_iter_batches_of_one_file_object_reads_ahead(table_path):
    path, table = table_path
    fs = _fs()
    pf = pq.ParquetFile(path, filesystem=fs)
    seen = np.concatenate([b.column("c2").to_numpy() for b in pf.iter_batches(columns=["c2"])])
    assert np.array_equal(seen, table.column("c2").to_numpy())
    stats = fs.column_read_ahead_stats()
    assert stats["read_ahead"] == stats["taken"] == GROUPS - 1


def test_a_reader_of_one_row_group_pays_at_most_the_next_ones(table_path):
    path, table = table_path
    fs = _fs()
    pf = pq.ParquetFile(path, filesystem=fs)
    assert pf.read_row_group(0, columns=["c3"]).equals(table.select(["c3"]).slice(0, 1000))
    stats = fs.column_read_ahead_stats()
    assert stats["read_ahead"] <= ROW_GROUPS_AHEAD and stats["taken"] == 0


def test_off_and_a_budget_under_one_chunk_read_nothing_ahead(table_path):
    path, table = table_path
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1).total_compressed_size
    for fs in (_fs(column_read_ahead=0), _fs(column_read_ahead=chunk - 1)):
        assert pq.read_table(path, columns=["c1"], filesystem=fs).equals(table.select(["c1"]))
        assert fs.column_read_ahead_stats() == {"read_ahead": 0, "taken": 0, "held_bytes": 0}
    with pytest.raises(ValueError, match="column_read_ahead=-1 is invalid"):
        _fs(column_read_ahead=-1)


def test_files_that_are_not_parquet_read_nothing_ahead(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data + b"PAR1")  # ends like Parquet, no footer in front
    fs = _fs()
    with fs.open(str(path)) as f:
        f.seek(f.size - 4096)
        assert f.read() == (data + b"PAR1")[-4096:]
        f.seek(0)
        assert f.read(2 << 20) == data[: 2 << 20]
    assert fs.column_read_ahead_stats()["read_ahead"] == 0


def test_a_failed_background_read_is_read_again_by_the_caller(table_path):
    """A background read that fails is dropped: ``take`` gives None and the file reads the
    range itself, so the caller sees the real read's result or error."""
    path, _ = table_path
    raw = open(path, "rb").read()
    md = pq.ParquetFile(path).metadata
    col = [md.row_group(g).column(2) for g in range(GROUPS)]
    starts = [
        c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in col
    ]
    spans = [(a, a + c.total_compressed_size) for a, c in zip(starts, col, strict=True)]
    broken = spans[2]

    def fetch(a, b):
        if (a, b) == broken:
            raise OSError("the background read failed")
        return memoryview(raw)[a:b]

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(2)
    shared = SharedReadAhead()
    ahead = ColumnChunkReadAhead(fetch, len(raw), 64 << 20, lambda: pool, shared, "k")
    tail = len(raw) - 65536
    ahead.saw(tail, len(raw), memoryview(raw)[tail:])  # the footer, as pyarrow reads it
    ahead.saw(*spans[0], fetch(*spans[0]))  # row group 0's chunk: 1 and 2 go ahead
    assert shared.started == ROW_GROUPS_AHEAD
    assert ahead.take(*spans[1]) == raw[spans[1][0] : spans[1][1]]
    assert ahead.take(*broken) is None  # failed: the caller reads it
    assert ahead.take(*spans[1]) is None  # taken once: a re-read is the caller's
    assert shared.taken == 1
    ahead.close()
    pool.shutdown()


def test_a_dropped_file_is_freed_without_a_garbage_collection(table_path):
    """pyarrow drops files without closing them: no reference cycle may keep one (and the
    buffers it holds) alive until the next full collection."""
    import gc
    import weakref

    path, table = table_path
    fs = _fs()
    gc.disable()
    try:
        f = fs.open(path)
        alive = weakref.ref(f)
        pf = pq.ParquetFile(f)
        assert pf.read(columns=["c0"]).equals(table.select(["c0"]))
        del f, pf
        # a background read still running holds its file for the call: let them end
        fs._read_ahead_pool().shutdown(wait=True)
        assert alive() is None
    finally:
        gc.enable()


def test_a_whole_file_read_keeps_at_most_a_footer_sized_tail():
    from concurrent.futures import ThreadPoolExecutor

    size = 20 << 20  # claims a 30 MiB footer: more than the read-ahead parses
    data = bytearray(size)
    data[-8:] = (30 << 20).to_bytes(4, "little") + b"PAR1"
    shared = SharedReadAhead()
    pool = ThreadPoolExecutor(1)
    ahead = ColumnChunkReadAhead(lambda a, b: None, size, 64 << 20, lambda: pool, shared, "k")
    ahead.saw(0, size, memoryview(data))
    assert ahead.spans == {} and ahead.tail == b""  # given up: no copy of the file kept
    pool.shutdown()


def test_a_forked_child_reads_itself_what_the_parent_read_ahead(tmp_path, monkeypatch):
    """Background reads in flight at a fork never finish in the child (their threads are
    the parent's): the child reads those bytes itself instead of waiting for ever."""
    import os
    import signal
    import threading
    import time

    from fastload.adapters import fsspec_fs

    path = str(tmp_path / "t.parquet")
    rng = np.random.default_rng(1)
    pq.write_table(
        pa.table({f"c{i}": rng.random(6000) for i in range(3)}),
        path,
        row_group_size=1000,
        compression="none",
    )
    real = fsspec_fs.FastloadFile._engine_read

    def slow_in_background(self, a, b):
        if threading.current_thread().name.startswith("fastload-fsspec"):
            time.sleep(1.0)  # still in flight when the process forks
        return real(self, a, b)

    monkeypatch.setattr(fsspec_fs.FastloadFile, "_engine_read", slow_in_background)
    fs = _fs()
    pf = pq.ParquetFile(path, filesystem=fs)
    pf.read_row_group(0, columns=["c1"])
    assert fs.column_read_ahead_stats()["read_ahead"] > 0
    pid = os.fork()
    if pid == 0:  # the child: a hang ends it by SIGALRM
        signal.alarm(10)
        got = pf.read_row_group(1, columns=["c1"]).column("c1").to_numpy()
        os._exit(0 if len(got) == 1000 else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_all_open_files_of_a_filesystem_share_one_total_budget(table_path):
    """``column_read_ahead_total`` bounds the read-ahead of every open file together; a
    file dropped unclosed (as pyarrow drops them) gives its share back."""
    import gc

    path, table = table_path
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(1).total_compressed_size
    fs = _fs(column_read_ahead_total=chunk)
    first = pq.ParquetFile(fs.open(path))
    second = pq.ParquetFile(fs.open(path))
    assert first.read_row_group(0, columns=["c1"]).equals(table.select(["c1"]).slice(0, 1000))
    # the first file could read 2 row groups ahead on its own budget: the total allows one
    assert fs.column_read_ahead_stats()["read_ahead"] == 1
    assert fs.column_read_ahead_stats()["held_bytes"] == chunk
    assert second.read_row_group(0, columns=["c1"]).num_rows == 1000
    assert fs.column_read_ahead_stats()["read_ahead"] == 1  # the total is spent
    del first
    gc.collect()  # (a ParquetFile holds its file in a cycle of its own)
    assert fs.column_read_ahead_stats()["held_bytes"] == 0
    assert second.read_row_group(1, columns=["c1"]).num_rows == 1000
    assert fs.column_read_ahead_stats()["read_ahead"] == 2  # room again: row group 2 ahead
    with pytest.raises(ValueError, match="column_read_ahead_total=-1 is invalid"):
        _fs(column_read_ahead_total=-1)


def test_a_total_budget_of_zero_reads_nothing_ahead(table_path):
    path, table = table_path
    fs = _fs(column_read_ahead_total=0)
    assert pq.read_table(path, columns=["c2"], filesystem=fs).equals(table.select(["c2"]))
    assert fs.column_read_ahead_stats() == {"read_ahead": 0, "taken": 0, "held_bytes": 0}


def test_invalidating_the_cache_keeps_one_total_budget_over_the_open_files(table_path):
    path, table = table_path
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(1).total_compressed_size
    fs = _fs(column_read_ahead_total=chunk)
    first = pq.ParquetFile(fs.open(path))
    assert first.read_row_group(0, columns=["c1"]).num_rows == 1000
    assert fs.column_read_ahead_stats()["held_bytes"] == chunk  # the total is spent
    budget = fs._read_ahead
    fs.invalidate_cache()  # layouts forgotten, the budget and what it holds kept
    assert fs._read_ahead is budget and not budget._items
    second = pq.ParquetFile(fs.open(path))
    assert second.read_row_group(0, columns=["c1"]).equals(table.select(["c1"]).slice(0, 1000))
    assert fs.column_read_ahead_stats()["held_bytes"] == chunk  # not a second total's worth
    first.close()
    second.close()
