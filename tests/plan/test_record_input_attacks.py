"""Bad and unusual inputs to the record-style datasets (RecordDataset, NpyDataset,
ParquetDataset): each is named (file, row group, knob) or read byte-exactly as numpy /
pyarrow read it; none wraps around, divides by zero, allocates what a header claims, or
raises a bare pyarrow / OverflowError."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from fastload import DataLoader
from fastload.plan.datasets import NpyDataset, ObjectDataset, RecordDataset

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from fastload.errors import ObjectChangedError, ParquetFormatError  # noqa: E402
from fastload.plan.parquet_dataset import ParquetDataset  # noqa: E402
from fastload.storage.engine import RangeEngine  # noqa: E402


def _strict(call):
    """``call()`` with numpy's warnings as errors (a divide by zero is a bug, not a 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return call()


def _all(ds, batch_size=7, **kw):
    """Every batch of a loader over ``ds``, as one array (and labels when it has them)."""
    xs, ys = [], []
    with DataLoader(ds, batch_size=batch_size, **kw) as dl:
        for b in dl:
            if isinstance(b, tuple):
                xs.append(np.asarray(b[0]))
                ys.append(np.asarray(b[1]))
            else:
                xs.append(np.asarray(b))
    return xs, ys


# -- RecordDataset ------------------------------------------------------------------------


@pytest.fixture
def shard(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(bytes(range(200)) * 5)  # 1000 bytes
    return str(path)


@pytest.mark.parametrize("dtype", ["V0", "U0", np.dtype([])])
def test_a_record_of_zero_bytes_is_refused_by_name(shard, dtype):
    """A 0-byte dtype made every record 0 bytes: a divide by zero, then a dataset of 0s."""
    with pytest.raises(ValueError, match=r"RecordDataset: record_shape=\(10,\) of .* 0 bytes"):
        _strict(lambda: RecordDataset(shard, (10,), dtype))


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((2**31, 2**31, 4), np.float32),  # 2**64 bytes: wrapped to 0 (divide by zero)
        ((2**62, 3), np.uint8),  # wrapped to a negative record size
        ((2**62, 2), np.uint8),  # exactly 2**63: one past int64
    ],
)
def test_a_record_whose_size_wraps_int64_is_refused(shard, shape, dtype):
    with pytest.raises(ValueError, match=r"is a record of \d+ bytes, more than any object"):
        _strict(lambda: RecordDataset(shard, shape, dtype))


@pytest.mark.parametrize("shape", [(2**64,), (1.5,), (True,), (3, 2.0), ("4",), ()])
def test_record_shape_takes_integers_only(shard, shape):
    """int() took 1.5 as 1, True as 1 and 2.0 as 2 without a word; 2**64 was an
    OverflowError."""
    with pytest.raises(ValueError, match="record_shape must be a tuple of positive integers"):
        RecordDataset(shard, shape)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"header_bytes": 2**63}, r"header_bytes=9223372036854775808 is invalid: too large"),
        ({"header_bytes": 2**64}, "header_bytes=18446744073709551616 is invalid: too large"),
        ({"header_bytes": 0.5}, "header_bytes=0.5 is invalid: must be an integer"),
        ({"header_bytes": -1}, "header_bytes=-1 is invalid: must be >= 0"),
        ({"record_stride": 2**63}, "record_stride=9223372036854775808 is invalid: too large"),
        ({"record_stride": 10.5}, r"record_stride=10.5 is invalid: must be an integer"),
        ({"record_stride": 0}, "record_stride=0 is invalid: must be >= 1"),
        ({"sizes": [2**64]}, r"sizes gives 18446744073709551616 for .*a\.bin"),
        ({"sizes": [-10]}, r"sizes gives -10 for .*a\.bin"),
        ({"sizes": [1000.0]}, r"sizes gives 1000.0 for .*a\.bin"),
        ({"sizes": [1000, 1000]}, r"sizes must be one byte count per object \(1\), got list of 2"),
        ({"sizes": 1000}, r"sizes must be one byte count per object \(1\), got int"),
        ({"sizes": np.zeros((1, 1), np.int64)}, "sizes must be one byte count per object"),
    ],
)
def test_offsets_and_sizes_beyond_int64_name_the_knob(shard, kw, match):
    """They were bare OverflowErrors, or taken: sizes=[1000, 1000] for one file made a
    dataset of 200 records, half of them in a second file that does not exist."""
    with pytest.raises(ValueError, match=match):
        _strict(lambda: RecordDataset(shard, (10,), np.uint8, **kw))


