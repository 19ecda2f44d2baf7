"""Datasets over URLs that carry credentials (a password, a presigned signature): every
message about a bad file names it without them."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.plan.datasets import NpyDataset, RecordDataset
from fastload.plan.tar_shards import TarShardDataset

SECRET = "pw-DO-NOT-LEAK-42"


def _url(http_server, name: str) -> str:
    return (
        http_server.url(name).replace("://", f"://user:{SECRET}@", 1) + f"?X-Amz-Signature={SECRET}"
    )


def _message(call) -> str:
    with pytest.raises((ValueError, KeyError, OSError)) as info:
        call()
    text = str(info.value) + repr(info.value) + str(getattr(info.value, "uri", ""))
    assert SECRET not in text, text
    assert "user:***@" in text  # still names the URL
    return text


def test_record_and_npy_errors_name_the_url_without_credentials(http_server, tmp_path):
    http_server.put("odd.bin", b"x" * 1001)
    http_server.put("bad.npy", b"not an npy file at all")
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((4, 3))))
    http_server.put("fortran.npy", (tmp_path / "f.npy").read_bytes())
    np.save(tmp_path / "a.npy", np.zeros((4, 3), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((4, 5), np.uint8))
    http_server.put("a.npy", (tmp_path / "a.npy").read_bytes())
    http_server.put("b.npy", (tmp_path / "b.npy").read_bytes())
    assert "not a 0-byte header" in _message(
        lambda: RecordDataset([_url(http_server, "odd.bin")], (10,), dtype=np.uint8)
    )
    assert "bad magic" in _message(lambda: NpyDataset([_url(http_server, "bad.npy")]))
    assert "Fortran" in _message(lambda: NpyDataset([_url(http_server, "fortran.npy")]))
    assert "unlike" in _message(
        lambda: NpyDataset([_url(http_server, "a.npy"), _url(http_server, "b.npy")])
    )


def test_parquet_errors_name_the_url_without_credentials(http_server, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    from fastload.plan.parquet_dataset import ParquetDataset

    http_server.put("bad.parquet", b"x" * 100)
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "a.parquet")
    http_server.put("a.parquet", (tmp_path / "a.parquet").read_bytes())
    assert "PAR1" in _message(
        lambda: ParquetDataset([_url(http_server, "bad.parquet")], columns=["a"])
    )
    assert "no column" in _message(
        lambda: ParquetDataset([_url(http_server, "a.parquet")], columns=["nope"])
    )


def test_a_missing_tar_field_names_the_shard_without_credentials(http_server, tmp_path):
    import io
    import tarfile

    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w") as tar:
        info = tarfile.TarInfo("k0.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    http_server.put("s.tar", bio.getvalue())
    _message(lambda: TarShardDataset([_url(http_server, "s.tar")], "jpg"))
