"""Datasets and the DataLoader over s3:// (rclone serve s3) and http:// through the same engine."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fastload.batch.ragged import RaggedBatch
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import NpyDataset, ObjectDataset, RecordDataset
from fastload.storage.engine import RangeEngine
from tests.support.loader_helpers import write_records
from tests.support.servers import start_rclone, stop

pytestmark = pytest.mark.s3

SHAPE = (16, 16, 3)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3loader")
    data = write_records(str(root / "bucket" / "recs"), 90, SHAPE, 3)
    np.save(root / "bucket" / "arr.npy", data[:40])
    blobs = [bytes([i]) * (100 + 50 * i) for i in range(7)]
    for i, b in enumerate(blobs):
        (root / "bucket" / "objs").mkdir(exist_ok=True)
        (root / "bucket" / "objs" / f"o{i}").write_bytes(b)
    server = start_rclone(str(root))  # after writing: rclone's listing cache sees everything
    engine = RangeEngine(**server.options)
    yield engine, data, blobs
    engine.close()
    stop(server)


@pytest.mark.parametrize("reader_mode", ["sequential", "range"])
def test_records_on_s3_shuffled_normalised(s3, reader_mode):
    engine, data, _ = s3
    ds = RecordDataset("s3://bucket/recs/", SHAPE, labels=np.arange(90), engine=engine)
    assert len(ds) == 90 and len(ds.uris) == 3
    dl = DataLoader(
        ds,
        batch_size=16,
        shuffle=True,
        engine=engine,
        reader_mode=reader_mode,
        part_size=4096,
        memory_format="channels_first",
        dtype=np.float32,
        mean=[10, 20, 30],
        std=[2, 2, 2],
    )
    seen = []
    for x, y in dl:
        ref = (data[y].transpose(0, 3, 1, 2) - np.reshape([10, 20, 30], (1, 3, 1, 1))) / 2
        assert np.allclose(x, ref)
        seen.extend(y.tolist())
    assert sorted(seen) == list(range(90))


def test_npy_rows_and_objects_on_s3(s3):
    engine, data, blobs = s3
    ds = NpyDataset("s3://bucket/arr.npy", engine=engine)
    assert np.array_equal(ds[3], data[3])  # __getitem__ reads with the dataset's engine
    x = next(iter(DataLoader(ds, batch_size=40, engine=engine)))
    assert np.array_equal(x, data[:40])
    objs = ObjectDataset("s3://bucket/objs/", engine=engine)
    assert objs.sizes.tolist() == [len(b) for b in blobs]
    batch = next(iter(DataLoader(objs, batch_size=7, engine=engine)))
    assert isinstance(batch, RaggedBatch) and [batch.sample(i).tobytes() for i in range(7)] == blobs


def test_missing_object_on_s3_names_it(s3):
    engine, _, _ = s3
    ds = ObjectDataset(
        ["s3://bucket/objs/o1", "s3://bucket/objs/nope"], sizes=[150, 10], engine=engine
    )
    with pytest.raises(FileNotFoundError, match="s3://bucket/objs/nope"):
        list(DataLoader(ds, batch_size=2, engine=engine))


def _first_read_connects(network_options, dataset_spec, **knobs):
    """New connections a fresh engine opens for one batch of every record, shuffled."""
    with RangeEngine(**network_options) as engine:
        ds = RecordDataset(dataset_spec, SHAPE, labels=np.arange(90), engine=engine)
        dl = DataLoader(ds, batch_size=90, shuffle=True, prefetch=1, engine=engine, **knobs)
        x, y = next(iter(dl))
        assert len(y) == 90
        depth = dl.report()["max_inflight_parts"]
        dl.close()
        return engine.backend("s3").stats()["connects"], depth


def test_network_reads_default_to_a_deeper_inflight_depth(s3):
    """No max_inflight_parts given: s3 reads keep 32 GETs in flight (4 for local files)."""
    engine = s3[0]
    connects, depth = _first_read_connects(engine.network_options, "s3://bucket/recs/")
    # ~60 separate records, one GET each, all 32 slots filled at once: one connection per slot.
    assert depth == 32 and connects > 16
    connects, depth = _first_read_connects(
        engine.network_options, "s3://bucket/recs/", max_inflight_parts=4
    )
    assert depth == 4 and connects <= 4


def test_local_files_keep_four_reader_threads(tmp_path):
    write_records(str(tmp_path), 20, SHAPE, 1)
    dl = DataLoader(RecordDataset(str(tmp_path), SHAPE), batch_size=4)
    assert dl.report()["max_inflight_parts"] == 4 and dl.engine.inflight_for("file") == 4
    dl.close()


@pytest.mark.http
@pytest.mark.parametrize("server", ["http_server", "https_server"])
def test_records_over_http(server, request, tls_ca):
    srv = request.getfixturevalue(server)
    data = write_records(srv.root + "/h", 30, SHAPE, 2)
    uris = [srv.url(f"h/shard-{i:03d}.bin") for i in range(2)]
    with RangeEngine(ca_bundle=tls_ca.ca) as engine:
        ds = RecordDataset(uris, SHAPE, labels=np.arange(30), engine=engine)
        for mode in ("range", "sequential"):
            seen = []
            for x, y in DataLoader(
                ds,
                batch_size=8,
                shuffle=True,
                engine=engine,
                reader_mode=mode,
                part_size=4096,
                dtype=np.float32,
                memory_format="channels_first",
            ):
                assert np.array_equal(x, data[y].transpose(0, 3, 1, 2).astype(np.float32))
                seen.extend(y.tolist())
            assert sorted(seen) == list(range(30))
        assert engine.backend(srv.scheme).stats()["requests"] > 0


def test_a_stalled_s3_read_is_cancelled_when_the_loop_stops(s3, silent_server):
    """Closing the epoch while a GET waits on a server that never answers: the epoch's
    cancel token stops the native read (C polls the flag without the GIL), so the
    reader thread ends instead of waiting forever."""
    opts = {
        **s3[0].network_options,
        "endpoint_url": f"http://127.0.0.1:{silent_server}",
        "low_speed_time": 0,
    }
    with RangeEngine(**opts) as engine:
        ds = ObjectDataset(
            [f"s3://bucket/objs/o{i}" for i in range(7)],
            sizes=[100 + 50 * i for i in range(7)],
            engine=engine,
        )
        dl = DataLoader(ds, batch_size=7, prefetch=1, engine=engine)
        it = iter(dl)  # the reader starts at once
        readers = [t for t in threading.enumerate() if t.name.startswith("fastload-reader")]
        for _ in range(500):  # until the GETs are sent
            if engine.backend("s3").stats()["requests"] == 7:
                break
            threading.Event().wait(0.01)
        assert readers and engine.backend("s3").stats()["requests"] == 7
        it.close()  # joins the reader (up to 10 s): it must be done, not waiting on the server
        assert not any(t.is_alive() for t in readers)
        dl.close()


def test_network_reads_take_the_measured_part_size_unless_one_is_set(http_server):
    """LoaderOptions.part_size unset: http(s)/s3 objects go in 32 MiB parts (the sweep's
    default), not the 8 MiB ones local files keep; a set part_size still acts."""
    data = bytes(range(256)) * (40 << 12)  # 40 MiB
    url = http_server.put("big.bin", data)

    def gets(**knobs: object) -> int:
        with RangeEngine() as engine:
            ds = ObjectDataset([url], engine=engine)
            loader = DataLoader(ds, batch_size=1, engine=engine, reader_mode="range", **knobs)
            before = engine.backend("http").stats()["requests"]
            (batch,) = list(loader)
            assert bytes(batch[0]) == data
            assert loader.report()["part_size"] == knobs.get("part_size", 32 << 20)
            return engine.backend("http").stats()["requests"] - before

    assert gets() == 2  # 40 MiB in 32 MiB parts
    assert gets(part_size=8 << 20) == 5