def test_object_dataset_sizes_are_checked_the_same_way(shard):
    with pytest.raises(ValueError, match=r"ObjectDataset: sizes gives 18446744073709551616"):
        ObjectDataset([shard], sizes=[2**64])
    with pytest.raises(ValueError, match=r"ObjectDataset: sizes must be one byte count"):
        ObjectDataset([shard], sizes=[1, 2])


def test_record_dtype_that_is_not_one_names_it(shard):
    with pytest.raises(TypeError, match="RecordDataset: dtype='nonsense' is not a dtype"):
        RecordDataset(shard, (10,), "nonsense")


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            {"record_shape": (2000,)},
            r"a\.bin: 1000 bytes is not a 0-byte header plus whole records of 2000",
        ),
        (
            {"record_shape": (300,)},
            r"a\.bin: 1000 bytes is not a 0-byte header plus whole records of 300",
        ),
        (
            {"record_shape": (10,), "header_bytes": 2000},
            r"a\.bin: 1000 bytes is not a 2000-byte header",
        ),
        (
            {"record_shape": (10,), "record_stride": 2**62},
            r"a\.bin: 1000 bytes .* stride of 4611686018427387904",
        ),
    ],
)
def test_records_larger_than_the_file_or_a_tail_name_the_file(shard, kw, match):
    with pytest.raises(ValueError, match=match):
        _strict(lambda: RecordDataset(shard, **kw))


def test_many_shards_one_empty_read_exactly(tmp_path):
    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 256, (n, 6), dtype=np.uint8) for n in (5, 0, 9, 0, 1)]
    paths = []
    for i, p in enumerate(parts):
        (tmp_path / f"s{i}.bin").write_bytes(p.tobytes())
        paths.append(str(tmp_path / f"s{i}.bin"))
    ds = RecordDataset(paths, (2, 3), np.uint8, layout="")
    want = np.concatenate(parts).reshape(-1, 2, 3)
    assert len(ds) == len(want) and ds.counts.tolist() == [5, 0, 9, 0, 1]
    xs, _ = _all(ds, batch_size=4)
    assert np.array_equal(np.concatenate(xs), want)
    assert np.array_equal(ds[14], want[14])
    # only empty shards: an empty dataset, and an empty epoch
    empty = RecordDataset([paths[1], paths[3]], (2, 3), np.uint8)
    assert len(empty) == 0 and _all(empty)[0] == []


# -- NpyDataset ---------------------------------------------------------------------------


def _npy_header(text: str, major: int = 1) -> bytes:
    prefix = 10 if major == 1 else 12
    text += " " * ((64 - (prefix + len(text) + 1) % 64) % 64) + "\n"
    body = text.encode("utf8" if major == 3 else "latin1")
    size = struct.pack("<H", len(body)) if major == 1 else struct.pack("<I", len(body))
    return b"\x93NUMPY" + bytes([major, 0]) + size + body


def _npy(tmp_path, name, descr="<f4", shape="(4, 3)", fortran="False", data=b"\0" * 48, major=1):
    head = _npy_header(
        f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}", major
    )
    path = tmp_path / name
    path.write_bytes(head + data)
    return str(path)


