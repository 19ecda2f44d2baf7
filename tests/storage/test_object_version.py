"""Object versions (fastload.storage.object_version): ETag or modification time, the same
tag from a listing and from a HEAD, and a local file's version changing when it is rewritten."""

from __future__ import annotations

import os

import pytest

from fastload.storage.engine import RangeEngine
from fastload.storage.object_version import local_version, object_version, version_tag
from fastload.storage.uri import parse_uri


def test_tags():
    assert version_tag('"abc"', "Tue, 01 Dec 2026 20:50:34 GMT") == "etag:abc"
    http = version_tag('""', "Tue, 01 Dec 2026 20:50:34 GMT")
    iso = version_tag("", "2026-12-01T20:50:34.529Z")  # a listing's LastModified
    assert http == iso == "mtime:1796158234"
    assert version_tag(None, None) is None and version_tag("", "not a date") is None


def test_local_version_changes_with_the_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    v = local_version(str(p))
    assert v[0] == 10 and object_version(RangeEngine(), parse_uri(str(p))) == v
    os.utime(p, ns=(1, 1))
    assert local_version(str(p)) != v


@pytest.mark.s3
def test_listing_and_head_agree(rclone_s3):
    with RangeEngine(**rclone_s3.options) as eng:
        src = parse_uri("s3://data/small/obj-003.bin")
        eng.list("s3://data/small/")
        listed = object_version(eng, src, fresh=False)
        assert listed == object_version(eng, src, fresh=True)
        assert listed[0] == 1000 + 37 * 3 and listed[1].startswith("mtime:")
