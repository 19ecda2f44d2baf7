"""ParquetDataset: rows read by ranged reads of their row groups, batches through the collate
kernel, and the loader's knobs (shuffle over row groups and rows, ranks, resume)."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from fastload import DataLoader, LoaderOptions, RaggedBatch  # noqa: E402
from fastload.plan.parquet_dataset import ParquetDataset, RowGroupSampler  # noqa: E402
from fastload.storage.engine import RangeEngine  # noqa: E402
from tests.support.servers import start_rclone, stop  # noqa: E402

N = 600
SHAPE = (4, 4, 3)


def _table(n=N, seed=0):
    rng = np.random.default_rng(seed)
    pix = rng.integers(0, 256, (n, int(np.prod(SHAPE))), dtype=np.uint8)
    return (
        pa.table(
            {
                "pix": pa.array([r.tobytes() for r in pix], pa.binary(pix.shape[1])),
                "emb": pa.FixedSizeListArray.from_arrays(
                    pa.array(rng.random(n * 5).astype(np.float32)), 5
                ),
                "y": np.arange(n, dtype=np.int64) + seed * 10_000,
                "a": np.arange(n, dtype=np.float32),
                "b": np.arange(n, dtype=np.int32) * 2,
                "jpeg": pa.array([bytes([i % 251]) * (i % 9 + 1) for i in range(n)], pa.binary()),
                "s": [f"s{i}" for i in range(n)],
            }
        ),
        pix,
    )


@pytest.fixture
def files(tmp_path):
    paths, tables = [], []
    for k, rg in enumerate((50, 64, 100)):
        t, pix = _table(seed=k)
        p = tmp_path / f"part-{k}.parquet"
        pq.write_table(t, p, row_group_size=rg)
        paths.append(str(p))
        tables.append((t, pix))
    return paths, tables


def _by_label(tables):
    """label -> (record, emb row, jpeg bytes) of every row of every file."""
    out = {}
    for t, pix in tables:
        emb = t.column("emb").combine_chunks().flatten().to_numpy().reshape(-1, 5)
        for i, y in enumerate(t.column("y").to_pylist()):
            out[y] = (pix[i].reshape(SHAPE), emb[i], t.column("jpeg")[i].as_py())
    return out


def test_records_through_the_collate_kernel(files):
    paths, tables = files
    ds = ParquetDataset(paths, columns=["pix"], label="y", shape=SHAPE)
    assert len(ds) == 3 * N and ds.sample_shape == SHAPE and ds.layout == "HWC"
    assert ds.group_rows.tolist()[:3] == [50] * 3 and len(ds.group_rows) == 12 + 10 + 6
    dl = DataLoader(
        ds, batch_size=64, memory_format="channels_first", dtype=np.float32, mean=[1, 2, 3]
    )
    want = _by_label(tables)
    seen = []
    for x, y in dl:
        assert x.shape[1:] == (3, 4, 4) and x.dtype == np.float32
        for xi, yi in zip(x, y.tolist(), strict=True):
            ref = (
                want[yi][0].transpose(2, 0, 1).astype(np.float32)
                - np.array([1, 2, 3])[:, None, None]
            )
            assert np.array_equal(xi, ref)
            seen.append(yi)
    assert seen == [y for t, _ in tables for y in t.column("y").to_pylist()]  # in file order
    assert ds.reads == len(ds.group_rows)  # each row group read once
    assert ds[7][1] == 7 and np.array_equal(ds[7][0], want[7][0])


def test_fixed_size_list_and_scalar_columns(files):
    paths, tables = files
    want = _by_label(tables)
    ds = ParquetDataset(paths[:1], columns=["emb"], label="y")
    x, y = next(iter(DataLoader(ds, batch_size=10)))
    assert x.shape == (10, 5) and x.dtype == np.float32
    assert all(np.array_equal(x[i], want[int(y[i])][1]) for i in range(10))
    ds = ParquetDataset(paths[1], columns=["a", "b"], label="y", dtype=np.float64)
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.tolist() == [[0, 0], [1, 2], [2, 4], [3, 6]] and x.dtype == np.float64
    assert y.tolist() == [10_000, 10_001, 10_002, 10_003]


def test_image_column_gives_raw_bytes_ragged_batches(files):
    paths, tables = files
    want = _by_label(tables)
    ds = ParquetDataset(paths, image="jpeg", label="y")
    assert ds.sample_shape is None
    b, y = next(iter(DataLoader(ds, batch_size=9, shuffle=True)))
    assert isinstance(b, RaggedBatch) and len(b) == 9
    assert [bytes(s) for s in b] == [want[int(v)][2] for v in y]
    with pytest.raises(ValueError, match="fixed-shape"):
        DataLoader(ds, dtype=np.float32)


def test_shuffle_over_row_groups_and_rows(files):
    paths, _ = files
    ds = ParquetDataset(paths, columns=["a"], label="y")
    dl = DataLoader(ds, batch_size=32, shuffle=True, seed=4)
    epochs, reads = [], []
    for e in range(2):
        dl.set_epoch(e)
        epochs.append(np.concatenate([y for _, y in dl]))
        reads.append(ds.reads)
    assert sorted(epochs[0].tolist()) == sorted(ds._labels.tolist())  # every row once
    assert not np.array_equal(epochs[0], epochs[1])
    # rows of a row group stay together (a batch touches one or two groups), shuffled inside
    group, _ = ds.locate(_index_of(ds, epochs[0]))
    changes = int((np.diff(group) != 0).sum())
    assert changes == len(ds.group_rows) - 1
    assert list(epochs[0][:50]) != sorted(epochs[0][:50])
    # once per group in the first epoch; the second finds a few still cached
    assert reads[0] == len(ds.group_rows) and reads[1] <= 2 * len(ds.group_rows)


def _index_of(ds, labels):
    lookup = {int(v): i for i, v in enumerate(ds._labels.tolist())}
    return np.array([lookup[int(v)] for v in labels])


def test_ranks_take_disjoint_row_groups_and_resume(files):
    paths, _ = files
    shares = []
    for rank in range(3):
        ds = ParquetDataset(paths, columns=["a"], label="y")
        opts = LoaderOptions(batch_size=40, shuffle=True, seed=9).distributed_sampling(rank, 3)
        ys = np.concatenate([y for _, y in DataLoader(ds, opts)])
        assert len(ys) == 600  # 1800 rows / 3 ranks
        shares.append(set(ys.tolist()))
        assert ds.reads <= len(ds.group_rows) // 3 + 2  # its own row groups only
    assert not (shares[0] & shares[1]) and not (shares[1] & shares[2])
    assert len(shares[0] | shares[1] | shares[2]) == 1800

    ds = ParquetDataset(paths, columns=["a"], label="y")
    dl = DataLoader(ds, batch_size=50, shuffle=True, seed=2)
    it = iter(dl)
    first = [next(it)[1] for _ in range(3)]
    state = dl.state_dict()
    rest = [y for _, y in it]
    again = DataLoader(
        ParquetDataset(paths, columns=["a"], label="y"), batch_size=50, shuffle=True, seed=2
    )
    again.load_state_dict(state)
    resumed = [y for _, y in again]
    assert len(first) + len(resumed) == len(dl)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, rest, strict=True))


def test_sampler_pads_and_drops_the_rank_tail():
    rows = np.array([5, 5, 3])  # 13 rows over 2 ranks: 7 each padded, 6 dropped
    pad = RowGroupSampler(rows, rank=1, world_size=2, drop_last=False)
    cut = RowGroupSampler(rows, rank=1, world_size=2, drop_last=True)
    assert pad.indices(0).tolist() == [7, 8, 9, 10, 11, 12, 0]
    assert cut.indices(0).tolist() == [6, 7, 8, 9, 10, 11]
    shuffled = RowGroupSampler(rows, shuffle=True, seed=1)
    a, b = shuffled.indices(0), shuffled.indices(1)
    assert sorted(a.tolist()) == list(range(13)) and not np.array_equal(a, b)
    assert np.array_equal(a, RowGroupSampler(rows, shuffle=True, seed=1).indices(0))


def test_errors_name_the_file_and_column(files, tmp_path):
    paths, _ = files
    with pytest.raises(ValueError, match="columns=.*or image="):
        ParquetDataset(paths, columns=["a"], image="jpeg")
    with pytest.raises(ValueError, match="no column 'nope'"):
        ParquetDataset(paths, columns=["nope"])
    with pytest.raises(ValueError, match="column 's' is string"):
        ParquetDataset(paths, columns=["s"])
    with pytest.raises(ValueError, match=r"shape=\(4, 4, 4\) holds 64 values"):
        ParquetDataset(paths, columns=["pix"], shape=(4, 4, 4))
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match="x.parquet: not a Parquet file"):
        ParquetDataset([str(bad)], columns=["a"])
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1.0]}), other)
    with pytest.raises(ValueError, match="other.parquet: its schema differs"):
        ParquetDataset([paths[0], str(other)], columns=["a"])
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"a": [1.0, None]}), nulls)
    with pytest.raises(ValueError, match="has nulls"):
        list(DataLoader(ParquetDataset(str(nulls), columns=["a"]), batch_size=2))


def test_read_table_reads_row_groups_as_pyarrow_does(files):
    paths, tables = files
    ds = ParquetDataset(paths, columns=["a", "b"], label="y")
    whole = pa.concat_tables([t for t, _ in tables])
    assert ds.read_table().equals(whole.select(["a", "b", "y"]))
    # row groups in the order given, across files (file 0 has 12 of 50 rows, file 1 10 of 64)
    got = ds.read_table(["s", "jpeg"], row_groups=[13, 0, 11])
    want = pa.concat_tables(
        [
            tables[1][0].slice(64, 64).select(["s", "jpeg"]),
            tables[0][0].slice(0, 50).select(["s", "jpeg"]),
            tables[0][0].slice(550, 50).select(["s", "jpeg"]),
        ]
    )
    assert got.equals(want)
    assert ds.read_table(row_groups=[]).num_rows == 0
    with pytest.raises(ValueError, match="no column 'nope'"):
        ds.read_table(["nope"])
    with pytest.raises(ValueError, match="row group 99 is out of range"):
        ds.read_table(row_groups=[99])


@pytest.mark.s3
def test_over_s3(files, tmp_path, clean_aws_env):
    paths, tables = files
    root = tmp_path / "s3root"
    (root / "lake").mkdir(parents=True)
    for p in paths:
        (root / "lake" / p.rsplit("/", 1)[1]).write_bytes(open(p, "rb").read())
    server = start_rclone(str(root))
    try:
        with RangeEngine(**server.options) as eng:
            ds = ParquetDataset("s3://lake/", columns=["pix"], label="y", shape=SHAPE, engine=eng)
            assert len(ds) == 3 * N
            want = _by_label(tables)
            with DataLoader(ds, batch_size=100, shuffle=True, engine=eng) as dl:
                for x, y in dl:
                    assert all(np.array_equal(x[i], want[int(y[i])][0]) for i in range(len(y)))
            assert ds.reads == len(ds.group_rows)
            # read_table: every chunk of every row group in one engine call, one request
            # per chunk (each is smaller than a part)
            chunks = sum(len(ds._chunks(g, ["pix", "y"])) for g in range(len(ds.group_rows)))
            before = eng.backend("s3").stats()["requests"]
            got = ds.read_table()
            assert eng.backend("s3").stats()["requests"] - before == chunks
            whole = pa.concat_tables([t for t, _ in tables]).select(["pix", "y"])
            assert got.equals(whole)
    finally:
        stop(server)