@pytest.mark.parametrize(
    "shape, match",
    [
        ("(100, 3)", r"header promises 1328 bytes, the file has 176"),  # larger than the file
        ("(-1, 3)", r"shape \(-1, 3\) is not a tuple of non-negative integers"),
        ("(4, -3)", r"shape \(4, -3\) is not a tuple"),  # was a dataset of -12-byte samples
        (f"({2**70}, 3)", "is not a tuple of non-negative integers"),  # was an OverflowError
        # int64 products that wrapped to 0 bytes and passed the size check
        (f"({2**62}, 4)", r"header promises 73786976294838206592 bytes, the file has 176"),
        (f"({2**32}, {2**32})", r"header promises \d+ bytes, the file has 176"),
        ("(2.7,)", r"shape \(2.7,\) is not a tuple"),
        ("(True, 3)", r"shape \(True, 3\) is not a tuple"),
        ("5", "shape 5 is not a tuple"),
    ],
)
def test_npy_shapes_that_lie_are_named(tmp_path, shape, match):
    path = _npy(tmp_path, "x.npy", shape=shape)
    with pytest.raises(ValueError, match=r"x\.npy: .*" + match):
        _strict(lambda: NpyDataset(path))


def test_npy_rows_of_zero_bytes_cannot_outnumber_the_file(tmp_path):
    """Rows of 0 bytes take no room: a header could claim 2**40 of them (a sampler of
    2**40 indices); a few are a valid dataset."""
    big = _npy(tmp_path, "big.npy", shape=f"({2**40}, 0)", data=b"")
    with pytest.raises(ValueError, match=r"big\.npy: .* 1099511627776 rows of 0 bytes"):
        NpyDataset(big)
    void = _npy(tmp_path, "void.npy", descr="|V0", shape=f"({2**40},)", data=b"")
    with pytest.raises(ValueError, match=r"void\.npy: .* rows of 0 bytes"):
        NpyDataset(void)
    np.save(tmp_path / "few.npy", np.zeros((5, 0), np.float32))
    ds = NpyDataset(str(tmp_path / "few.npy"))
    assert len(ds) == 5 and ds.sample_shape == (0,) and ds[4].shape == (0,)


def test_npy_dtypes_and_orders(tmp_path):
    path = _npy(tmp_path, "o.npy", descr="|O", shape="(6,)")
    with pytest.raises(ValueError, match=r"o\.npy: .npy arrays of Python objects"):
        NpyDataset(path)
    path = _npy(tmp_path, "f.npy", shape="(4, 3)", fortran="True")
    with pytest.raises(ValueError, match=r"f\.npy: Fortran-ordered"):
        NpyDataset(path)
    path = _npy(tmp_path, "s.npy", shape="(4, 3)", fortran="'no'")
    with pytest.raises(ValueError, match=r"s\.npy: malformed .npy header: fortran_order 'no'"):
        NpyDataset(path)  # bool('no') was True: "Fortran-ordered", for a file that is not
    # 1-D Fortran order is C order: read as numpy reads it
    arr = np.arange(12, dtype=np.float32)
    np.save(tmp_path / "f1.npy", np.asfortranarray(arr))
    ds = NpyDataset(str(tmp_path / "f1.npy"))
    assert np.array_equal(np.concatenate(_all(ds)[0]), np.load(tmp_path / "f1.npy"))


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(60, dtype=">f4").reshape(20, 3),
        np.arange(40, dtype=">i8").reshape(10, 4) - 20,
        np.array(
            [(i, -i * 1000, i / 3) for i in range(9)],
            dtype=[("a", "u1"), ("b", ">i4"), ("c", "<f8")],
        ),
    ],
    ids=["big-endian f4", "big-endian i8", "structured"],
)
def test_npy_byte_orders_and_records_read_exactly(tmp_path, arr):
    np.save(tmp_path / "a.npy", arr)
    ds = NpyDataset(str(tmp_path / "a.npy"))
    assert ds.dtype == arr.dtype and len(ds) == len(arr)
    xs = _all(ds, batch_size=4, shuffle=False)[0]  # (np.concatenate would make them native)
    assert all(x.dtype == arr.dtype for x in xs)
    assert b"".join(x.tobytes() for x in xs) == np.load(tmp_path / "a.npy").tobytes()
    assert ds[len(arr) - 1].tobytes() == arr[-1].tobytes()


