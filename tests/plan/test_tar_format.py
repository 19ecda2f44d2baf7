"""Tar headers (fastload.plan.tar_format) and brace patterns (fastload.plan.shard_uris)."""

from __future__ import annotations

import io
import tarfile

import pytest

from fastload.errors import TarFormatError
from fastload.plan.shard_uris import expand_braces, resolve_shards
from fastload.plan.tar_format import (
    BLOCK,
    padded,
    parse_header,
    parse_pax,
    refuse_compressed,
    split_key,
)
from fastload.storage.engine import RangeEngine


def one_header(name: str, size: int, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=fmt)


def test_ustar_header_with_prefix_and_size():
    name = "d" * 120 + "/x.jpg"  # longer than 100: ustar keeps the folder in the prefix field
    h = parse_header(one_header(name, 12345), "u", 0)
    assert h is not None and h.name == name and h.size == 12345 and h.is_file


def test_base256_size_and_zero_block():
    block = bytearray(one_header("a.bin", 0))
    block[124:136] = (0x80 << 88 | 9_000_000_000).to_bytes(12, "big")  # GNU binary size
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    assert parse_header(bytes(block), "u", 0).size == 9_000_000_000
    assert parse_header(bytes(BLOCK), "u", 0) is None


def test_bad_checksum_and_short_header_name_the_offset():
    block = bytearray(one_header("a.bin", 10))
    block[0] ^= 1
    with pytest.raises(TarFormatError, match=r"u: no valid tar header at byte 1536"):
        parse_header(bytes(block), "u", 1536)
    with pytest.raises(TarFormatError, match="ends inside the tar header at byte 7"):
        parse_header(bytes(100), "u", 7)


def test_pax_records():
    buf = one_header("p" * 200 + ".bin", 5, tarfile.PAX_FORMAT)
    pax = parse_header(buf[:BLOCK], "u", 0)
    assert pax is not None and pax.typeflag == b"x"
    records = parse_pax(buf[BLOCK : BLOCK + pax.size], "u", 0)
    assert records["path"] == "p" * 200 + ".bin"
    with pytest.raises(TarFormatError, match="malformed pax record"):
        parse_pax(b"99 path=x\n", "u", 0)


def test_compressed_tars_are_refused():
    gz = io.BytesIO()
    with tarfile.open(fileobj=gz, mode="w:gz") as t:
        t.addfile(tarfile.TarInfo("a.bin"), io.BytesIO(b""))
    with pytest.raises(TarFormatError, match="gzip-compressed"):
        refuse_compressed(gz.getvalue()[:8], "s3://b/x.tar.gz")


def test_split_key_follows_webdataset():
    assert split_key("a/b/x.seg.PNG") == ("a/b/x", "seg.png")
    assert split_key("x.jpg") == ("x", "jpg")
    assert split_key("a.b/noext") is None
    assert split_key("dir/.hidden") is None
    assert padded(0) == 0 and padded(1) == 512 and padded(512) == 512


def test_brace_patterns():
    assert expand_braces("s-{000008..000011}.tar") == [f"s-{i:06d}.tar" for i in range(8, 12)]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("x{0..6..3}") == ["x0", "x3", "x6"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("{x}") == ["{x}"] and expand_braces("plain") == ["plain"]
    with pytest.raises(ValueError, match="unclosed"):
        expand_braces("s-{0..3.tar")
    with pytest.raises(ValueError, match="names 100000000000 values"):
        expand_braces("{0..99999999999}")


def test_resolve_shards_lists_only_tars(tmp_path):
    for n in ("a.tar", "b.TAR", "index.flidx", "c.tar"):
        (tmp_path / n).write_bytes(b"")
    eng = RangeEngine()
    found = [s.path for s in resolve_shards(str(tmp_path), eng, "t")]
    assert found == [str(tmp_path / n) for n in ("a.tar", "b.TAR", "c.tar")]
    pattern = [s.path for s in resolve_shards(str(tmp_path / "{a,c}.tar"), eng, "t")]
    assert pattern == [str(tmp_path / "a.tar"), str(tmp_path / "c.tar")]
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="no objects ending in .tar under"):
        resolve_shards(str(tmp_path / "x") + "/", eng, "t")
