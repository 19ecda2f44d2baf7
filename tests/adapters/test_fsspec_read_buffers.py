"""Open files of fastload's fsspec filesystem read into reused buffers (over the rclone S3
fixture): a buffer is reused once the reader let go of it, never while a result of it is
held, its bytes are the object's each time, and ``fetch_buffers=0`` allocates every read."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fsspec")

import fastload  # noqa: E402
from tests.support.servers import S3_OBJECTS, payload, start_rclone, stop  # noqa: E402

MiB = 1 << 20
URI = "s3://data/big.bin"  # 5 MiB + 123 bytes


@pytest.fixture
def server(rclone_s3, clean_aws_env):
    return rclone_s3


def _want() -> bytes:
    return payload(*S3_OBJECTS["data/big.bin"])


def _fs(server, **kw):
    return fastload.filesystem(**server.options, skip_instance_cache=True, **kw)


def test_reads_reuse_a_buffer_the_reader_let_go_of(server):
    fs = _fs(server, block_size=MiB)
    want = _want()
    with fs.open(URI) as f:
        for start in (0, 2 * MiB, 1 * MiB, 3 * MiB):  # big reads: no read-ahead block
            f.seek(start)
            view = f.read_buffer(2 * MiB)
            assert bytes(view) == want[start : start + 2 * MiB]
            del view  # the reader lets go: the next read may reuse the buffer
    pool = fs._fetch_buffers
    # the file keeps its last fetch (re-reads cost no request), so two buffers take turns
    assert pool.allocated == 2 and pool.reused == 2


def test_a_result_still_held_is_never_overwritten(server):
    fs = _fs(server, block_size=MiB)
    want = _want()
    with fs.open(URI) as f:
        kept = [np.frombuffer(f.read_buffer(2 * MiB), dtype=np.uint8) for _ in range(2)]
        f.seek(0)
        again = f.read_buffer(2 * MiB)  # a third buffer: both earlier ones are still seen
        assert bytes(again) == want[: 2 * MiB]
    assert kept[0].tobytes() == want[: 2 * MiB]
    assert kept[1].tobytes() == want[2 * MiB : 4 * MiB]
    assert fs._fetch_buffers.allocated == 3 and fs._fetch_buffers.reused == 0


def test_fetch_buffers_zero_allocates_every_read_and_bad_values_are_refused(server):
    fs = _fs(server, block_size=MiB, fetch_buffers=0)
    with fs.open(URI) as f:
        for _ in range(3):
            f.seek(0)
            assert bytes(f.read_buffer(2 * MiB)) == _want()[: 2 * MiB]
    assert fs._fetch_buffers.held_bytes == 0 and fs._fetch_buffers.reused == 0
    with pytest.raises(ValueError, match="fetch_buffers=-1 is invalid"):
        _fs(server, fetch_buffers=-1)


def test_pyarrow_reads_a_parquet_file_twice_through_reused_buffers(tmp_path, clean_aws_env):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(5)
    table = pa.table({f"c{i}": rng.random(400_000) for i in range(3)})  # ~3 MiB a column
    (tmp_path / "pq").mkdir()
    pq.write_table(table, tmp_path / "pq" / "t.parquet", row_group_size=200_000, compression="none")
    server = start_rclone(str(tmp_path))  # after the file is written: rclone lists once
    try:
        fs = _fs(server)
        for _ in range(3):
            got = pq.read_table("s3://pq/t.parquet", columns=["c0", "c2"], filesystem=fs)
            assert got.equals(table.select(["c0", "c2"]))
            del got
        pool = fs._fetch_buffers
        assert pool.reused >= pool.allocated  # the later reads ran on the first one's buffers
    finally:
        stop(server)


def test_cat_file_and_cat_ranges_read_through_reused_buffers(server):
    fs = _fs(server)
    want = _want()
    for _ in range(3):
        assert fs.cat_file(URI, MiB, 4 * MiB) == want[MiB : 4 * MiB]
        got = fs.cat_ranges([URI, URI], [0, 3 * MiB], [2 * MiB, 5 * MiB])  # 4 MiB in all
        assert got == [want[: 2 * MiB], want[3 * MiB : 5 * MiB]]
    pool = fs._fetch_buffers
    # the bytes returned are copies: each call's buffer (3 and 4 MiB, one 4 MiB buffer
    # fits both) is free again for the next
    assert pool.allocated == 1 and pool.reused == 5


def test_the_buffer_and_budget_knobs_survive_pickling(server):
    import pickle

    fs = _fs(server, fetch_buffers=6 * MiB, column_read_ahead_total=7 * MiB)
    again = pickle.loads(pickle.dumps(fs))
    assert again._fetch_buffers.max_idle_bytes == 6 * MiB
    assert again._read_ahead.budget == again.column_read_ahead_total == 7 * MiB
    assert again.cat_file(URI, 0, 2 * MiB) == _want()[: 2 * MiB]