@pytest.mark.parametrize("major, pad", [(2, 70_000), (3, 70_000), (3, 10)])
def test_npy_version_2_and_3_headers_over_64_kib(tmp_path, major, pad):
    arr = np.arange(24, dtype=np.uint8).reshape(8, 3)
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': (8, 3), }" + " " * pad
    path = tmp_path / "h.npy"
    head = _npy_header(text, major)
    path.write_bytes(head + arr.tobytes())
    assert np.array_equal(np.load(path, max_header_size=1 << 20), arr)  # the reference
    ds = NpyDataset(str(path))
    assert ds.first_offset[0] == len(head) and np.array_equal(np.concatenate(_all(ds)[0]), arr)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x93NUMPY\x01", "7 bytes is too short for a .npy file"),
        (b"\x93NUMPY\x02\x00\x10\x00", "truncated .npy header"),
        (b"\x93NUMPY\x04\x00" + b"\0" * 20, "unsupported .npy format version 4"),
        (b"\x93NUMPY\x01\x00\xff\xff{'descr'", r"\.npy header claims 65545 bytes, the file has 18"),
        (b"\x93NUMPY\x03\x00\x04\x00\x00\x00\xff\xfe\xfd\n" + b"\0" * 8, "malformed .npy header"),
    ],
)
def test_npy_truncated_and_lying_headers(tmp_path, data, match):
    (tmp_path / "t.npy").write_bytes(data)
    with pytest.raises(ValueError, match=r"t\.npy: " + match):
        NpyDataset(str(tmp_path / "t.npy"))


