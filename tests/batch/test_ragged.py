"""RaggedBatch: a sequence of its samples that keeps the packed data and offsets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fastload import DataLoader, ObjectDataset
from fastload.batch.ragged import RaggedBatch

BLOBS = [b"abc", b"", b"defgh", b"i"]


def packed() -> RaggedBatch:
    data = np.frombuffer(b"".join(BLOBS), dtype=np.uint8).copy()
    offsets = np.cumsum([0, *map(len, BLOBS)])
    return RaggedBatch(data, offsets)


def test_a_sequence_of_samples():
    b = packed()
    assert len(b) == b.count == 4
    assert [bytes(s) for s in b] == BLOBS
    assert all(s == want for s, want in zip(b, BLOBS, strict=True))  # bytes-like, == bytes
    assert b[2] == b"defgh" and b[-1] == b"i" and b[np.int64(0)] == b"abc"
    assert [bytes(s) for s in b[1:3]] == BLOBS[1:3]
    with pytest.raises(IndexError, match="index 4 out of range for 4 samples"):
        b[4]
    with pytest.raises(IndexError):
        b[-5]


def test_views_not_copies_and_the_packed_form_stays():
    b = packed()
    view = b[2]
    np.frombuffer(view, dtype=np.uint8)[0] = ord("X")  # writes through to .data
    assert bytes(b.data[3:8]) == b"Xefgh" and b.sample(2).tobytes() == b"Xefgh"
    assert b.offsets.tolist() == [0, 3, 3, 8, 9]
    assert isinstance(b.sample(0), np.ndarray)


def test_equality_pickle_and_repr():
    a, b = packed(), packed()
    assert a == b and a != RaggedBatch(a.data[:-1], a.offsets[:-1])
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a) == "RaggedBatch(4 samples, 9 bytes)"
    with pytest.raises(TypeError):
        hash(a)


def test_non_numpy_data_is_sliced():
    data = list(b"abcdef")
    b = RaggedBatch(data, [0, 2, 6])
    assert b[1] == list(b"cdef") and len(b) == 2


def test_loader_batches_of_objects(tmp_path):
    uris = []
    for i, blob in enumerate(BLOBS):
        p = tmp_path / f"o{i}"
        p.write_bytes(blob)
        uris.append(str(p))
    with DataLoader(ObjectDataset(uris), batch_size=3) as dl:
        batches = list(dl)
    assert [len(b) for b in batches] == [3, 1]
    assert [bytes(s) for b in batches for s in b] == BLOBS
    assert batches[0][2] == b"defgh"
