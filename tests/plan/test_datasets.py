"""Datasets: records, objects and .npy files; sample -> byte ranges, labels, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastload.plan.datasets import NpyDataset, ObjectDataset, RecordDataset, parse_npy_header
from tests.support.plan_data import SHAPE, read_plan

# -- RecordDataset ------------------------------------------------------------------


def test_records_over_a_folder_of_shards(records):
    folder, data = records
    ds = RecordDataset(folder, SHAPE)
    assert len(ds) == 50 and ds.sample_nbytes == 60 and len(ds.uris) == 3
    for i in (0, 16, 17, 33, 34, 49):  # shard boundaries (17 per shard)
        assert np.array_equal(ds[i], data[i])


def test_records_list_of_uris_and_file_scheme(records):
    folder, data = records
    uris = [f"file://{os.path.join(folder, n)}" for n in sorted(os.listdir(folder))]
    ds = RecordDataset(uris, SHAPE)
    assert np.array_equal(ds[40], data[40])


def test_records_header_and_stride(tmp_path):
    data = np.arange(6 * 10, dtype=np.uint16).reshape(6, 10)
    stride = 32  # 20 bytes of record + 12 of padding
    body = b"".join(r.tobytes() + b"\xff" * 12 for r in data)
    path = tmp_path / "s.bin"
    path.write_bytes(b"HEAD" * 4 + body[:-12])  # the last record's padding is optional
    ds = RecordDataset(str(path), (10,), np.uint16, header_bytes=16, record_stride=stride)
    assert len(ds) == 6
    _, buf, _ = read_plan(ds, [5, 0, 3])
    assert np.array_equal(buf.view(np.uint16).reshape(3, 10), data[[5, 0, 3]])


def test_records_bad_shard_size_names_the_shard(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 61)
    with pytest.raises(
        ValueError, match=r"a\.bin: 61 bytes is not a 0-byte header plus whole records of 60"
    ):
        RecordDataset(str(tmp_path), SHAPE)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"record_shape": (0, 3)}, "record_shape"),
        ({"record_shape": (4, 5, 3), "record_stride": 10}, "record_stride 10 is smaller"),
        ({"record_shape": (4, 5, 3), "layout": "NHWC"}, "layout"),
        ({"record_shape": (4, 5, 3), "dtype": object}, "Python objects"),
        ({"record_shape": (4, 5, 3), "labels": [1, 2]}, "labels has 2 entries, the dataset has 50"),
    ],
)
def test_records_bad_arguments(records, kw, msg):
    with pytest.raises(ValueError, match=msg):
        RecordDataset(records[0], **kw)


def test_index_out_of_range_names_it(records):
    ds = RecordDataset(records[0], SHAPE)
    with pytest.raises(IndexError, match="sample index 50 out of range for 50"):
        ds.sample_ranges(np.array([3, 50]))


def test_labels_array_and_callable(records):
    folder, _ = records
    ds = RecordDataset(folder, SHAPE, labels=np.arange(50) * 2)
    assert ds.labels_for(np.array([3, 7])).tolist() == [6, 14]
    ds = RecordDataset(folder, SHAPE, labels=lambda i: i % 3)
    assert ds.labels_for(np.array([3, 7])).tolist() == [0, 1]
    x, y = ds[7]
    assert y == 1 and x.shape == SHAPE


def test_datasets_pickle_without_their_engine(records):
    import pickle

    ds = RecordDataset(records[0], SHAPE, labels=np.arange(50))
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == 50 and copy._engine is None
    x, y = copy[33]
    assert y == 33 and np.array_equal(x, records[1][33])


def test_missing_prefix_and_empty_list(tmp_path):
    with pytest.raises(FileNotFoundError):
        RecordDataset(str(tmp_path / "nope") + "/", SHAPE)
    (tmp_path / "a.bin").write_bytes(bytes(60))
    for make in (lambda u: RecordDataset(u, SHAPE), NpyDataset, ObjectDataset):
        with pytest.raises(
            FileNotFoundError, match=r"gone\.bin"
        ):  # at construction, naming the shard
            make([str(tmp_path / "a.bin"), str(tmp_path / "gone.bin")])
    with pytest.raises(ValueError, match="empty"):
        ObjectDataset([])


# -- ObjectDataset ------------------------------------------------------------------


def test_objects_from_a_prefix(tmp_path):
    blobs = [os.urandom(n) for n in (10, 0, 5000, 3)]
    for i, b in enumerate(blobs):
        (tmp_path / f"o{i}").write_bytes(b)
    ds = ObjectDataset(str(tmp_path) + "/")
    assert len(ds) == 4 and ds.ragged and ds.sizes.tolist() == [10, 0, 5000, 3]
    assert ds[2].tobytes() == blobs[2]
    plan, buf, _ = read_plan(ds, [3, 1, 2, 0])
    assert buf.tobytes() == blobs[3] + blobs[1] + blobs[2] + blobs[0]
    assert plan.offsets.tolist() == [0, 3, 3, 5003] and len(plan.table) == 3  # empty: no read


# -- NpyDataset ---------------------------------------------------------------------


def test_npy_rows_of_several_shards(tmp_path):
    a = np.random.default_rng(1).random((7, 3, 2)).astype(np.float32)
    b = np.random.default_rng(2).random((5, 3, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    ds = NpyDataset(str(tmp_path), rows=True)
    assert len(ds) == 12 and ds.sample_shape == (3, 2) and ds.dtype == np.float32
    both = np.concatenate([a, b])
    _, buf, _ = read_plan(ds, [11, 0, 6, 7])
    assert np.array_equal(buf.view(np.float32).reshape(4, 3, 2), both[[11, 0, 6, 7]])


def test_npy_single_file_defaults_to_rows_and_long_header(tmp_path):
    arr = np.arange(40, dtype=np.int32).reshape(10, 4)
    # A version-2 header longer than the 4 KiB probe.
    text = "{'descr': '<i4', 'fortran_order': False, 'shape': (10, 4), }".ljust(5000) + "\n"
    data = b"\x93NUMPY\x02\x00" + len(text).to_bytes(4, "little") + text.encode("latin1")
    (tmp_path / "big.npy").write_bytes(data + arr.tobytes())
    ds = NpyDataset(str(tmp_path / "big.npy"))
    assert ds.rows and len(ds) == 10 and ds.first_offset[0] == len(data)
    assert np.array_equal(ds[9], arr[9])


def test_npy_one_sample_per_file(tmp_path):
    arrs = [np.full((2, 3), i, dtype=np.uint8) for i in range(4)]
    for i, a in enumerate(arrs):
        np.save(tmp_path / f"{i}.npy", a)
    ds = NpyDataset(str(tmp_path))
    assert not ds.rows and len(ds) == 4 and ds.sample_shape == (2, 3)
    assert np.array_equal(ds[2], arrs[2])


def test_npy_mismatch_and_bad_files(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((2, 4), np.uint8))
    with pytest.raises(ValueError, match=r"b\.npy: holds uint8\[2, 4\], unlike .*a\.npy"):
        NpyDataset(str(tmp_path))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="Fortran"):
        NpyDataset(str(tmp_path / "f.npy"))
    (tmp_path / "x.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"x\.npy: not a \.npy file"):
        NpyDataset(str(tmp_path / "x.npy"))
    with pytest.raises(ValueError, match="bad magic"):
        parse_npy_header(b"\x00" * 20, "u")