def test_an_npy_header_length_that_lies_allocates_nothing(tmp_path):
    """A version-2 length field of 4 GiB made the dataset read (and allocate) 4 GiB of
    header; 16 MiB is the most it now reads."""
    path = tmp_path / "h.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'" + b" " * 100)
    code = textwrap.dedent(
        f"""
        import tracemalloc
        tracemalloc.start()
        from fastload.plan.datasets import NpyDataset
        try:
            NpyDataset({str(path)!r})
        except ValueError as exc:
            print("ERR", exc)
        print("PEAK", tracemalloc.get_traced_memory()[1])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ERR" in out.stdout and "more than the 16777216 read at most" in out.stdout, out
    peak = int(out.stdout.split("PEAK")[1])
    assert peak < 64 << 20, peak


def test_npy_zero_length_arrays(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((0, 3), np.float32))
    ds = NpyDataset(str(tmp_path / "z.npy"))
    assert len(ds) == 0 and ds.sample_shape == (3,) and _all(ds)[0] == []
    np.save(tmp_path / "w.npy", np.ones((2, 3), np.float32))
    both = NpyDataset([str(tmp_path / "z.npy"), str(tmp_path / "w.npy")], rows=True)
    assert len(both) == 2 and np.array_equal(np.concatenate(_all(both)[0]), np.ones((2, 3)))


# -- ParquetDataset -----------------------------------------------------------------------


def _table(n=100):
    return pa.table(
        {
            "x": np.arange(n, dtype=np.float32),
            "y": np.arange(n, dtype=np.int64),
            "img": pa.array([bytes([i % 256]) * (i % 5 + 1) for i in range(n)], pa.binary()),
        }
    )


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.parquet"
    pq.write_table(_table(), path, row_group_size=30)
    return path


def _footer(data: bytes) -> int:
    return struct.unpack("<I", data[-8:-4])[0]


def _broken(tmp_path, good, how):
    data = good.read_bytes()
    n = _footer(data)
    body, footer, end = data[: -8 - n], data[-8 - n : -8], data[-8:]
    rng = np.random.default_rng(0)
    out = {
        "not parquet": b"hello, this file is not Parquet at all",
        "empty": b"",
        "PAR1 only": b"PAR1PAR1PAR1",
        "huge footer length": data[:-8] + struct.pack("<I", 0xFFFFFFFF) + b"PAR1",
        "footer length 0": data[:-8] + struct.pack("<I", 0) + b"PAR1",
        "footer length short": data[:-8] + struct.pack("<I", n - 20) + b"PAR1",
        "corrupt footer": body + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + end,
        "truncated": data[: len(data) // 2],
        "truncated body": body[:100] + footer + end,
    }[how]
    path = tmp_path / "bad.parquet"
    path.write_bytes(out)
    return str(path)


@pytest.mark.parametrize(
    "how, match",
    [
        ("not parquet", "not a Parquet file"),
        ("empty", "0 bytes is too short for a Parquet file"),
        ("PAR1 only", "its footer claims 827474264 bytes, the file has 12"),
        ("huge footer length", r"its footer claims 4294967303 bytes, the file has \d+"),
        ("footer length 0", "malformed Parquet footer"),
        ("footer length short", "malformed Parquet footer"),
        ("corrupt footer", "malformed Parquet footer"),
        ("truncated", "not a Parquet file"),
        # the footer intact, the data gone: was taken, then raised a bare OSError from
        # pyarrow mid-epoch
        ("truncated body", r"row group 0 column 'x' claims bytes 4-\d+, outside the file's data"),
    ],
)
def test_a_broken_parquet_file_is_named_when_opened(tmp_path, good, how, match):
    path = _broken(tmp_path, good, how)
    with pytest.raises(ParquetFormatError, match=r"bad\.parquet: " + match) as info:
        ParquetDataset(path, columns=["x"], label="y")
    assert info.value.uri == path and isinstance(info.value, ValueError)


def test_damaged_data_pages_are_named_with_their_row_group(tmp_path, good):
    """Pages that do not decode raised pyarrow's bare OSError / ArrowInvalid."""
    data = bytearray(good.read_bytes())
    for i in range(4, len(data) - 8 - _footer(bytes(data)), 7):
        data[i] ^= 0x5A
    path = tmp_path / "pages.parquet"
    path.write_bytes(bytes(data))
    match = r"pages\.parquet: row group 0 does not decode \((OSError|ArrowInvalid): "
    with pytest.raises(ParquetFormatError, match=match):
        ParquetDataset(str(path), columns=["x"], label="y")  # labels are read whole
    ds = ParquetDataset(str(path), image="img")
    with pytest.raises(ParquetFormatError, match=match):
        _all(ds, batch_size=10)
    with pytest.raises(ParquetFormatError, match=r"pages\.parquet: row group 1, 2 does not"):
        ds.read_table(row_groups=[1, 2])


def test_a_file_rewritten_after_it_was_opened(tmp_path, good, http_server):
    # a local file rewritten with another layout: its old footer's chunks do not decode
    path = tmp_path / "local.parquet"
    path.write_bytes(good.read_bytes())
    ds = ParquetDataset(str(path), columns=["x"])
    t = _table()
    t = t.set_column(2, "img", pa.array([b"q" * 50] * 100))
    pq.write_table(t, path, row_group_size=13)
    with pytest.raises(ParquetFormatError, match=r"local\.parquet: row group 0 does not decode"):
        _all(ds, batch_size=40)
    # over HTTP the version (ETag, size) its engine saw when it was opened is pinned
    url = http_server.put("remote.parquet", good.read_bytes())
    with RangeEngine() as engine:
        ds = ParquetDataset(url, columns=["x"], label="y", engine=engine)
        http_server.put("remote.parquet", path.read_bytes())
        with pytest.raises(
            ObjectChangedError, match=r"remote\.parquet bytes \d+-\d+: the object changed"
        ):
            _all(ds, batch_size=40, engine=engine)
    # a loader given no engine makes its own from the dataset's, with the same pins
    url = http_server.put("remote2.parquet", good.read_bytes())
    ds = ParquetDataset(url, columns=["x"], label="y")
    http_server.put("remote2.parquet", path.read_bytes())
    with pytest.raises(
        ObjectChangedError, match=r"remote2\.parquet bytes \d+-\d+: the object changed"
    ):
        _all(ds, batch_size=40)


def test_zero_row_groups_and_an_empty_table(tmp_path):
    schema = _table().schema
    pq.ParquetWriter(tmp_path / "none.parquet", schema).close()
    assert pq.ParquetFile(tmp_path / "none.parquet").metadata.num_row_groups == 0
    pq.write_table(_table(0), tmp_path / "empty.parquet")  # one row group of 0 rows
    assert pq.ParquetFile(tmp_path / "empty.parquet").metadata.num_row_groups == 1
    for name in ("none", "empty"):
        ds = ParquetDataset(str(tmp_path / f"{name}.parquet"), columns=["x"], label="y")
        assert len(ds) == 0 and _all(ds) == ([], [])
        assert ds.read_table().num_rows == 0
        assert len(ParquetDataset(str(tmp_path / f"{name}.parquet"), image="img")) == 0


def test_row_groups_of_wildly_different_sizes_read_exactly(tmp_path):
    t = _table(200)
    with pq.ParquetWriter(tmp_path / "wild.parquet", t.schema) as w:
        at = 0
        for n in (1, 0, 157, 2, 0, 40):
            w.write_table(t.slice(at, n), row_group_size=max(n, 1))
            at += n
    path = str(tmp_path / "wild.parquet")
    assert [r for r in ParquetDataset(path, columns=["x"]).group_rows.tolist()] == [
        1,
        0,
        157,
        2,
        0,
        40,
    ]
    ref = pq.read_table(path)
    ds = ParquetDataset(path, columns=["x"], label="y")
    for bs, shuffle in ((1, False), (7, True), (64, True), (500, False)):
        xs, ys = _all(ds, batch_size=bs, shuffle=shuffle)
        x, y = np.concatenate(xs)[:, 0], np.concatenate(ys)
        assert sorted(y.tolist()) == list(range(200))
        assert np.array_equal(x, ref.column("x").to_numpy()[y])
    images = ParquetDataset(path, image="img", label="y")
    with DataLoader(images, batch_size=9, shuffle=True) as dl:
        for batch, y in dl:
            for i in range(len(y)):
                assert bytes(batch[i]) == ref.column("img")[int(y[i])].as_py()
    assert ds.read_table().equals(ref.select(["x", "y"]))


def test_nulls_name_the_file_row_group_and_row(tmp_path):
    t = pa.table(
        {
            "x": pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()),
            "y": pa.array([1, 2, 3, None]),
            "img": pa.array([b"a", b"b", None, b"d"]),
        }
    )
    pq.write_table(t, tmp_path / "n.parquet", row_group_size=2)
    path = str(tmp_path / "n.parquet")
    with pytest.raises(ValueError, match=r"column 'y' has nulls \(.*n\.parquet row group 1, row 1"):
        ParquetDataset(path, columns=["x"], label="y")
    ds = ParquetDataset(path, image="img")
    with pytest.raises(
        ValueError, match=r"column 'img' has nulls \(.*n\.parquet row group 1, row 0"
    ):
        _all(ds, batch_size=4)


