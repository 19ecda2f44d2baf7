"""The DataLoader over shards on S3 (rclone serve s3): block shuffle reads one GET per
block, the node-local cache serves later epochs (shared by two processes), tar shards flow
through the same path, and a shard that changes after it was indexed is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastload.errors import ShardChangedError
from fastload.loop.loader import DataLoader
from fastload.plan.block_map import BlockMap
from fastload.plan.datasets import NpyDataset, RecordDataset
from fastload.plan.tar_shards import TarShardDataset
from fastload.storage.engine import RangeEngine
from tests.support.loader_helpers import write_records
from tests.support.servers import start_rclone, stop
from tests.support.tar_data import payload_of, write_shards

pytestmark = pytest.mark.s3

SHAPE = (16, 16, 3)  # 768-byte records
N = 600
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3shards")
    data = write_records(str(root / "bucket" / "recs"), N, SHAPE, 3)
    np.save(root / "bucket" / "arr.npy", data)
    write_shards(str(root / "bucket" / "tars"), 90, 30, size=5000)
    server = start_rclone(str(root))
    engine = RangeEngine(**server.options)
    yield engine, data, server
    engine.close()
    stop(server)


def requests(engine):
    return engine.backend("s3").stats()["requests"]


def gets(engine):
    """Requests made, not counting retried attempts."""
    st = engine.backend("s3").stats()
    return st["requests"] - st["retries"]


def epoch_of(dl, data=None):
    seen = []
    for x, y in dl:
        if data is not None:
            assert np.array_equal(x, data[y])
        seen.extend(y.tolist())
    return seen


def test_block_shuffle_reads_one_get_per_block(s3):
    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    blocks = len(BlockMap.of(ds, 16384))
    before = gets(engine)
    dl = DataLoader(ds, batch_size=64, engine=engine, shuffle="block", block_size=16384)
    seen = epoch_of(dl, data)
    assert sorted(seen) == list(range(N)) and seen != sorted(seen)
    assert gets(engine) - before == blocks  # one ranged GET per block, each once
    rep = dl.report()["blocks"]
    assert rep["block_fetches"] == blocks and rep["refetches"] == 0
    # the global shuffle: a GET per record (neighbours in a batch are rare)
    before = requests(engine)
    epoch_of(DataLoader(ds, batch_size=64, engine=engine, shuffle=True), data)
    assert requests(engine) - before > 0.8 * N > 3 * blocks


def test_block_size_and_buffer_knobs_act(s3):
    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    counts = []
    for bs in (8192, 65536):
        before = gets(engine)
        dl = DataLoader(ds, batch_size=64, engine=engine, shuffle="block", block_size=bs)
        epoch_of(dl, data)
        counts.append(gets(engine) - before)
        rep = dl.report()["blocks"]
        assert rep["refetches"] == 0 and rep["evicted_unread"] == 0
        dl.close()
    # each block once: a GET per block, retried attempts aside (a loaded server may drop one)
    assert counts == [len(BlockMap.of(ds, 8192)), len(BlockMap.of(ds, 65536))]
    assert counts[0] > 3 * counts[1]
    tight = DataLoader(
        ds, batch_size=64, engine=engine, shuffle="block", block_size=8192, shuffle_buffer=30
    )
    wide = DataLoader(
        ds, batch_size=64, engine=engine, shuffle="block", block_size=8192, shuffle_buffer=N
    )
    first = [np.unique(dl.sampler.indices(0)[:64] // 10).size for dl in (tight, wide)]
    assert first[0] < first[1]  # a wider window mixes more blocks into a batch


def test_a_dropped_epoch_stops_reading_blocks_ahead(s3):
    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    dl = DataLoader(ds, batch_size=16, engine=engine, shuffle="block", block_size=8192)
    it = iter(dl)
    next(it)
    it.close()  # a break: the epoch ends here
    ahead = [t for t in threading.enumerate() if t.name.startswith("fastload-blocks-ahead")]
    assert not ahead
    before = requests(engine)
    time.sleep(0.3)
    assert requests(engine) == before  # nothing fetched for the dropped epoch
    dl.close()


def test_npy_rows_and_tar_shards_with_block_shuffle(s3):
    engine, data, _ = s3
    npy = NpyDataset("s3://bucket/arr.npy", labels=np.arange(N), engine=engine)
    assert sorted(
        epoch_of(
            DataLoader(npy, batch_size=50, engine=engine, shuffle="block", block_size=32768), data
        )
    ) == list(range(N))
    tars = TarShardDataset("s3://bucket/tars/", field="bin", label="json:i", engine=engine)
    before = gets(engine)
    dl = DataLoader(tars, batch_size=16, engine=engine, shuffle="block", block_size=65536)
    seen = []
    for x, y in dl:
        for k, i in enumerate(y.tolist()):
            assert x.sample(k).tobytes() == payload_of(i, 5000)
        seen += y.tolist()
    assert sorted(seen) == list(range(90))
    assert gets(engine) - before == len(BlockMap.of(tars, 65536))


def test_cache_serves_later_epochs(s3, tmp_path):
    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    blocks = len(BlockMap.of(ds, 16384))
    for shuffle in ("block", True):
        cache = tmp_path / f"cache-{shuffle}"

        def cached_loader(shuffle=shuffle, cache=cache):
            return DataLoader(
                ds, batch_size=64, engine=engine, shuffle=shuffle, block_size=16384,
                cache_dir=str(cache),
            )  # fmt: skip

        dl = cached_loader()
        got = []
        for _ in range(2):
            before = requests(engine)
            assert sorted(epoch_of(dl, data)) == list(range(N))
            got.append(requests(engine) - before)
        assert got == [blocks, 0]  # epoch 2 reads nothing from S3
        c = dl.report()["cache"]
        assert c["misses"] == blocks and c["hits"] > 0 and c["bytes"] == N * 768
        assert c["evictions"] == 0 and c["dir"] == str(cache)
        # and per epoch: the first filled the cache, the second only read it
        first, second = dl.stats()["epochs"][-2:]
        assert first["cache_misses"] == blocks and second["cache_misses"] == 0
        assert second["cache_hits"] > 0
        assert first["cache_hits"] + second["cache_hits"] == c["hits"]
        # a new loader (a new run) starts from the cache too
        before = requests(engine)
        epoch_of(cached_loader(), data)
        assert requests(engine) == before


def test_cache_limit_evicts_and_stays_exact(s3, tmp_path):
    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    dl = DataLoader(
        ds,
        batch_size=64,
        engine=engine,
        shuffle="block",
        block_size=16384,
        cache_dir=str(tmp_path / "c"),
        cache_limit=80_000,
    )
    for _ in range(2):
        assert sorted(epoch_of(dl, data)) == list(range(N))
    c = dl.report()["cache"]
    assert c["evictions"] > 0 and c["stored_bytes"] <= 80_000


def test_cache_that_cannot_work_is_read_around_with_skip(s3, tmp_path, monkeypatch):
    engine, data, _ = s3
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    monkeypatch.setattr(fcntl, "flock", no_locks)
    from fastload.errors import CacheLockError

    with pytest.raises(CacheLockError):
        DataLoader(ds, engine=engine, shuffle="block", cache_dir=str(tmp_path / "c"))
    with pytest.warns(RuntimeWarning, match="reading without the cache"):
        dl = DataLoader(
            ds,
            batch_size=64,
            engine=engine,
            shuffle="block",
            cache_dir=str(tmp_path / "c"),
            on_error="skip",
        )
    assert sorted(epoch_of(dl, data)) == list(range(N))
    assert "refuses file locks" in dl.report()["cache"]["disabled"]


SHARER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import fastload
opts = dict(endpoint_url=sys.argv[2], access_key_id=sys.argv[3], secret_access_key=sys.argv[4],
            region="us-east-1")
eng = fastload.RangeEngine(**opts)
ds = fastload.RecordDataset("s3://bucket/recs/", (16, 16, 3), labels=np.arange(600), engine=eng)
dl = fastload.DataLoader(ds, batch_size=64, engine=eng, shuffle="block", block_size=16384,
                         cache_dir=sys.argv[5], seed=int(sys.argv[6]))
print("ready", flush=True)
sys.stdin.readline()  # start together
total = 0
for x, y in dl:
    total += int(x.astype(np.int64).sum())
c = dl.report()["cache"]
print(total, c["misses"], c["hits"], eng.backend("s3").stats()["requests"], flush=True)
"""


