"""The fsspec filesystem on the engine: its methods on local files and S3 (an rclone server
of its own over Parquet and zarr data), and pyarrow, pandas and zarr reading through it."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
fsspec = pytest.importorskip("fsspec")

import fastload  # noqa: E402
from fastload.adapters.fsspec_fs import FastloadFileSystem, register  # noqa: E402
from tests.support.servers import ACCESS_KEY, SECRET_KEY, payload, start_rclone, stop  # noqa: E402

ROWS = 50_000


def _table():
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "id": np.arange(ROWS, dtype=np.int64),
            "x": rng.random(ROWS),
            "label": rng.integers(0, 10, ROWS).astype(np.int32),
            "name": [f"row-{i}" for i in range(ROWS)],
        }
    )


# zarr (v3) starts asyncio IO threads that live as long as the process; run in this one,
# they would be alive when later tests fork worker processes. So zarr runs in a child.
ZARR_WRITE = """
import sys, numpy as np, zarr
arr = zarr.create_array(sys.argv[1], shape=(64, 32), chunks=(8, 32), dtype="f4")
arr[:] = np.arange(64 * 32, dtype="f4").reshape(64, 32)
"""
ZARR_READ = """
import json, sys, numpy as np, zarr
from fastload.adapters.fsspec_fs import register
register()  # as the test in this process does (the entry point has its own test)
opts = json.loads(sys.argv[1])
arr = zarr.open_array("fastload://s3://lake/arr.zarr", mode="r", storage_options=opts)
assert arr.shape == (64, 32), arr.shape
want = np.arange(64 * 32, dtype="f4").reshape(64, 32)[10:20, 5]
assert np.array_equal(arr[10:20, 5], want), arr[10:20, 5]
print("ok")
"""


def _in_subprocess(code: str, *args: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder with bucket ``lake``: a Parquet file, a zarr array and small blobs; and an
    ``rclone serve s3`` over it (started after the data is written)."""
    root = tmp_path_factory.mktemp("lake")
    lake = root / "lake"
    (lake / "tables").mkdir(parents=True)
    pq.write_table(_table(), lake / "tables" / "t.parquet", row_group_size=8_000)
    blobs = {}
    for i in range(5):
        rel = f"blobs/{'deep/' if i >= 3 else ''}b{i}.bin"
        os.makedirs(lake / os.path.dirname(rel), exist_ok=True)
        (lake / rel).write_bytes(data := payload(1000 + i, i))
        blobs[rel] = data
    pytest.importorskip("zarr")
    _in_subprocess(ZARR_WRITE, str(lake / "arr.zarr"))  # zarr's IO threads stay there
    server = start_rclone(str(root))
    yield root, blobs, server
    stop(server)


@pytest.fixture
def s3fs_(store, clean_aws_env):
    _, _, server = store
    fs = fastload.filesystem(**server.options, skip_instance_cache=True)
    yield fs
    fs.engine.close()


def test_entry_point_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(os.path.dirname(fastload.__file__), "..", "pyproject.toml"), "rb") as f:
        eps = tomllib.load(f)["project"]["entry-points"]["fsspec.specs"]
    module, _, cls = eps["fastload"].partition(":")
    assert getattr(__import__(module, fromlist=[cls]), cls) is FastloadFileSystem


def test_local_methods(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a.bin").write_bytes(b"0123456789")
    (tmp_path / "d" / "e" / "b.bin").write_bytes(b"xy")
    fs = fastload.filesystem()
    d = str(tmp_path / "d")
    assert fs.cat_file(f"{d}/a.bin") == b"0123456789"
    assert fs.cat_file(f"{d}/a.bin", 2, 5) == b"234"
    assert fs.cat_file(f"{d}/a.bin", -3) == b"789" and fs.cat_file(f"{d}/a.bin", 8, 100) == b"89"
    assert fs.cat_file(f"{d}/a.bin", 5, 2) == b""
    assert fs.info(f"{d}/a.bin")["size"] == 10 and fs.info(d)["type"] == "directory"
    assert fs.ls(d, detail=False) == [f"{d}/a.bin", f"{d}/e"]
    assert fs.find(d) == [f"{d}/a.bin", f"{d}/e/b.bin"]
    assert fs.find(d, maxdepth=1) == [f"{d}/a.bin"]
    # with withdirs the folder itself too, as fsspec's own local filesystem (posix glob)
    assert fs.find(d, withdirs=True) == [d, f"{d}/a.bin", f"{d}/e", f"{d}/e/b.bin"]
    assert fs.find(d, withdirs=True) == fsspec.filesystem("file").find(d, withdirs=True)
    assert fs.glob(f"{d}/**/*.bin") == [f"{d}/a.bin", f"{d}/e/b.bin"]
    assert fs.glob(f"{d}/e/**") == fsspec.filesystem("file").glob(f"{d}/e/**")
    assert fs.exists(f"{d}/a.bin") and not fs.exists(f"{d}/nope")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{d}/nope")
    with fs.open(f"{d}/a.bin") as f:
        f.seek(3)
        assert f.read(4) == b"3456" and f.tell() == 7
        f.seek(-2, 2)
        assert f.read() == b"89"
    with pytest.raises(NotImplementedError, match="read-only"):
        fs.open(f"{d}/new.bin", "wb")
    with pytest.raises(NotImplementedError, match="read-only"):
        fs.rm(f"{d}/a.bin")
    assert (tmp_path / "d" / "a.bin").exists()


def test_cat_ranges_one_engine_call_and_coalescing(tmp_path):
    data = payload(1 << 20, 3)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data[::-1])
    fs = fastload.filesystem(skip_instance_cache=True)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    paths = [a, b, a, a, b, a, str(tmp_path / "nope")]
    starts = [0, 10, 100, 200_000, -5, 50, 0]
    ends = [100, 20, 150, 200_100, None, 60, 1]
    got = fs.cat_ranges(paths, starts, ends, max_gap=1000)
    assert got[:6] == [
        data[0:100],
        data[::-1][10:20],
        data[100:150],
        data[200_000:200_100],
        data[::-1][-5:],
        data[50:60],
    ]
    assert isinstance(got[6], FileNotFoundError)
    stats = fs.engine.backend("file").stats()
    # a's [0,150) ranges joined (gap 0), a's 200k range apart; b's two apart: 4 reads
    assert stats["requests"] == 4
    with pytest.raises(FileNotFoundError):
        fs.cat_ranges(paths, starts, ends, on_error="raise")
    with pytest.raises(ValueError, match="7 paths, 2 starts"):
        fs.cat_ranges(paths, [0, 1], ends)


