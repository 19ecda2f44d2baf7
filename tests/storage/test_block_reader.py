"""BlockReader (fastload.storage.block_reader) against the rclone S3 server: one request
per block, rows split at block ends, memory bounded, threads fetching a block once,
reading ahead, and shard versions checked at the first read."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from fastload.errors import ShardChangedError
from fastload.storage.block_reader import BlockReader
from fastload.storage.cache import NodeCache
from fastload.storage.engine import RangeEngine
from fastload.storage.object_version import object_version
from fastload.storage.read_settings import ReadSettings
from fastload.storage.uri import parse_uri
from tests.support.servers import start_rclone, stop

pytestmark = pytest.mark.s3

MIB = 1 << 20
URI = "s3://bucket/obj.bin"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3blocks")
    data = np.random.default_rng(5).integers(0, 256, 3 * MIB, dtype=np.uint8)
    (root / "bucket").mkdir()
    (root / "bucket" / "obj.bin").write_bytes(data.tobytes())
    server = start_rclone(str(root))
    engine = RangeEngine(**server.options)
    yield engine, data
    engine.close()
    stop(server)


THREE = {URI: (np.array([0, MIB, 2 * MIB]), np.array([MIB, 2 * MIB, 3 * MIB]))}


def rows(pairs):
    """A packed range table of (offset, length) pairs of source 0."""
    out, dst = [], 0
    for off, n in pairs:
        out.append((0, off, n, dst))
        dst += n
    return np.array(out, dtype=np.int64), dst


def expect(data, pairs):
    return np.concatenate([data[o : o + n] for o, n in pairs])


def requests(engine):
    return engine.backend("s3").stats()["requests"]


def test_one_request_per_block_then_from_memory(s3):
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB)
    pairs = [(10, 100), (MIB - 50, 50), (2 * MIB + 7, 4096), (2 * MIB + 9000, 10), (500, 1)]
    table, n = rows(pairs)
    out = np.zeros(n, np.uint8)
    before = requests(engine)
    r.read_into([URI], table, out)
    assert requests(engine) - before == 2  # blocks 0 and 2, one GET each
    assert np.array_equal(out, expect(data, pairs))
    out[:] = 0
    r.read_into([URI], table, out)
    assert requests(engine) - before == 2 and np.array_equal(out, expect(data, pairs))
    s = r.stats()
    assert s["block_fetches"] == 2 and s["memory_hits"] == 2 and s["block_bytes"] == 2 * MIB


def test_rows_across_block_ends_and_outside_blocks(s3):
    engine, data = s3
    gap = {URI: (np.array([0, 2 * MIB]), np.array([MIB, 3 * MIB]))}  # [1, 2) MiB: no block
    r = BlockReader(engine, gap, memory_bytes=8 * MIB)
    pairs = [(MIB - 100, 300), (MIB + 5, 10), (2 * MIB - 10, 20), (3 * MIB - 5, 5)]
    table, n = rows(pairs)
    out = np.zeros(n, np.uint8)
    r.read_into([URI], table, out)
    assert np.array_equal(out, expect(data, pairs))
    assert r.stats()["direct_rows"] >= 2 and r.stats()["block_fetches"] == 2


def test_memory_is_bounded_and_refetches_counted(s3):
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=MIB + MIB // 2)
    for off in (0, MIB, 2 * MIB, 0):
        table, n = rows([(off + 3, 1000)])
        out = np.zeros(n, np.uint8)
        r.read_into([URI], table, out)
        assert np.array_equal(out, data[off + 3 : off + 1003])
    s = r.stats()
    assert s["memory_held"] <= MIB + MIB // 2 and s["refetches"] == 1 and s["block_fetches"] == 4


def test_threads_fetch_a_block_once(s3):
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB)
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        pairs = [(int(o), 777) for o in rng.integers(0, 3 * MIB - 777, 20)]
        table, n = rows(pairs)
        out = np.zeros(n, np.uint8)
        try:
            r.read_into([URI], table, out)
            assert np.array_equal(out, expect(data, pairs))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors and r.stats()["block_fetches"] == 3


def test_planned_blocks_are_read_ahead(s3):
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB, ahead_bytes=8 * MIB)
    r.plan([(URI, 2 * MIB), (URI, 0), (URI, MIB)], ReadSettings(), None)
    end = time.monotonic() + 20
    while r.stats()["prefetched"] < 3 and time.monotonic() < end:
        time.sleep(0.01)
    before = requests(engine)
    table, n = rows([(5, 10), (MIB + 5, 10), (2 * MIB + 5, 10)])
    out = np.zeros(n, np.uint8)
    r.read_into([URI], table, out)
    assert requests(engine) == before and r.stats()["memory_hits"] == 3
    assert np.array_equal(out, expect(data, [(5, 10), (MIB + 5, 10), (2 * MIB + 5, 10)]))
    r.close()


def test_ahead_stays_within_its_budget(s3):
    engine, _ = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB, ahead_bytes=MIB)
    r.plan([(URI, 0), (URI, MIB), (URI, 2 * MIB)], ReadSettings(), None)
    time.sleep(0.5)
    assert r.stats()["block_fetches"] == 1  # one block ahead of a reader that has not started
    table, n = rows([(5, 10)])
    r.read_into([URI], table, np.zeros(n, np.uint8))  # the reader reaches block 0
    end = time.monotonic() + 20
    while r.stats()["block_fetches"] < 2 and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.3)
    assert r.stats()["block_fetches"] == 2
    r.close()


def test_ahead_never_fetches_blocks_the_readers_passed(s3):
    """A prefetcher that fell behind skips the blocks the readers already reached (they read
    those themselves): each block is fetched once, however the threads interleave."""
    engine, _ = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB, ahead_bytes=MIB)
    r.plan([(URI, 0), (URI, MIB), (URI, 2 * MIB)], ReadSettings(), None)
    end = time.monotonic() + 20
    while r.stats()["block_fetches"] < 1 and time.monotonic() < end:
        time.sleep(0.01)
    table, n = rows([(2 * MIB + 5, 10)])  # the readers jump to the last block
    r.read_into([URI], table, np.zeros(n, np.uint8))
    time.sleep(0.5)  # room for the prefetcher to (wrongly) go on with block 1
    assert r.stats()["block_fetches"] == 2 and r.stats()["refetches"] == 0
    r.close()


def wait_for(cond, seconds=20.0):
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def halves(block):
    """Two rows covering all of block ``block`` (a MiB)."""
    return [(block * MIB, MIB // 2), (block * MIB + MIB // 2, MIB // 2)]


def test_a_block_is_let_go_once_the_epoch_read_all_it_planned(s3):
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB, ahead_bytes=8 * MIB)
    keys = [(URI, 0), (URI, MIB), (URI, 2 * MIB)]
    r.plan(keys, ReadSettings(), None, uses=[MIB, MIB, MIB])
    assert wait_for(lambda: r.stats()["prefetched"] == 3)
    assert r.stats()["memory_held"] == 3 * MIB
    table, n = rows(halves(0)[:1])
    r.read_into([URI], table, np.zeros(n, np.uint8))
    assert r.stats()["memory_held"] == 3 * MIB  # half of block 0 is still to be read
    table, n = rows(halves(0)[1:])
    out = np.zeros(n, np.uint8)
    r.read_into([URI], table, out)
    assert np.array_equal(out, expect(data, halves(0)[1:]))
    assert r.stats()["memory_held"] == 2 * MIB  # all of it read: let go
    before = requests(engine)
    table, n = rows([(5, 10)])  # beyond the plan: fetched again, and counted
    r.read_into([URI], table, np.zeros(n, np.uint8))
    s = r.stats()
    assert requests(engine) - before == 1 and s["refetches"] == 1
    assert s["memory_held"] == 2 * MIB
    r.stop_ahead()  # the epoch ends: its blocks go
    assert r.stats()["memory_held"] == 0
    r.close()


def test_reads_before_the_plan_count_for_the_epoch(s3):
    """The loader's readers start before the epoch's plan arrives: what they fetched stays,
    what they read counts, and the prefetcher starts past them (no block fetched twice)."""
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB, ahead_bytes=8 * MIB)
    table, n = rows(halves(0)[:1])
    r.read_into([URI], table, np.zeros(n, np.uint8))
    keys = [(URI, 0), (URI, MIB), (URI, 2 * MIB)]
    r.plan(keys, ReadSettings(), None, uses=[MIB, MIB, MIB])
    assert wait_for(lambda: r.stats()["block_fetches"] == 3)
    got = []
    for b in (1, 0, 2):
        pairs = halves(b) if b else halves(0)[1:]
        table, n = rows(pairs)
        out = np.zeros(n, np.uint8)
        r.read_into([URI], table, out)
        got.append(np.array_equal(out, expect(data, pairs)))
    s = r.stats()
    assert all(got) and s["block_fetches"] == 3 and s["refetches"] == 0
    assert s["memory_held"] == 0  # every block read as planned: all let go
    r.close()


def test_reading_ahead_waits_for_memory_instead_of_evicting_unread_blocks(s3):
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=MIB + MIB // 2, ahead_bytes=8 * MIB)
    keys = [(URI, 0), (URI, MIB), (URI, 2 * MIB)]
    r.plan(keys, ReadSettings(), None, uses=[MIB, MIB, MIB])
    assert wait_for(lambda: r.stats()["block_fetches"] == 1)
    time.sleep(0.3)
    assert r.stats()["block_fetches"] == 1  # block 1 would not fit next to unread block 0
    for b in range(3):
        table, n = rows(halves(b))
        out = np.zeros(n, np.uint8)
        r.read_into([URI], table, out)
        assert np.array_equal(out, expect(data, halves(b)))
    s = r.stats()
    assert s["block_fetches"] == 3 and s["refetches"] == 0 and s["evicted_unread"] == 0
    assert s["memory_peak"] <= MIB + MIB // 2
    r.close()


def test_readers_that_need_more_than_memory_evict_and_count_it(s3):
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=MIB + MIB // 2)
    keys = [(URI, 0), (URI, MIB), (URI, 2 * MIB)]
    r.plan(keys, ReadSettings(), None, uses=[MIB, MIB, MIB])  # no room to read ahead
    first = [halves(0)[0], halves(1)[0]]  # both blocks half read: one has to go
    table, n = rows(first)
    r.read_into([URI], table, np.zeros(n, np.uint8))
    table, n = rows([halves(0)[1], halves(1)[1]])
    out = np.zeros(n, np.uint8)
    r.read_into([URI], table, out)
    assert np.array_equal(out, expect(data, [halves(0)[1], halves(1)[1]]))
    s = r.stats()
    assert s["evicted_unread"] == 1 and s["refetches"] == 1 and s["block_fetches"] == 3
    r.close()


def test_later_epochs_reuse_the_fetch_buffers(s3):
    """A fresh fetch buffer costs the kernel zeroing every page: once an epoch let its
    blocks go, the next one fetches into the buffers made before, whichever way its reads
    group the blocks into calls."""
    engine, data = s3
    r = BlockReader(engine, THREE, memory_bytes=8 * MIB)
    made = []
    for grouping in ([[0], [1], [2]], [[0, 1, 2]], [[2, 1], [0]], [[0, 1, 2]]):
        for group in grouping:
            pairs = [p for b in group for p in halves(b)]
            table, n = rows(pairs)
            out = np.zeros(n, np.uint8)
            r.read_into([URI], table, out)
            assert np.array_equal(out, expect(data, pairs))
        r.stop_ahead()  # the epoch ends: its blocks go, the buffers stay
        made.append(r.stats()["buffer_allocations"])
    assert made == [3, 3, 3, 3]
    assert r.stats()["block_fetches"] == 12 and r.stats()["refetches"] == 0
    r.close()


def test_versions_are_checked_at_the_first_read(s3, tmp_path):
    engine, data = s3
    now = object_version(engine, parse_uri(URI))
    table, n = rows([(1, 10)])
    ok = BlockReader(engine, THREE, memory_bytes=MIB * 4, versions={URI: now})
    ok.read_into([URI], table, np.zeros(n, np.uint8))
    stale = BlockReader(engine, THREE, versions={URI: (now[0] + 1, now[1])})
    with pytest.raises(ShardChangedError, match=r"obj.bin: the shard changed after it was indexed"):
        stale.read_into([URI], table, np.zeros(n, np.uint8))
    gone = "s3://bucket/gone.tar"
    r = BlockReader(engine, {}, versions={gone: (10, None)})
    with pytest.raises(ShardChangedError, match="gone.tar: the shard vanished"):
        r.read_into([gone], table, np.zeros(n, np.uint8))


def test_through_the_cache_then_from_disk(s3, tmp_path):
    engine, data = s3
    cache = NodeCache(tmp_path / "c")
    pairs = [(10, 100), (2 * MIB + 7, 4096)]
    table, n = rows(pairs)
    for expected_requests in (2, 0):
        r = BlockReader(engine, THREE, cache=cache)  # a new reader: nothing in memory
        before = requests(engine)
        out = np.zeros(n, np.uint8)
        r.read_into([URI], table, out)
        assert requests(engine) - before == expected_requests
        assert np.array_equal(out, expect(data, pairs))
    s = cache.stats()
    assert (s["misses"], s["hits"], s["bytes"]) == (2, 2, 2 * MIB)


def entry_path(cache, key):
    return cache.entry_path(cache.key(URI, key, MIB))


def local_reads(engine):
    return engine.backend("file").stats()["reads"]


def filled(engine, tmp_path):
    """A reader over a cache holding blocks 0 and 2 (read once), and the rows it read."""
    cache = NodeCache(tmp_path / "c")
    r = BlockReader(engine, THREE, cache=cache)
    pairs = [(10, 100), (2 * MIB + 7, 4096), (MIB - 300, 200), (2 * MIB + 9000, 10)]
    table, n = rows(pairs)
    r.read_into([URI], table, np.zeros(n, np.uint8))
    return cache, r, pairs, table, n


def test_cached_rows_of_every_block_in_one_local_read(s3, tmp_path):
    """From the cache, the rows of all a call's blocks are one native local read; an entry
    is checked (and its LRU time refreshed) once an epoch, not at every read."""
    engine, data = s3
    cache, r, pairs, table, n = filled(engine, tmp_path)
    path = entry_path(cache, 0)
    for _ in range(2):
        before, seen = local_reads(engine), os.stat(path).st_mtime_ns
        out = np.zeros(n, np.uint8)
        r.read_into([URI], table, out)
        assert np.array_equal(out, expect(data, pairs))
        assert local_reads(engine) - before == 1  # 4 rows of 2 entries: one call
    assert os.stat(path).st_mtime_ns == seen  # no second lookup in the same epoch
    time.sleep(0.05)  # (the filesystem's time must move on for the refresh to show)
    r.stop_ahead()  # the next epoch looks each entry up again: its LRU time moves
    r.read_into([URI], table, np.zeros(n, np.uint8))
    assert os.stat(path).st_mtime_ns > seen
    s = cache.stats()
    assert s["misses"] == 2 and s["hits"] == 6
    assert s["bytes_read"] == 3 * sum(length for _, length in pairs)  # (not the fill)
    r.close()


def test_a_cached_entry_gone_or_rewritten_is_not_trusted(s3, tmp_path):
    """An entry evicted, or rewritten for another version, after it was checked: its rows
    come from a fresh fetch (counted as a miss), never from the other file."""
    engine, data = s3
    cache, r, pairs, table, n = filled(engine, tmp_path)
    os.unlink(entry_path(cache, 0))  # evicted by another process
    before = requests(engine)
    out = np.zeros(n, np.uint8)
    r.read_into([URI], table, out)
    assert np.array_equal(out, expect(data, pairs)) and requests(engine) - before == 1
    rewritten(entry_path(cache, 2 * MIB))  # same name and size, another version
    out = np.zeros(n, np.uint8)
    r.read_into([URI], table, out)
    assert np.array_equal(out, expect(data, pairs)) and requests(engine) - before == 2
    assert cache.stats()["misses"] == 4
    r.close()


def rewritten(path):
    """The entry at ``path`` written again for another version of its object (another
    tag in its header, zeros for its bytes), renamed over it as a writer does."""
    raw = open(path, "rb").read()
    head = raw[:4096].replace(b'"tag"', b'"tAg"')
    assert head != raw[:4096]
    with open(path + ".new", "wb") as f:
        f.write(head + bytes(len(raw) - 4096))
    os.replace(path + ".new", path)


def test_an_entry_replaced_during_the_read_is_read_again(s3, tmp_path):
    """Another process renames a new entry (another version) over one while the batched
    read runs: that entry's rows are not kept from the file the read met; a fresh lookup
    refuses it and the block is fetched again."""
    engine, data = s3
    cache, r, pairs, table, n = filled(engine, tmp_path)
    path = entry_path(cache, 0)
    real = r._entries.engine

    class Racing:  # the engine the batched read uses, with a rename just before the read
        def read_into(self, *args, **kw):
            rewritten(path)
            real.read_into(*args, **kw)

    r._entries.engine = Racing()
    before = requests(engine)
    out = np.zeros(n, np.uint8)
    r.read_into([URI], table, out)
    assert np.array_equal(out, expect(data, pairs))  # not the zeros the read met
    assert requests(engine) - before == 1  # block 0 fetched again
    r.close()
