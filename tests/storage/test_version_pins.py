"""A read is pinned to one version of each object (fastload.storage.version_pins and the
native reader): an object rewritten between the parts of a read, or since its HEAD or
listing, raises ObjectChangedError instead of returning a mix of two versions; a HEAD that
under-reports the size never truncates a read. Shown against real servers (http and the
rclone S3 fixture), the new version written through the fault proxy's new_version mode."""

from __future__ import annotations

import pytest

from fastload import errors
from fastload.storage.engine import RangeEngine
from tests.support.network import FAST_RETRY, table
from tests.support.servers import Fault, payload, proxy_to, start_rclone, stop

pytestmark = pytest.mark.http

PART = 64 << 10
PINS = "pins"  # this file's own bucket: what it rewrites is no other test's listing


@pytest.fixture
def rclone_s3(rclone_s3):
    """The shared server, with this file's bucket made (once)."""
    s3 = rclone_s3.boto3()
    if PINS not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=PINS)
    return rclone_s3


def _rewrite(http_server, name, data):
    return lambda: http_server.put(name, data)


def test_an_object_rewritten_between_parts_is_refused_not_mixed(http_server, proxied):
    proxy, url, data = proxied
    new = payload(len(data), 99)  # same size: only the ETag tells the versions apart
    proxy.queue(Fault(), Fault(), Fault("new_version", action=_rewrite(http_server, "f.bin", new)))
    out = bytearray(len(data))
    with RangeEngine(part_size=PART, max_inflight_parts=1, **FAST_RETRY) as eng:
        with pytest.raises(errors.ObjectChangedError, match=r"f.bin bytes .*ETag .* became") as ei:
            eng.read_into([url], table([(0, 0, len(data), 0)]), out)
        assert isinstance(ei.value, OSError) and ei.value.uri == url
        assert eng.backend("http").stats()["retries"] == 0  # a new version is not retried
        # the next read is pinned to the new version and sees it whole
        assert bytes(eng.read_ranges(url, [(0, len(data))])) == new


def test_pin_version_false_turns_the_check_off(http_server, proxied):
    """For servers whose ETags differ per node; the knob acts: the read mixes versions."""
    proxy, url, data = proxied
    new = payload(len(data), 98)
    proxy.queue(Fault(), Fault("new_version", action=_rewrite(http_server, "f.bin", new)))
    with RangeEngine(part_size=PART, max_inflight_parts=1, pin_version=False) as eng:
        got = bytes(eng.read_ranges(url, [(0, len(data))]))
    assert got[:PART] == data[:PART] and got[PART:] == new[PART:]


def test_read_starts_over_once_when_the_object_changed_after_its_head(http_server, proxied):
    proxy, url, data = proxied
    new = payload(len(data) + 5000, 97)  # the new version is longer than the HEAD said
    proxy.queue(Fault(), Fault("new_version", action=_rewrite(http_server, "f.bin", new)))
    with RangeEngine(part_size=PART, max_inflight_parts=2) as eng:
        assert bytes(eng.read(url)) == new
    assert [c for c, *_ in proxy.log].count("HEAD") == 2


def test_a_head_that_reports_less_than_the_object_holds_never_truncates(proxied):
    proxy, url, data = proxied
    proxy.queue(Fault("head_size", size=1000), Fault(), Fault("head_size", size=1000))
    with RangeEngine(part_size=PART) as eng:
        with pytest.raises(
            errors.ObjectChangedError, match=f"size was 1000 bytes, the server now says {len(data)}"
        ) as ei:
            eng.read(url)
        assert ei.value.object_size == len(data)


def test_a_read_is_pinned_to_the_version_its_size_came_from(http_server, proxied):
    """A dataset lays records out by the sizes it asked for; a rewritten object must not be
    read through that layout. The pin is then forgotten, so the next call sees the new one."""
    proxy, url, data = proxied
    with RangeEngine(**FAST_RETRY) as eng:
        assert eng.size(url) == len(data)
        new = payload(len(data), 96)
        http_server.put("f.bin", new)
        with pytest.raises(errors.ObjectChangedError, match="ETag"):
            eng.read_ranges(url, [(10, 100)])
        assert bytes(eng.read_ranges(url, [(10, 100)])) == new[10:110]


