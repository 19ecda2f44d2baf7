"""The node cache under a hostile folder: deleted under a running epoch, a file in the way
of one of its folders, its lock files gone, a limit smaller than one block. Each is read
on (the folder made again), a CacheError naming the folder, or with on_error="skip" a
counted skip that reads around the cache; never a raw OSError."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from fastload.errors import CacheError, CacheFullError
from fastload.storage.block_reader import BlockReader
from fastload.storage.cache import NodeCache
from tests.storage.test_block_reader import THREE, URI, expect, rows, s3  # noqa: F401
from tests.storage.test_cache import blob, get, put

MIB = 1 << 20


def _delete_all(d: str) -> None:
    shutil.rmtree(d)


def _delete_locks(d: str) -> None:
    shutil.rmtree(os.path.join(d, "locks"))


def _delete_tmp(d: str) -> None:
    shutil.rmtree(os.path.join(d, "tmp"))


@pytest.mark.parametrize("attack", [_delete_all, _delete_locks, _delete_tmp])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_folder_deleted_under_the_epoch_is_made_again(tmp_path, attack, on_error):
    # before: a raw FileNotFoundError of locks/<key> (also under on_error="skip")
    d = str(tmp_path / "c")
    c = NodeCache(d, on_error=on_error)
    put(c, 0, blob(0))
    attack(d)
    put(c, 1, blob(1))
    assert get(c, 1, 10_000) == blob(1).tobytes() and c.counters["skipped"] == 0
    c.trim()  # scanning a folder that lost its entries


def _file_in_the_way(c: NodeCache, i: int) -> None:
    key = c.key(f"s3://b/shard{i}", 0, 10_000)
    open(os.path.join(c.dir, "blocks", key[:2]), "w").close()


def test_a_file_in_the_way_is_a_cache_error_or_a_counted_skip(tmp_path):
    c = NodeCache(tmp_path / "r")
    _file_in_the_way(c, 1)
    with pytest.raises(CacheError, match=r"/r: cannot write a cache entry"):
        put(c, 1, blob(1))
    c = NodeCache(tmp_path / "s", on_error="skip")
    _file_in_the_way(c, 1)
    put(c, 1, blob(1))  # before: CacheError under on_error="skip" too
    assert c.counters["skipped"] == 1 and get(c, 1, 10_000) is None


def test_a_lock_file_that_cannot_be_made_is_a_cache_error(tmp_path):
    c = NodeCache(tmp_path / "c")
    key = c.key("s3://b/shard1", 0, 10_000)
    os.mkdir(os.path.join(c.dir, "locks", key))  # a folder where the lock file goes
    with pytest.raises(CacheError, match=r"/c: cannot create a lock file"):
        c.try_lock(key)  # before: a raw IsADirectoryError


def test_a_limit_below_one_block(tmp_path):
    c = NodeCache(tmp_path / "r", limit=1000)
    with pytest.raises(CacheFullError, match="larger than cache_limit=1000"):
        put(c, 0, blob(0))
    c = NodeCache(tmp_path / "s", limit=1000, on_error="skip")
    put(c, 0, blob(0))
    assert c.counters["skipped"] == 1 and get(c, 0, 10_000) is None


@pytest.mark.s3
def test_the_block_reader_reads_around_a_broken_folder(s3, tmp_path):  # noqa: F811
    engine, data = s3
    pairs = [(10, 100), (2 * MIB + 7, 4096)]
    table, n = rows(pairs)
    for on_error in ("raise", "skip"):
        cache = NodeCache(tmp_path / on_error, on_error=on_error)
        shutil.rmtree(os.path.join(cache.dir, "locks"))
        open(os.path.join(cache.dir, "locks"), "w").close()  # a file in the way of locks/
        r = BlockReader(engine, THREE, cache=cache)
        out = np.zeros(n, np.uint8)
        if on_error == "raise":
            with pytest.raises(CacheError, match=rf"{on_error}: cannot create a lock file"):
                r.read_into([URI], table, out)
            continue
        r.read_into([URI], table, out)  # before: a raw NotADirectoryError
        assert np.array_equal(out, expect(data, pairs))
        assert cache.stats()["skipped"] == 2


def test_stale_temporaries_that_cannot_be_removed_are_left(tmp_path):
    d = tmp_path / "c"
    NodeCache(d)
    (d / "tmp" / "somekey.999999999.2").mkdir()  # before: a raw IsADirectoryError at start-up
    (d / "tmp" / "junk").write_bytes(b"x")
    c = NodeCache(d)
    assert os.listdir(d / "tmp") == ["somekey.999999999.2"]
    put(c, 0, blob(0))
    assert get(c, 0, 10_000) == blob(0).tobytes()


def test_waiting_for_a_block_names_it_without_secrets():
    from types import SimpleNamespace

    from fastload.errors import CancelledReadError
    from fastload.storage.block_reader import _check_wait

    key = ("https://u:pw@h/s.tar?X-Amz-Signature=SECRET", 4096)
    with pytest.raises(CancelledReadError, match=r"https://u:\*\*\*@h/s.tar") as info:
        _check_wait(SimpleNamespace(cancelled=True), None, key)
    assert "SECRET" not in str(info.value) and "pw" not in str(info.value)
    with pytest.raises(TimeoutError, match="at byte 4096") as info:
        _check_wait(None, 0.0, key)
    assert "SECRET" not in str(info.value)


def test_a_long_url_is_cached_and_its_credentials_are_not_written(tmp_path):
    # before: a URI over ~4 KiB overflowed the header (never a hit again), and presigned
    # credentials were written into every entry's header
    c = NodeCache(tmp_path / "c")
    uri = "https://h/x.tar?X-Amz-Signature=SECRET" + "A" * 5000
    m = {"uri": uri, "start": 0, "length": 100, "size": 100, "tag": "t"}
    key = c.key(uri, 0, 100)
    fd = c.try_lock(key)
    assert fd is not None
    try:
        c.store(key, m, np.arange(100, dtype=np.uint8))
    finally:
        c.unlock(fd)
    hit = c.lookup(key, m)
    assert hit is not None
    os.close(hit)
    raw = open(c.entry_path(key), "rb").read()
    assert b"SECRET" not in raw and len(raw) == 4096 + 100
    assert c.lookup(key, {**m, "tag": "other"}) is None
