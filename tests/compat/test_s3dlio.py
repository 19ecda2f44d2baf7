"""fastload.compat.s3dlio: s3dlio-style scripts (written from s3dlio's documented Python API)
on local files and on the rclone S3 fixture."""

from __future__ import annotations

import asyncio
import importlib.util
import pickle

import numpy as np
import pytest

import fastload
import fastload.compat.s3dlio as s3dlio
from fastload.errors import ObjectNotFoundError
from tests.support.network import expected
from tests.support.servers import ACCESS_KEY, S3_OBJECTS, SECRET_KEY, payload

SIZES = [100, 0, 4097, 33, 1 << 16]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """file:// objects f0..f4 and a sub-folder; a fresh module engine."""
    monkeypatch.setattr(s3dlio, "_engine", None)
    monkeypatch.setattr(s3dlio, "_engine_options", {})
    blobs = {}
    for i, n in enumerate(SIZES):
        (tmp_path / f"f{i}.bin").write_bytes(data := payload(n, i))
        blobs[f"f{i}.bin"] = data
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.npz").write_bytes(data := payload(10, 99))
    blobs["sub/g.npz"] = data
    return f"file://{tmp_path}/", blobs


def test_get_get_range_and_bytes_view(tree):
    root, blobs = tree
    data = s3dlio.get(root + "f0.bin")
    assert isinstance(data, s3dlio.BytesView) and len(data) == 100
    assert data == blobs["f0.bin"] and bytes(data) == blobs["f0.bin"]
    assert data.to_bytes() == blobs["f0.bin"] and data.memoryview() == blobs["f0.bin"]
    assert data != blobs["f2.bin"] and data != b"" and (data == 5) is False
    assert (
        np.frombuffer(data, dtype=np.uint8).sum() == np.frombuffer(blobs["f0.bin"], np.uint8).sum()
    )
    assert repr(data) == "BytesView(100 bytes)"
    assert s3dlio.get_range(root + "f2.bin", offset=1024, length=5) == blobs["f2.bin"][1024:1029]
    assert s3dlio.get_range(root + "f2.bin", 4000) == blobs["f2.bin"][4000:]
    assert s3dlio.get_range(root + "f2.bin", 4097) == b""
    with pytest.raises(ValueError, match="past the end"):
        s3dlio.get_range(root + "f2.bin", 5000)
    with pytest.raises(ObjectNotFoundError, match="nope.bin"):
        s3dlio.get(root + "nope.bin")


def test_get_many_pairs_in_order(tree):
    root, blobs = tree
    uris = [root + f"f{i}.bin" for i in (3, 0, 1, 4)]
    got = s3dlio.get_many(uris, max_in_flight=8)
    assert [u for u, _ in got] == uris
    assert [bytes(v) for _, v in got] == [blobs[u.rsplit("/", 1)[1]] for u in uris]
    assert all(isinstance(v, s3dlio.BytesView) for _, v in got)


def test_list_stat_exists(tree):
    root, blobs = tree
    top = s3dlio.list(root)
    assert top == [root + f"f{i}.bin" for i in range(5)] + [root + "sub/"]
    assert s3dlio.list(root, recursive=True)[-1] == root + "sub/g.npz"
    assert s3dlio.list(root, recursive=True, pattern=r"\.npz$") == [root + "sub/g.npz"]
    assert s3dlio.list(root, pattern="^f1") == [root + "f1.bin"]
    meta = s3dlio.stat(root + "f4.bin")
    assert meta["size"] == 1 << 16 and meta["last_modified"].startswith("20")
    assert s3dlio.exists(root + "f4.bin") and not s3dlio.exists(root + "nope.bin")
    assert not s3dlio.exists("gs://bucket/k")  # as s3dlio: any failure is False
    with pytest.raises(ObjectNotFoundError, match="nope.bin"):
        s3dlio.stat(root + "nope.bin")


def test_writes_are_not_covered():
    with pytest.raises(AttributeError, match="does not cover writes \\(put_bytes\\)"):
        s3dlio.put_bytes("s3://b/k", b"x")
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        s3dlio.nonsense  # noqa: B018


