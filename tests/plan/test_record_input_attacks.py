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