def test_nested_and_missing_columns_are_named(tmp_path):
    t = pa.table(
        {
            "l": pa.array([[1, 2], [3]]),
            "st": pa.array([{"a": 1, "b": 2}, {"a": 3, "b": 4}]),
            "x": pa.array([1.0, 2.0], pa.float32()),
            "fl": pa.FixedSizeListArray.from_arrays(pa.array([[1], [2], [3], [4]]), 2),
        }
    )
    pq.write_table(t, tmp_path / "nested.parquet")
    path = str(tmp_path / "nested.parquet")
    with pytest.raises(ValueError, match=r"column 'l' is list<element: int64>; columns= takes"):
        ParquetDataset(path, columns=["l"])
    with pytest.raises(ValueError, match=r"column 'st' is struct<a: int64, b: int64>; columns="):
        ParquetDataset(path, columns=["st"])
    with pytest.raises(ValueError, match="image column 'st' is struct"):
        ParquetDataset(path, image="st")
    with pytest.raises(ValueError, match=r"column 'fl' holds fixed_size_list<element: list"):
        ParquetDataset(path, columns=["fl"])
    for kw, name in (
        ({"columns": ["st.a"]}, "st.a"),
        ({"columns": ["x"], "label": "nope"}, "nope"),
        ({"image": "nope"}, "nope"),
    ):
        with pytest.raises(
            ValueError, match=rf"no column '{name}' in .*nested\.parquet \(columns: l, st, x, fl\)"
        ):
            ParquetDataset(path, **kw)