def test_dataset_and_bytes_loader_script(tree):
    root, blobs = tree
    ds = s3dlio.create_dataset(root)
    assert len(ds) == 6 and ds.keys()[0] == "f0.bin" and ds.keys()[-1] == "sub/g.npz"
    assert ds.uris()[1] == root + "f1.bin"
    assert asyncio.run(ds.get_item(2)) == blobs["f2.bin"]
    loader = s3dlio.PyBytesAsyncDataLoader(ds, {"prefetch": 16, "batch_size": 4})
    assert loader.options.config.max_inflight_parts == 16  # s3dlio's prefetch: GETs in flight
    got = [bytes(view) for view in loader]  # sync: one view per object
    assert got == [blobs[k] for k in ds.keys()]

    async def batches():
        return [[bytes(v) for v in b] async for b in loader]

    assert [len(b) for b in asyncio.run(batches())] == [4, 2]
    items = loader.items()
    first = items.collect_batch(5)
    assert [it.uri for it in first] == ds.uris()[:5]
    assert [len(it) for it in first] == [it.byte_count for it in first] == SIZES
    assert bytes(first[2]) == blobs["f2.bin"]
    assert [it.uri for it in items.collect_batch(5)] == ds.uris()[5:]
    assert items.collect_batch(5) == []


def test_loader_knobs_act(tree):
    root, blobs = tree
    ds = s3dlio.PyDataset.from_uris([root + f"f{i}.bin" for i in range(5)])
    plain = [bytes(v) for v in s3dlio.PyBytesAsyncDataLoader(ds, {"batch_size": 2})]
    mixed = [bytes(v) for v in s3dlio.PyBytesAsyncDataLoader(ds, {"shuffle": True, "seed": 3})]
    assert plain == [blobs[f"f{i}.bin"] for i in range(5)]
    assert sorted(mixed) == sorted(plain) and mixed != plain

    async def count(opts):
        return [len(b) async for b in s3dlio.create_async_loader(root, opts)]

    assert asyncio.run(count({"batch_size": 4, "drop_last": True})) == [4]
    with pytest.raises(ValueError, match="Parquet mode"):
        s3dlio.create_async_loader(root, {"format": "parquet"})
    with pytest.raises(ValueError, match="unknown s3dlio loader option 'bogus'"):
        s3dlio.PyBytesAsyncDataLoader(ds, {"bogus": 1})
    with pytest.raises(ValueError, match="list of URIs is empty"):
        s3dlio.PyDataset.from_uris([])


def test_vec_dataset_loader_sync_and_async():
    ds = s3dlio.PyVecDataset([10, 20, 30, 40, 50])
    loader = s3dlio.PyAsyncDataLoader(ds, {"batch_size": 2, "drop_last": False, "shuffle": False})
    assert list(loader) == [[10, 20], [30, 40], [50]]

    async def collect(opts):
        return [b async for b in s3dlio.PyAsyncDataLoader(ds, opts)]

    assert asyncio.run(collect({"batch_size": 2, "drop_last": True})) == [[10, 20], [30, 40]]
    shuffled = asyncio.run(collect({"batch_size": 5, "shuffle": True, "seed": 42}))
    assert sorted(shuffled[0]) == [10, 20, 30, 40, 50] and shuffled[0] != [10, 20, 30, 40, 50]
    opts = s3dlio.PyLoaderOptions().with_batch_size(3)
    assert list(s3dlio.PyAsyncDataLoader(ds, opts)) == [[10, 20, 30], [40, 50]]
    with pytest.raises(TypeError, match="PyVecDataset or PyDataset"):
        s3dlio.PyAsyncDataLoader([1, 2], {})


def test_async_loading_lets_the_event_loop_run(tree):
    """async for waits on a thread: other tasks run between batches."""
    root, _ = tree
    ticks = []

    async def ticker():
        for _ in range(50):
            ticks.append(1)
            await asyncio.sleep(0)

    async def main():
        t = asyncio.create_task(ticker())
        async for _ in s3dlio.create_async_loader(root, {"batch_size": 1}):
            pass
        await t

    asyncio.run(main())
    assert len(ticks) == 50


S3DLIO_TO_DICT = {  # the keys and defaults s3dlio 0.10's PyLoaderOptions().to_dict() gives
    "batch_size": 32,
    "drop_last": False,
    "shuffle": False,
    "seed": 0,
    "num_workers": 0,
    "prefetch": 0,
    "auto_tune": False,
    "pin_memory": False,
    "persistent_workers": False,
    "timeout_seconds": None,
    "non_blocking": False,
    "shard_rank": 0,
    "shard_world_size": 1,
    "generator_seed": None,
    "enable_transforms": False,
    "collate_buffer_size": 1024,
    "multiprocessing_context": "spawn",
    "memory_format": "auto",
    "sampler_type": "sequential",
    "sampler_replacement": None,
    "sampler_rank": None,
    "sampler_world_size": None,
}


