"""read_many: many whole objects in one engine call (local files, http, s3 on rclone)."""

from __future__ import annotations

import numpy as np
import pytest

import fastload
from fastload.errors import ObjectNotFoundError
from fastload.storage.engine import RangeEngine
from fastload.storage.read_many import ALIGN, _pool, slab_bytes
from tests.support.network import expected
from tests.support.servers import S3_OBJECTS, payload


@pytest.fixture
def objects(tmp_path):
    sizes = [0, 1, 63, 64, 65, 4096, 100_000, 7, 0, 333]
    paths, blobs = [], []
    for i, n in enumerate(sizes):
        p = tmp_path / f"o{i:02d}.bin"
        data = payload(n, i)
        p.write_bytes(data)
        paths.append(str(p))
        blobs.append(data)
    return paths, blobs


def test_every_object_whole_in_order_and_aligned(objects):
    paths, blobs = objects
    with RangeEngine() as eng:
        got = eng.read_many(paths)
    assert len(got) == len(paths)
    for view, data in zip(got, blobs, strict=True):
        assert isinstance(view, memoryview) and not view.readonly
        assert view == data and bytes(view) == data and len(view) == len(data)
    # every object starts on a cache line of the one slab (numpy views of any dtype align)
    starts = [np.frombuffer(v, np.uint8).ctypes.data for v in got if len(v)]
    assert all(a % ALIGN == 0 for a in starts)
    assert max(starts) - min(starts) < slab_bytes([len(b) for b in blobs])


def test_module_function_and_uri_forms(objects):
    paths, blobs = objects
    uris = [paths[0], f"file://{paths[5]}", f"direct://{paths[6]}"]
    got = fastload.read_many(uris)
    assert [bytes(v) for v in got] == [blobs[0], blobs[5], blobs[6]]
    assert fastload.read_many([]) == []


def test_sizes_given_skip_the_size_pass_and_are_checked(objects, tmp_path):
    paths, blobs = objects
    with RangeEngine() as eng:
        got = eng.read_many(paths[5:7], sizes=[10, 20])  # a prefix of each object
        assert bytes(got[0]) == blobs[5][:10] and bytes(got[1]) == blobs[6][:20]
        with pytest.raises(ValueError, match="sizes has 1 entries for 2 URIs"):
            eng.read_many(paths[5:7], sizes=[10])
        with pytest.raises(ValueError, match=r"sizes\[1\].*o06.bin.*=-1 is invalid"):
            eng.read_many(paths[5:7], sizes=[10, -1])
        with pytest.raises(ValueError, match="o05.bin"):  # past the end: the engine names it
            eng.read_many(paths[5:6], sizes=[len(blobs[5]) + 1])


def test_errors_name_the_uri(objects, tmp_path):
    paths, _ = objects
    missing = str(tmp_path / "nope.bin")
    with RangeEngine() as eng:
        with pytest.raises(ObjectNotFoundError, match="nope.bin"):
            eng.read_many([paths[1], missing])
        with pytest.raises(fastload.FastloadError, match=str(tmp_path)):
            eng.read_many([str(tmp_path)])  # a folder is not an object
        with pytest.raises(TypeError, match="sequence of URIs"):
            eng.read_many(paths[1])
        with pytest.raises(ValueError, match="unsupported scheme"):
            eng.read_many(["gs://b/k"])


def test_out_buffer(objects):
    paths, blobs = objects
    need = slab_bytes([len(b) for b in blobs])
    out = np.zeros(need, dtype=np.uint8)
    with RangeEngine() as eng:
        got = eng.read_many(paths, out=out)
        assert [bytes(v) for v in got] == blobs
        assert np.frombuffer(got[6], np.uint8).base is not None
        with pytest.raises(ValueError, match=f"holds {need - 1} bytes, {need} are needed"):
            eng.read_many(paths, out=np.zeros(need - 1, np.uint8))
        with pytest.raises(ValueError, match="read-only"):
            eng.read_many(paths, out=bytes(need))
        with pytest.raises(TypeError, match="buffer protocol"):
            eng.read_many(paths, out=object())