def test_pickles_and_protocol_urls(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    register()
    with fsspec.open(f"fastload://{tmp_path}/f") as f:
        assert f.read() == b"hello"
    fs, path = fsspec.core.url_to_fs(f"fastload://file://{tmp_path}/f")
    assert isinstance(fs, FastloadFileSystem) and path == f"file://{tmp_path}/f"
    assert fs.cat_file(path) == b"hello"
    again = pickle.loads(pickle.dumps(fs))
    assert again.cat_file(path) == b"hello"


@pytest.mark.s3
def test_s3_methods(store, s3fs_):
    _, blobs, _ = store
    fs = s3fs_
    assert fs.cat_file("s3://lake/blobs/b1.bin") == blobs["blobs/b1.bin"]
    assert fs.cat_file("fastload://s3://lake/blobs/b1.bin", 10, 20) == blobs["blobs/b1.bin"][10:20]
    assert fs.info("s3://lake/blobs")["type"] == "directory"
    info = fs.info("s3://lake/blobs/b0.bin")
    assert info["size"] == 1000 and info["type"] == "file"
    assert fs.ls("s3://lake/blobs", detail=False) == [
        "s3://lake/blobs/b0.bin",
        "s3://lake/blobs/b1.bin",
        "s3://lake/blobs/b2.bin",
        "s3://lake/blobs/deep",
    ]
    assert fs.find("s3://lake/blobs") == sorted(f"s3://lake/{k}" for k in blobs)
    assert fs.find("s3://lake/blobs", maxdepth=1, withdirs=True)[-1] == "s3://lake/blobs/deep"
    assert fs.glob("s3://lake/blobs/deep/*.bin") == [
        "s3://lake/blobs/deep/b3.bin",
        "s3://lake/blobs/deep/b4.bin",
    ]
    assert fs.exists("s3://lake/blobs/b2.bin") and fs.exists("s3://lake/blobs/deep")
    assert not fs.exists("s3://lake/blobs/nope.bin")
    got = fs.cat_ranges([f"s3://lake/{k}" for k in blobs], [0] * 5, [100] * 5, on_error="raise")
    assert got == [b[:100] for b in blobs.values()]
    with fs.open("s3://lake/blobs/deep/b4.bin", block_size=4096) as f:
        f.seek(1000)
        assert f.read() == blobs["blobs/deep/b4.bin"][1000:]


@pytest.mark.s3
def test_pyarrow_read_table_and_iter_batches_over_s3(s3fs_):
    want = _table()
    path = "s3://lake/tables/t.parquet"
    got = pq.read_table(path, filesystem=s3fs_, columns=["id", "name"])
    assert got.equals(want.select(["id", "name"]))
    pf = pq.ParquetFile(path, filesystem=s3fs_)
    assert pf.metadata.num_row_groups == 7
    seen = np.concatenate(
        [b.column("x").to_numpy() for b in pf.iter_batches(batch_size=5000, columns=["x"])]
    )
    assert np.array_equal(seen, want.column("x").to_numpy())
    assert pq.read_table(path, filesystem=s3fs_, filters=[("label", "=", 3)]).num_rows == int(
        (want.column("label").to_numpy() == 3).sum()
    )
    # the column chunks after the first row group's came from background reads
    stats = s3fs_.column_read_ahead_stats()
    assert stats["taken"] >= 6 and stats["taken"] <= stats["read_ahead"]


@pytest.mark.s3
def test_pandas_and_zarr_through_the_protocol(store, clean_aws_env):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("zarr")
    _, _, server = store
    register()
    df = pd.read_parquet(
        "fastload://s3://lake/tables/t.parquet", columns=["label"], storage_options=server.options
    )
    assert df["label"].to_numpy().tolist() == _table().column("label").to_pylist()
    # zarr reads through the fastload:// protocol in a child (see ZARR_WRITE's note)
    assert _in_subprocess(ZARR_READ, json.dumps(server.options)).strip() == "ok"


def test_access_key_never_in_repr(store):
    _, _, server = store
    fs = FastloadFileSystem(**server.options, skip_instance_cache=True)
    assert SECRET_KEY not in repr(fs) and ACCESS_KEY in str(server.options)


def test_open_reads_ahead_only_when_sequential_in_one_engine_call(tmp_path):
    data = payload(16 << 20, 5)
    (tmp_path / "big").write_bytes(data)
    fs = fastload.filesystem(skip_instance_cache=True, block_size=1 << 20, part_size=1 << 20)
    with fs.open(str(tmp_path / "big")) as f:
        f.seek(5 << 20)
        assert f.read(100) == data[5 << 20 : (5 << 20) + 100]  # random: exactly what it asked
        assert f.cache.total_requested_bytes == 100
        assert f.read(100) == data[(5 << 20) + 100 : (5 << 20) + 200]  # sequential: + 1 MiB
        assert f.cache.total_requested_bytes == 100 + 100 + (1 << 20)
        assert f.read(1000) == data[(5 << 20) + 200 : (5 << 20) + 1200]  # inside: no request
        assert f.cache.hit_count == 1 and f.cache.miss_count == 2
        before = fs.engine.backend("file").stats()["requests"]
        f.seek(0)
        assert f.read(8 << 20) == data[: 8 << 20]
        # one 8 MiB read: one engine call, 8 parallel parts of the engine's 1 MiB part_size
        assert fs.engine.backend("file").stats()["requests"] - before == 8
        # a sequential read of a block or more (a column chunk) fetches just its bytes
        asked = f.cache.total_requested_bytes
        assert f.read(2 << 20) == data[8 << 20 : 10 << 20]
        assert f.cache.total_requested_bytes - asked == 2 << 20


def test_pyarrow_reads_through_read_buffer_without_a_copy(tmp_path, monkeypatch):
    from fastload.adapters.fsspec_fs import FastloadFile

    path = str(tmp_path / "t.parquet")
    pq.write_table(_table(), path, row_group_size=10_000)
    fs = fastload.filesystem(skip_instance_cache=True)
    with fs.open(path) as f:
        view = f.read_buffer(4)
        assert isinstance(view, memoryview) and view == b"PAR1" and f.tell() == 4
        assert f.read(0) == b"" and f.read_buffer(-1).nbytes == f.size - 4

    def no_read(self, length=-1):
        raise AssertionError("pyarrow called read(): it copies")

    monkeypatch.setattr(FastloadFile, "read", no_read)
    assert pq.read_table(path, filesystem=fs, columns=["id"]).equals(_table().select(["id"]))


@pytest.mark.s3
def test_slash_form_paths_and_hugging_face_datasets(store, s3fs_, tmp_path):
    """``s3/bucket/key`` names ``s3://bucket/key`` and names come back in the form asked:
    loaders that read any ``://`` in a path as a URL of its own (datasets) need it."""
    _, blobs, server = store
    fs = s3fs_
    assert fs.cat_file("s3/lake/blobs/b1.bin") == blobs["blobs/b1.bin"]
    assert fs.ls("fastload://s3/lake/blobs", detail=False)[0] == "s3/lake/blobs/b0.bin"
    assert fs.info("s3/lake/blobs/b0.bin")["name"] == "s3/lake/blobs/b0.bin"
    assert fs.glob("s3/lake/blobs/deep/*.bin") == [
        "s3/lake/blobs/deep/b3.bin",
        "s3/lake/blobs/deep/b4.bin",
    ]
    with fs.open("s3/lake/blobs/b2.bin") as f:
        assert f.read() == blobs["blobs/b2.bin"]
    datasets = pytest.importorskip("datasets")
    register()
    datasets.disable_progress_bars()  # no tqdm monitor thread left to later (forking) tests
    try:
        ds = datasets.load_dataset(
            "parquet",
            data_files="fastload://s3/lake/tables/*.parquet",
            storage_options=server.options,
            split="train",
            cache_dir=str(tmp_path / "hf"),
        )
    finally:
        datasets.enable_progress_bars()
        for t in threading.enumerate():  # tqdm subclasses each keep a monitor of their own
            if t.name == "tqdm_monitor":
                t.exit()
    assert ds.num_rows == ROWS and ds[7]["name"] == "row-7"
