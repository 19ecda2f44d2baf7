"""TarShardDataset (fastload.plan.tar_shards) and its index (fastload.plan.tar_index):
generated shards on local disk, direct://, http:// and the rclone S3 server, the sidecar
index, and every kind of broken shard."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile

import numpy as np
import pytest

from fastload.app.cli import main as cli
from fastload.batch.ragged import RaggedBatch
from fastload.errors import LabelError, MissingFieldError, TarFormatError
from fastload.loop.loader import DataLoader
from fastload.plan.tar_index import decode_index, encode_index, index_shards, load_index
from fastload.plan.tar_shards import TarShardDataset
from fastload.storage.engine import RangeEngine
from fastload.storage.uri import parse_uri
from tests.support.servers import start_rclone, stop
from tests.support.tar_data import (
    payload_of,
    sample_members,
    set_member_size,
    write_shards,
    write_tar,
)

N, PER = 70, 20


@pytest.fixture
def shards(tmp_path):
    return write_shards(str(tmp_path / "tars"), N, PER)


def check_all(ds: TarShardDataset, n: int = N, label=lambda i: i % 10) -> None:
    dl = DataLoader(ds, batch_size=16, shuffle=True, seed=3, engine=ds._engine)
    seen: list[int] = []
    order = dl.sampler.indices(0)
    for x, y in dl:
        assert isinstance(x, RaggedBatch)
        # keys are sample{i:06d}: the sample's number, whatever was skipped before it
        idx = [int(ds.keys[j][-6:]) for j in order[len(seen) : len(seen) + x.count]]
        for k, i in enumerate(idx):
            assert x.sample(k).tobytes() == payload_of(i)
            assert y[k] == label(i)
        seen += idx
    assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_local_shards_each_format(tmp_path, fmt):
    deep = "a/" + "long-folder-name/" * 12  # past 100 characters: prefix, L or pax names
    write_shards(str(tmp_path), N, PER, fmt=fmt, prefix=deep)
    ds = TarShardDataset(str(tmp_path), field="bin", label="cls")
    assert len(ds) == N and len(ds.sources) == 4 and ds.keys[5] == f"{deep}sample000005"
    assert ds.index_stats == {"reused": 0, "walked": 4} and ds.skipped == {}
    check_all(ds)


def test_fields_labels_and_decode_hook(shards):
    ds = TarShardDataset(shards, field="jpg;bin", label="json:label")
    assert ds.image_format is None and ds.sample_exts(np.array([0, 1])) == ["bin", "bin"]
    assert ds.labels_for(np.arange(N)).tolist() == [i % 7 for i in range(N)]
    f = ds.fields(33)
    assert f["bin"] == payload_of(33) and f["cls"] == b"3" and set(f) == {"bin", "cls", "json"}
    shard, off, length = ds.member_ranges(np.array([33, 34]), "cls")
    assert length.tolist() == [1, 1] and shard.tolist() == [1, 1]
    assert ds.member_ranges(np.array([0]), "png")[2].tolist() == [-1]
    assert "sample000033.bin in" in ds.describe(33)
    jpgs = write_tar(str(shards[0]) + ".jpg.tar", [("k.jpg", b"\xff\xd8fake"), ("k.cls", b"1")])
    assert TarShardDataset(jpgs, label="cls").image_format == "jpeg"


def test_fixed_size_field_goes_through_collate(tmp_path):
    write_shards(str(tmp_path), 30, 8, size=4 * 4 * 3)
    ds = TarShardDataset(str(tmp_path), field="bin", label="cls", shape=(4, 4, 3))
    dl = DataLoader(ds, batch_size=30, memory_format="channels_first", dtype=np.float32)
    x, y = next(iter(dl))
    ref = np.stack([np.frombuffer(payload_of(i, 48), np.uint8).reshape(4, 4, 3) for i in range(30)])
    assert x.shape == (30, 3, 4, 4) and np.array_equal(x, ref.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="holds 48 bytes, not the 12 of shape"):
        TarShardDataset(str(tmp_path), field="bin", shape=(2, 2, 3))


def test_direct_and_brace_pattern(shards):
    folder = os.path.dirname(shards[0])
    ds = TarShardDataset(
        f"direct://{folder}/shard-{{000000..000003}}.tar", field="bin", label="cls"
    )
    assert [s.scheme for s in ds.sources] == ["direct"] * 4
    check_all(ds)


def test_http_shards(http_server, shards):
    for p in shards:
        http_server.put(f"t/{os.path.basename(p)}", open(p, "rb").read())
    ds = TarShardDataset(
        http_server.url("t/shard-{000000..000003}.tar"),
        field="bin",
        label="cls",
        engine=RangeEngine(),
    )
    check_all(ds)


def test_the_walk_reads_headers_only(tmp_path):
    big = 1 << 20  # large members: the walk must jump over them, not read them
    write_shards(str(tmp_path), 12, 6, size=big)
    eng = RangeEngine()
    ds = TarShardDataset(str(tmp_path), field="bin", label="cls", engine=eng)
    stats = eng.backend("file").stats()
    assert len(ds) == 12 and stats["bytes"] < 12 * 16384  # 12 MiB of data, a few KiB read
    assert ds.labels_for(np.arange(12)).tolist() == [i % 10 for i in range(12)]


def test_sidecar_index_is_written_reused_and_refreshed(tmp_path, shards):
    side = tmp_path / "train.flidx"
    eng = RangeEngine()
    a = TarShardDataset(shards, field="bin", label="cls", index=side, engine=eng)
    assert side.exists() and a.index_stats == {"reused": 0, "walked": 4}
    before = eng.backend("file").stats()["requests"]
    b = TarShardDataset(shards, field="bin", label="cls", index=side, engine=eng)
    assert b.index_stats == {"reused": 4, "walked": 0}
    assert eng.backend("file").stats()["requests"] - before == 1  # reading the sidecar only
    assert b.keys == a.keys and np.array_equal(
        b.labels_for(np.arange(N)), a.labels_for(np.arange(N))
    )
    # a shard rewritten since: walked again, the sidecar rewritten
    write_tar(shards[1], [m for i in range(20, 25) for m in sample_members(i)])
    c = TarShardDataset(shards, field="bin", label="cls", index=side, engine=eng)
    assert c.index_stats == {"reused": 3, "walked": 1} and len(c) == N - 15
    assert TarShardDataset(shards, field="bin", index=side).index_stats["walked"] == 0
    with pytest.raises(ValueError, match="not a fastload tar index"):
        decode_index(b"junk", "x.flidx")


def test_index_round_trip_keeps_everything(shards):
    eng = RangeEngine()
    srcs = [parse_uri(p) for p in shards]
    walked = index_shards(eng, srcs, [os.path.getsize(p) for p in shards], ["t"] * 4)
    back = decode_index(encode_index(walked), "mem")
    for w, b in zip(walked, back, strict=True):
        assert (w.uri, w.size, w.tag, w.names) == (b.uri, b.size, b.tag, b.names)
        assert np.array_equal(w.offsets, b.offsets) and w.inline == b.inline


def test_cli_index_then_dataset_reuses_it(tmp_path, shards, capsys):
    out = tmp_path / "cli.flidx"
    assert cli(["index", os.path.dirname(shards[0]) + "/", "-o", str(out)]) == 0
    assert "4 shards, 210 members" in capsys.readouterr().err
    assert len(load_index(RangeEngine(), str(out))) == 4
    ds = TarShardDataset(shards, field="bin", label="cls", index=out)
    assert ds.index_stats == {"reused": 4, "walked": 0}
    assert cli(["index", str(tmp_path / "nope.tar"), "-o", str(out)]) == 1
    assert "nope.tar" in capsys.readouterr().err


# -- broken shards -------------------------------------------------------------------------


def test_truncated_tar(shards):
    size = os.path.getsize(shards[2])
    with open(shards[2], "r+b") as f:
        f.truncate(size // 2 + 100)  # inside some member's data or header
    with pytest.raises(
        TarFormatError, match=r"shard-000002.tar: .*(runs past the end|ends inside)"
    ):
        TarShardDataset(shards, field="bin", label="cls")
    ds = TarShardDataset(shards, field="bin", label="cls", on_error="skip")
    assert 0 < N - len(ds) < 20 and ds.skipped == {"broken shard (indexed up to the break)": 1}
    assert "shard-000002.tar" in ds.problems[0]
    check_all_present(ds)


def check_all_present(ds: TarShardDataset) -> None:
    """Whatever was kept reads back byte-exact."""
    for i in range(len(ds)):
        x, _ = ds[i]
        assert x.tobytes() == payload_of(int(ds.keys[i][-6:]))


@pytest.mark.parametrize("delta", [+512, -700, +10_000_000])
def test_header_that_lies_about_its_size(shards, delta):
    name = "sample000045.bin"
    set_member_size(shards[2], name, len(payload_of(45)) + delta)
    with pytest.raises(
        TarFormatError, match=r"shard-000002.tar: .*(no valid tar header|past the end|zero block)"
    ):
        TarShardDataset(shards, field="bin", label="cls")
    ds = TarShardDataset(shards, field="bin", label="cls", on_error="skip")
    assert "sample000045" not in ds.keys and sum(ds.skipped.values()) == 1
    check_all_present(ds)


def test_missing_label_and_data_fields(tmp_path):
    members = [m for i in range(6) for m in sample_members(i) if not m[0].endswith("3.cls")]
    path = write_tar(str(tmp_path / "s.tar"), members)
    with pytest.raises(MissingFieldError, match=r"s.tar: sample 'sample000003' has no .cls member"):
        TarShardDataset(path, field="bin", label="cls")
    ds = TarShardDataset(path, field="bin", label="cls", on_error="skip")
    assert len(ds) == 5 and ds.skipped == {"missing label field": 1}
    with pytest.raises(MissingFieldError, match="has no png member"):
        TarShardDataset(path, field="png")
    with pytest.raises(ValueError, match="no samples with a png member"):
        TarShardDataset(path, field="png", on_error="skip")


def test_bad_labels(tmp_path):
    path = write_tar(
        str(tmp_path / "s.tar"), [("a.bin", b"x"), ("a.cls", b"seven"), ("a.json", b"{}")]
    )
    with pytest.raises(LabelError, match="sample 'a': .cls does not hold a label"):
        TarShardDataset(path, field="bin", label="cls")
    with pytest.raises(LabelError, match="has no key 'label'"):
        TarShardDataset(path, field="bin", label="json:label")
    with pytest.raises(ValueError, match="name the JSON key"):
        TarShardDataset(path, field="bin", label="json")


def test_not_a_tar_and_compressed(tmp_path, shards):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(5000))
    with pytest.raises(TarFormatError, match="junk.tar: no valid tar header at byte 0"):
        TarShardDataset(str(junk), field="bin")
    gz = tmp_path / "c.tar"
    gz.write_bytes(gzip.compress(open(shards[0], "rb").read()))
    with pytest.raises(TarFormatError, match="gzip-compressed"):
        TarShardDataset(str(gz), field="bin")
    empty = write_tar(str(tmp_path / "e.tar"), [])
    with pytest.raises(ValueError, match="no samples"):
        TarShardDataset(empty, field="bin")


def test_links_and_folders_are_skipped(tmp_path):
    path = str(tmp_path / "l.tar")
    with tarfile.open(path, "w") as t:
        t.addfile(tarfile.TarInfo("dir"))  # a regular empty file named dir (no extension)
        d = tarfile.TarInfo("folder")
        d.type = tarfile.DIRTYPE
        t.addfile(d)
        s = tarfile.TarInfo("k.lnk")
        s.type, s.linkname = tarfile.SYMTYPE, "elsewhere"
        t.addfile(s)
    with open(path, "ab") as f:
        f.write(b"")
    tmp = str(tmp_path / "m.tar")
    shutil.copy(path, tmp)
    with pytest.raises(ValueError, match="no samples"):
        TarShardDataset(tmp, field="lnk")


# -- S3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_tars(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3tars")
    write_shards(str(root / "bucket" / "train"), N, PER)
    server = start_rclone(str(root))
    engine = RangeEngine(**server.options)
    yield engine, server
    engine.close()
    stop(server)


@pytest.mark.s3
def test_s3_shards_by_prefix_and_pattern(s3_tars, tmp_path):
    engine, _ = s3_tars
    ds = TarShardDataset("s3://bucket/train/", field="bin", label="cls", engine=engine)
    assert len(ds) == N and all(v[1] and v[1].startswith("mtime:") for v in ds.versions)
    check_all(ds)
    side = tmp_path / "s3.flidx"
    p = TarShardDataset(
        "s3://bucket/train/shard-{000000..000003}.tar",
        field="bin",
        label="json:label",
        index=side,
        engine=engine,
    )
    assert p.keys == ds.keys and side.exists()
    before = engine.backend("s3").stats()["requests"]
    again = TarShardDataset(
        "s3://bucket/train/", field="bin", label="cls", index=side, engine=engine
    )
    assert again.index_stats["reused"] == 4
    assert engine.backend("s3").stats()["requests"] == before  # no header read at all