def test_dictionary_encoded_binary_columns_read_exactly(tmp_path):
    values = [b"aa", b"bb", b"aa", b"ccc", b""] * 8
    # pages dictionary-encoded (pyarrow's default), and the column stored as an Arrow
    # DictionaryArray (its schema says dictionary<binary>: was refused as "not binary")
    plain = pa.table({"img": pa.array(values), "y": np.arange(40)})
    pq.write_table(plain, tmp_path / "pages.parquet", use_dictionary=True, row_group_size=7)
    coded = pa.table({"img": pa.array(values).dictionary_encode(), "y": np.arange(40)})
    pq.write_table(coded, tmp_path / "coded.parquet", row_group_size=7)
    for name in ("pages", "coded"):
        ds = ParquetDataset(str(tmp_path / f"{name}.parquet"), image="img", label="y")
        seen = 0
        with DataLoader(ds, batch_size=6, shuffle=True) as dl:
            for batch, y in dl:
                for i in range(len(y)):
                    assert bytes(batch[i]) == values[int(y[i])]
                    seen += 1
        assert seen == 40
    # dictionary-encoded numbers as columns=
    nums = pa.table({"v": pa.array([3, 1, 3, 2] * 5, pa.int16()).dictionary_encode()})
    pq.write_table(nums, tmp_path / "nums.parquet", row_group_size=6)
    ds = ParquetDataset(str(tmp_path / "nums.parquet"), columns=["v"])
    assert ds.dtype == np.int16
    got = np.concatenate(_all(ds, batch_size=5)[0])[:, 0]
    assert np.array_equal(got, np.array([3, 1, 3, 2] * 5, np.int16))


def test_string_and_float_labels(tmp_path):
    t = pa.table(
        {
            "x": np.arange(6, dtype=np.float32),
            "s": [f"cls-{i % 3}" for i in range(6)],
            "f": np.arange(6) / 4,
            "d": pa.array([f"d{i % 2}" for i in range(6)]).dictionary_encode(),
        }
    )
    pq.write_table(t, tmp_path / "l.parquet", row_group_size=4)
    path = str(tmp_path / "l.parquet")
    for col in ("s", "f", "d"):
        ds = ParquetDataset(path, columns=["x"], label=col)
        xs, ys = _all(ds, batch_size=4, shuffle=True)
        x, y = np.concatenate(xs)[:, 0].astype(int), np.concatenate(ys)
        want = t.column(col).to_pylist()
        assert [want[i] for i in x] == y.tolist()


def test_files_of_different_schemas_name_the_file_and_column(tmp_path):
    pq.write_table(_table(10), tmp_path / "a.parquet")
    pq.write_table(_table(10).drop_columns(["img"]), tmp_path / "b.parquet")
    t = _table(10)
    pq.write_table(t.set_column(0, "x", t.column("x").cast(pa.float64())), tmp_path / "c.parquet")
    a, b, c = (str(tmp_path / f"{k}.parquet") for k in "abc")
    with pytest.raises(
        ValueError,
        match=r"b\.parquet: its schema differs from .*a\.parquet's: its columns are x, y, not x, y, img",
    ):
        ParquetDataset([a, a, b], columns=["x"])
    with pytest.raises(
        ValueError, match=r"c\.parquet: its schema differs .*: column 'x' is double, not float"
    ):
        ParquetDataset([a, c], columns=["x"])
    # many files: the one that differs is named, wherever it is
    many = [a] * 40 + [c] + [a] * 5
    with pytest.raises(ValueError, match=r"c\.parquet: its schema differs"):
        ParquetDataset(many, columns=["x"])