def test_from_dict_takes_s3dlio_to_dict_output():
    opts = fastload.LoaderOptions.from_dict(S3DLIO_TO_DICT)
    cfg = opts.config
    assert (cfg.shard_rank, cfg.shard_world_size, cfg.prefetch, cfg.replacement) == (0, 1, 2, False)
    dist = {
        **S3DLIO_TO_DICT,
        "sampler_type": "distributed_random",
        "sampler_rank": 1,
        "sampler_world_size": 4,
    }
    cfg = fastload.LoaderOptions.from_dict(dist).config
    assert (cfg.sampler_type, cfg.shard_rank, cfg.shard_world_size) == ("distributed_random", 1, 4)
    rnd = {**S3DLIO_TO_DICT, "sampler_type": "random", "sampler_replacement": True, "prefetch": 3}
    cfg = s3dlio.PyLoaderOptions.from_dict(rnd).config
    assert cfg.replacement and cfg.prefetch == 3
    with pytest.raises(ValueError, match="prefetch=0 is invalid"):  # a fastload dict stays strict
        fastload.LoaderOptions.from_dict({"prefetch": 0})
    # and fastload's own round trip is unchanged
    o = fastload.LoaderOptions(batch_size=7, shuffle=True)
    assert fastload.LoaderOptions.from_dict(o.to_dict()) == o
    assert pickle.loads(pickle.dumps(o)) == o


@pytest.mark.skipif(importlib.util.find_spec("s3dlio") is None, reason="s3dlio is not installed")
def test_from_dict_of_the_real_s3dlio(tree):
    import s3dlio as real

    for o in (
        real.PyLoaderOptions(),
        real.PyLoaderOptions().distributed_sampling(2, 3),
        real.PyLoaderOptions().random_sampling(True).prefetch(5).with_batch_size(8),
        real.PyLoaderOptions().gpu_optimized(),
    ):
        cfg = fastload.LoaderOptions.from_dict(o.to_dict()).config
        d = o.to_dict()
        assert cfg.batch_size == d["batch_size"] and cfg.sampler_type == d["sampler_type"]
        assert cfg.shard_rank == (d["sampler_rank"] if d["sampler_rank"] is not None else 0)
    root, blobs = tree
    theirs = real.get(root + "f2.bin")
    assert s3dlio.get(root + "f2.bin") == bytes(theirs)  # same bytes, ours also == bytes


@pytest.fixture
def s3(rclone_s3, monkeypatch, clean_aws_env):
    monkeypatch.setattr(s3dlio, "_engine", None)
    monkeypatch.setattr(s3dlio, "_engine_options", {})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    s3dlio.configure_s3(endpoint_url=rclone_s3.endpoint, region="us-east-1")
    yield rclone_s3
    s3dlio.engine().close()


@pytest.mark.s3
def test_s3_script(s3):
    """The s3dlio quick start's read half, against S3."""
    key = "data/small/obj-005.bin"
    data = s3dlio.get(f"s3://{key}")
    assert len(data) == S3_OBJECTS[key][0] and data == expected(key)
    assert s3dlio.get_range(f"s3://{key}", offset=0, length=5) == expected(key)[:5]
    objects = s3dlio.list("s3://data/small/")
    assert objects[0] == "s3://data/small/obj-000.bin" and len(objects) == 40
    assert s3dlio.list("s3://data/", pattern="^big")[0] == "s3://data/big.bin"
    assert "s3://data/small/" in s3dlio.list("s3://data/")
    meta = s3dlio.stat(f"s3://{key}")
    assert meta["size"] == S3_OBJECTS[key][0] and meta["last_modified"]
    assert s3dlio.exists(f"s3://{key}") and not s3dlio.exists("s3://data/small/nope")
    got = s3dlio.get_many(objects[:12], max_in_flight=4)
    assert [bytes(v) for _, v in got] == [expected(u[5:]) for u in objects[:12]]

    async def epoch():
        loader = s3dlio.create_async_loader("s3://data/small/", {"batch_size": 16})
        return [[bytes(v) for v in batch] async for batch in loader]

    batches = asyncio.run(epoch())
    assert [len(b) for b in batches] == [16, 16, 8]
    assert [v for b in batches for v in b] == [expected(u[5:]) for u in objects]