def test_two_processes_share_one_cache_without_fetching_twice(s3, tmp_path):
    engine, data, server = s3
    o = server.options
    cache = str(tmp_path / "shared")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SHARER,
                ROOT,
                o["endpoint_url"],
                o["access_key_id"],
                o["secret_access_key"],
                cache,
                str(seed),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)  # different orders: they meet on blocks at different times
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=120)[0].split() for p in procs]
    ds = RecordDataset("s3://bucket/recs/", SHAPE, engine=engine)
    blocks = len(BlockMap.of(ds, 16384))
    for total, *_ in results:
        assert int(total) == int(data.astype(np.int64).sum())  # both read every record exactly
    misses = sum(int(r[1]) for r in results)
    gets = sum(int(r[3]) for r in results)
    assert misses == blocks and gets == blocks  # each block fetched once, by one of them


def test_shard_changed_or_vanished_after_indexing(s3, tmp_path):
    engine, _, server = s3
    client = server.boto3()
    ds = TarShardDataset("s3://bucket/tars/", field="bin", label="cls", engine=engine)
    body = client.get_object(Bucket="bucket", Key="tars/shard-000001.tar")["Body"].read()
    try:
        client.put_object(Bucket="bucket", Key="tars/shard-000001.tar", Body=body[:-1024])
        with pytest.raises(ShardChangedError, match="shard-000001.tar: the shard changed"):
            epoch_of(DataLoader(ds, batch_size=16, engine=engine))
        client.delete_object(Bucket="bucket", Key="tars/shard-000001.tar")
        with pytest.raises(ShardChangedError, match="shard-000001.tar: the shard vanished"):
            epoch_of(DataLoader(ds, batch_size=16, engine=engine, shuffle="block"))
    finally:
        client.put_object(Bucket="bucket", Key="tars/shard-000001.tar", Body=body)