# -- S3 (rclone serve s3: no ETags with --etag-hash '', so the size and Last-Modified pin) --


def test_s3_object_rewritten_mid_read_on_rclone(rclone_s3):
    s3 = rclone_s3.boto3()
    old, new = payload(3 << 20, 1), payload((3 << 20) + 7, 2)
    s3.put_object(Bucket=PINS, Key="versions/v.bin", Body=old)
    with proxy_to(rclone_s3.port) as proxy:
        opts = {**rclone_s3.options, "endpoint_url": proxy.endpoint, **FAST_RETRY}
        put_new = lambda: s3.put_object(Bucket=PINS, Key="versions/v.bin", Body=new)  # noqa: E731
        proxy.queue(Fault(), Fault("new_version", action=put_new))
        with RangeEngine(part_size=1 << 20, max_inflight_parts=1, **opts) as eng:
            with pytest.raises(errors.ObjectChangedError, match="s3://pins/versions/v.bin"):
                eng.read_into(
                    ["s3://pins/versions/v.bin"], table([(0, 0, len(old), 0)]), bytearray(len(old))
                )
            assert bytes(eng.read("s3://pins/versions/v.bin")) == new


def test_s3_listing_sizes_pin_the_reads_that_follow(rclone_s3):
    s3 = rclone_s3.boto3()
    s3.put_object(Bucket=PINS, Key="versions/listed/a.bin", Body=payload(5000, 3))
    with RangeEngine(**rclone_s3.options) as eng:
        assert eng.list("s3://pins/versions/listed/") == ["s3://pins/versions/listed/a.bin"]
        s3.put_object(Bucket=PINS, Key="versions/listed/a.bin", Body=payload(6000, 4))
        with pytest.raises(errors.ObjectChangedError, match="size was 5000 bytes"):
            eng.read_ranges("s3://pins/versions/listed/a.bin", [(0, 100)])
        assert eng.size("s3://pins/versions/listed/a.bin") == 6000  # forgotten: a fresh HEAD


def test_s3_etags_pin_a_same_size_rewrite(tmp_path):
    """With ETags (rclone --etag-hash MD5) a rewrite of the same size is caught too."""
    (tmp_path / "bkt").mkdir()
    server = start_rclone(str(tmp_path), "--etag-hash", "MD5")
    try:
        s3 = server.boto3()
        old, new = payload(2 << 20, 5), payload(2 << 20, 6)
        s3.put_object(Bucket="bkt", Key="e.bin", Body=old)
        with proxy_to(server.port) as proxy:
            opts = {**server.options, "endpoint_url": proxy.endpoint}
            put_new = lambda: s3.put_object(Bucket="bkt", Key="e.bin", Body=new)  # noqa: E731
            proxy.queue(Fault(), Fault("new_version", action=put_new))
            with RangeEngine(part_size=1 << 20, max_inflight_parts=1, **opts) as eng:
                with pytest.raises(errors.ObjectChangedError, match="ETag"):
                    eng.read_ranges("s3://bkt/e.bin", [(0, len(old))])
    finally:
        stop(server)


def test_a_loader_without_an_engine_reads_with_its_datasets(rclone_s3):
    """DataLoader(ds) with no engine= reaches the store ds was listed from (its endpoint and
    credentials: it was AccessDenied) and pins the versions ds's offsets came from."""
    import numpy as np

    import fastload

    s3 = rclone_s3.boto3()
    s3.put_object(Bucket=PINS, Key="versions/loader/r.bin", Body=bytes(range(256)) * 4)
    with RangeEngine(**rclone_s3.options) as eng:
        ds = fastload.RecordDataset("s3://pins/versions/loader/", (16,), np.uint8, engine=eng)
        with fastload.DataLoader(ds, batch_size=16) as loader:
            got = np.concatenate([np.asarray(b) for b in loader])
        assert got.tobytes() == bytes(range(256)) * 4
        s3.put_object(Bucket=PINS, Key="versions/loader/r.bin", Body=bytes(2048))
        with fastload.DataLoader(ds, batch_size=16) as loader:
            with pytest.raises(errors.ObjectChangedError, match="size was 1024 bytes"):
                list(loader)