def test_slab_is_reused_only_when_no_view_is_alive(objects):
    paths, blobs = objects
    with RangeEngine() as eng:
        first = eng.read_many(paths)
        pool = _pool(eng)
        assert pool.allocations == 1
        kept = eng.read_many(paths)  # ``first`` is alive: its slab must not be overwritten
        assert pool.allocations == 2
        assert [bytes(v) for v in first] == blobs and [bytes(v) for v in kept] == blobs
        del first
        again = eng.read_many(paths)  # the first slab is free again
        assert pool.allocations == 2
        assert [bytes(v) for v in again] == blobs


def test_settings_reach_the_read(objects):
    paths, _ = objects
    from fastload.storage.read_settings import ReadSettings

    with RangeEngine() as eng:
        eng.read_many(paths, settings=ReadSettings(part_size=4096, max_inflight_parts=1))
        # part_size 4096 cut the 100,000-byte object into 25 preads (plus one per other object)
        assert eng.backend("file").stats()["requests"] == 25 + 7


@pytest.mark.http
def test_http_objects_sized_in_parallel(http_server):
    blobs = [payload(1000 + i, i) for i in range(5)]
    urls = [http_server.put(f"h{i}.bin", b) for i, b in enumerate(blobs)]
    with RangeEngine() as eng:
        assert [bytes(v) for v in eng.read_many(urls)] == blobs
        with pytest.raises(ObjectNotFoundError, match="missing.bin"):
            eng.read_many([urls[0], http_server.url("missing.bin")])


@pytest.mark.s3
@pytest.mark.usefixtures("clean_aws_env")
def test_s3_sizes_from_a_few_listing_pages(rclone_s3):
    keys = sorted(k for k in S3_OBJECTS if k.startswith("data/small/"))
    uris = [f"s3://{k}" for k in keys]
    with RangeEngine(list_page_size=7, **rclone_s3.options) as eng:
        got = eng.read_many(uris[3:30])
        assert [bytes(v) for v in got] == [expected(k) for k in keys[3:30]]
        backend = eng.backend("s3")
        # 27 keys at 7 per page from just before the first one: 4-5 pages, no HEAD per key
        assert all(backend.known_size(fastload.uri.parse_uri(u)) is not None for u in uris[3:30])
        assert not backend.known_size(fastload.uri.parse_uri(uris[35]))


@pytest.mark.s3
@pytest.mark.usefixtures("clean_aws_env")
def test_s3_few_keys_are_headed_and_errors_name_the_key(rclone_s3):
    keys = ["data/big.bin", "data/odd name+chars é.bin"]
    with RangeEngine(**rclone_s3.options) as eng:
        got = eng.read_many([f"s3://{k}" for k in keys])
        assert [bytes(v) for v in got] == [expected(k) for k in keys]
        with pytest.raises(ObjectNotFoundError, match="s3://data/small/nope.bin"):
            eng.read_many(["s3://data/small/obj-001.bin", "s3://data/small/nope.bin"])


@pytest.mark.s3
@pytest.mark.usefixtures("clean_aws_env")
def test_s3_listing_is_bounded_for_sparse_keys(rclone_s3):
    """The listing window stops after its page budget; HEADs cover the keys it missed."""
    keys = sorted(k for k in S3_OBJECTS if k.startswith("data/"))
    with RangeEngine(list_page_size=1, **rclone_s3.options) as eng:
        backend = eng.backend("s3")
        prefix = fastload.uri.parse_uri("s3://data/")
        assert backend.list_pages_after(prefix, keys[4][5:-1], keys[-1][5:], 3) == 3
        known = [k for k in keys if backend.known_size(fastload.uri.parse_uri(f"s3://{k}"))]
        assert known == keys[4:7]  # three pages of one key from just before keys[4]
        sparse = [keys[0], *keys[-15:]]  # 16 keys, 32 others between the first two
        got = eng.read_many([f"s3://{k}" for k in sparse])
        assert [bytes(v) for v in got] == [expected(k) for k in sparse]