def test_local_tar_shard_changed_after_indexing(tmp_path):
    paths = write_shards(str(tmp_path), 40, 20)
    ds = TarShardDataset(paths, field="bin", label="cls")
    os.utime(paths[1], ns=(1, 1))  # rewritten (a new modification time)
    with pytest.raises(ShardChangedError, match="shard-000001.tar: the shard changed"):
        epoch_of(DataLoader(ds, batch_size=8))
    os.unlink(paths[0])
    with pytest.raises(ShardChangedError, match="shard-000000.tar: the shard vanished"):
        epoch_of(DataLoader(ds, batch_size=8))


def test_a_cache_limit_below_the_largest_block_is_refused_up_front(s3, tmp_path):
    # before: a CacheFullError at that block's first read, in the middle of an epoch
    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    kw = dict(batch_size=64, engine=engine, shuffle="block", block_size=16384)
    from fastload.errors import CacheFullError

    with pytest.raises(CacheFullError, match=r"cache_limit=10000 is smaller .* block_size=16384"):
        DataLoader(ds, cache_dir=str(tmp_path / "c"), cache_limit=10_000, **kw)
    dl = DataLoader(ds, cache_dir=str(tmp_path / "s"), cache_limit=10_000, on_error="skip", **kw)
    assert sorted(epoch_of(dl, data)) == list(range(N))
    c = dl.report()["cache"]
    # every block is refused at each try to keep it (counted each time), none is kept
    assert c["skipped"] >= len(BlockMap.of(ds, 16384)) and c["stored_bytes"] == 0


@pytest.mark.parametrize("shuffle", ["block", True])
def test_a_cache_read_around_reads_as_without_cache_dir(s3, tmp_path, monkeypatch, shuffle):
    # before: a disabled cache left the blocks path with no memory: with shuffle=True every
    # record fetched its whole block, with "block" every batch fetched its blocks again
    engine, data, _ = s3
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    monkeypatch.setattr(fcntl, "flock", no_locks)
    kw = dict(batch_size=64, engine=engine, shuffle=shuffle, block_size=16384, seed=2)
    with pytest.warns(RuntimeWarning, match="reading without the cache"):
        dl = DataLoader(ds, cache_dir=str(tmp_path / "c"), on_error="skip", **kw)
    before = gets(engine)
    assert sorted(epoch_of(dl, data)) == list(range(N))
    with_dir = gets(engine) - before
    before = gets(engine)
    assert sorted(epoch_of(DataLoader(ds, **kw), data)) == list(range(N))
    assert with_dir <= gets(engine) - before
    assert "refuses file locks" in dl.report()["cache"]["disabled"]
    assert dl.report()["blocks"]["refetches"] == 0


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_cache_dir_deleted_during_an_epoch(s3, tmp_path, on_error):
    # before: a raw FileNotFoundError of locks/<key> at the next block
    import shutil

    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(N), engine=engine)
    cache = tmp_path / "c"
    dl = DataLoader(
        ds,
        batch_size=64,
        engine=engine,
        shuffle="block",
        block_size=16384,
        cache_dir=str(cache),
        on_error=on_error,
    )
    seen = []
    for k, (x, y) in enumerate(dl):
        assert np.array_equal(x, data[y])
        seen.extend(y.tolist())
        if k == 1:  # moved away at once (rmtree races the readers ahead writing into it)
            os.rename(cache, tmp_path / "gone")
            shutil.rmtree(tmp_path / "gone", ignore_errors=True)
    assert sorted(seen) == list(range(N))
    assert sorted(epoch_of(dl, data)) == list(range(N))
    assert dl.report()["cache"]["skipped"] == 0 and os.listdir(cache / "blocks")
