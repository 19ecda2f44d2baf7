"""The s3:// backend against ``rclone serve s3`` on 127.0.0.1: reads, listings, errors,
addressing, faults and TLS."""

from __future__ import annotations

import os
import ssl
import time

import pytest

from fastload import errors
from fastload.storage import sigv4
from fastload.storage.engine import RangeEngine
from fastload.storage.network_options import NetworkOptions
from fastload.storage.s3_backend import S3Backend
from fastload.storage.uri import parse_uri as eng_parse
from tests.support.network import FAST_RETRY, expected, no_secret, table
from tests.support.servers import (
    ODD_KEYS,
    S3_OBJECTS,
    SECRET_KEY,
    Fault,
    make_tls,
    payload,
    proxy_to,
    start_rclone,
    stop,
)

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("clean_aws_env")]


# -- reads --------------------------------------------------------------------------


def test_whole_ranged_and_odd_keys(rclone_s3):
    with RangeEngine(part_size=1 << 20, max_inflight_parts=4, **rclone_s3.options) as eng:
        data = expected("data/big.bin")
        assert eng.size("s3://data/big.bin") == len(data)
        assert bytes(eng.read("s3://data/big.bin")) == data
        ranges = [(0, 10), (123_456, 2_000_000), (len(data) - 1, 1)]
        assert bytes(eng.read_ranges("s3://data/big.bin", ranges)) == b"".join(
            data[o : o + n] for o, n in ranges
        )
        odd = "data/odd name+chars é.bin"
        assert bytes(eng.read(f"s3://{odd}")) == expected(odd)


def test_odd_keys_round_trip_through_list_and_read(rclone_s3):
    """A key is taken literally after s3://bucket/: '%', '?' and '#' are part of it."""
    want = sorted(f"s3://data/odd/{k}" for k in ODD_KEYS)
    with RangeEngine(**rclone_s3.options) as eng:
        listed = eng.list("s3://data/odd/")
        assert listed == want
        for uri in listed:
            key = uri[len("s3://") :]
            assert eng_parse(uri).path == key[len("data/") :]
            assert eng.size(uri) == S3_OBJECTS[key][0]
            assert bytes(eng.read(uri)) == expected(key), uri
        rows = [(i, 0, S3_OBJECTS[u[5:]][0], 0) for i, u in enumerate(listed)]
        for row in rows:  # and the data plane alone (sizes known: no HEAD)
            out = bytearray(row[2])
            eng.read_into([listed[row[0]]], table([(0, 0, row[2], 0)]), out)
            assert bytes(out) == expected(listed[row[0]][5:])


def test_keys_xml_cannot_hold_are_listed(rclone_s3):
    """Listings ask for encoding-type=url: a control character in one key broke the whole XML."""
    s3 = rclone_s3.boto3()
    s3.create_bucket(Bucket="ctlkeys")
    keys = {"ctl\x01x.bin": b"one", "tab\tx.bin": b"two", "plus+ sp%41.bin": b"three"}
    for k, v in keys.items():
        s3.put_object(Bucket="ctlkeys", Key=k, Body=v)
    with RangeEngine(**rclone_s3.options) as eng:
        listed = eng.list("s3://ctlkeys/")
        assert listed == sorted(f"s3://ctlkeys/{k}" for k in keys)
        for uri in listed:
            assert bytes(eng.read(uri)) == keys[uri[len("s3://ctlkeys/") :]]


def test_many_small_objects_in_one_call_match_boto3(rclone_s3):
    keys = sorted(k for k in S3_OBJECTS if k.startswith("data/small/"))
    rows, dst = [], 0
    for i, k in enumerate(keys):
        n = S3_OBJECTS[k][0]
        rows.append((i, 0, n, dst))
        dst += n
    out = bytearray(dst)
    with RangeEngine(max_inflight_parts=16, **rclone_s3.options) as eng:
        eng.read_into([f"s3://{k}" for k in keys], table(rows), out)
        assert eng.backend("s3").stats()["requests"] == len(keys)  # no HEADs, one GET each
    s3 = rclone_s3.boto3()
    with RangeEngine(**rclone_s3.options) as eng:
        info = eng.backend("s3").stat(eng_parse(f"s3://{keys[0]}"))
    head = s3.head_object(Bucket="data", Key=keys[0].split("/", 1)[1])
    last_modified = head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
    assert info == {
        "size": head["ContentLength"],
        "etag": head.get("ETag"),
        "last_modified": last_modified,  # the version tag when the ETag is empty (rclone)
    }
    for i, k in enumerate(keys):
        bucket, key = k.split("/", 1)
        want = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert bytes(out[rows[i][3] : rows[i][3] + rows[i][2]]) == want


def test_list_prefix_past_one_page(rclone_s3):
    with proxy_to(rclone_s3.port) as proxy:
        opts = {**rclone_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(list_page_size=7, **opts) as eng:
            listed = eng.list("s3://data/small/")
            assert listed == sorted(f"s3://{k}" for k in S3_OBJECTS if k.startswith("data/small/"))
            pages = [p for (_, p, _, _) in proxy.log if "list-type=2" in p]
            assert len(pages) == -(-40 // 7)
            assert all("continuation-token" in p for p in pages[1:])
            n_before = len(proxy.log)
            assert eng.size(listed[3]) == S3_OBJECTS["data/small/obj-003.bin"][0]
            assert len(proxy.log) == n_before  # the listing's sizes answer size() without a HEAD
        with RangeEngine(**opts) as eng:
            assert len(eng.list("s3://data")) == len(S3_OBJECTS)
            assert eng.list("s3://empty/") == []


def test_list_dir_lists_one_level_of_odd_prefixes(rclone_s3):
    """One level under a prefix (delimiter '/'): objects with their sizes, sub-prefixes,
    every page; the prefix's characters are sent and signed as they are."""
    with proxy_to(rclone_s3.port) as proxy:
        opts = {**rclone_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(list_page_size=7, **opts) as eng:
            s3 = eng.backend("s3")
            page = s3.list_dir(eng_parse("s3://data/small/"))
            want = sorted(k for k in S3_OBJECTS if k.startswith("data/small/"))
            assert page.keys == [k[len("data/") :] for k in want] and not page.prefixes
            assert page.sizes == [S3_OBJECTS[k][0] for k in want]
            assert len([p for (_, p, _, _) in proxy.log if "delimiter=" in p]) == -(-40 // 7)
            assert s3.known_size(eng_parse("s3://" + want[3])) == S3_OBJECTS[want[3]][0]
            odd = s3.list_dir(eng_parse("s3://data/odd/"))
            direct = sorted(k for k in ODD_KEYS if "/" not in k)
            assert odd.keys == [f"odd/{k}" for k in direct] and odd.prefixes == ["odd/sp ace/"]
            inner = s3.list_dir(eng_parse("s3://data/odd/sp ace/"))
            assert inner.keys == ["odd/sp ace/ü€😀.bin"]
            top = s3.list_dir(eng_parse("s3://data"))
            assert top.prefixes == ["odd/", "small/"]
            assert top.keys == ["big.bin", "odd name+chars é.bin"]
            probe = s3.list_dir(eng_parse("s3://data/small/"), max_keys=1)
            assert len(probe.keys) == 1  # one page of one key: a probe
            assert s3.list_dir(eng_parse("s3://empty")) == ([], [], [], [], [], [])
            with pytest.raises(errors.ObjectNotFoundError, match="no-such-bucket"):
                s3.list_dir(eng_parse("s3://no-such-bucket"))


def test_forget_lets_reads_see_a_rewritten_object(rclone_s3):
    """Reads are pinned to the version a listing saw; engine.forget(prefix) drops what
    was learned under the prefix (a folder: 'd' is not 'dx.bin'), forget() all of it."""
    s3 = rclone_s3.boto3()
    s3.create_bucket(Bucket="rewritten")
    for key, body in [("d/a.bin", b"A" * 100), ("d/b.bin", b"B" * 10), ("dx.bin", b"X" * 10)]:
        s3.put_object(Bucket="rewritten", Key=key, Body=body)
    with RangeEngine(**rclone_s3.options) as eng:
        assert len(eng.list("s3://rewritten/")) == 3
        time.sleep(1.1)  # a new Last-Modified second
        s3.put_object(Bucket="rewritten", Key="d/a.bin", Body=b"Z" * 150)
        s3.put_object(Bucket="rewritten", Key="dx.bin", Body=b"Y" * 20)
        eng.forget("s3://rewritten/d")
        s3b = eng.backend("s3")
        assert s3b.known_size(eng_parse("s3://rewritten/d/b.bin")) is None
        assert s3b.known_size(eng_parse("s3://rewritten/dx.bin")) == 10  # not under d/
        assert eng.size("s3://rewritten/d/a.bin") == 150
        assert bytes(eng.read_ranges("s3://rewritten/d/a.bin", [(140, 10)])) == b"Z" * 10
        with pytest.raises(errors.ObjectChangedError, match="dx.bin"):
            eng.read_ranges("s3://rewritten/dx.bin", [(0, 5)])  # still pinned: it changed
        eng.list("s3://rewritten/")
        s3.put_object(Bucket="rewritten", Key="dx.bin", Body=b"W" * 30)
        eng.forget()
        assert bytes(eng.read_ranges("s3://rewritten/dx.bin", [(25, 5)])) == b"W" * 5


def test_a_listing_that_cannot_continue_is_an_error(http_server):
    """IsTruncated without a new NextContinuationToken would lose keys (or loop forever)."""
    page = (
        "<ListBucketResult><Contents><Key>a.bin</Key><Size>3</Size></Contents>"
        "<IsTruncated>true</IsTruncated>{}</ListBucketResult>"
    )
    with RangeEngine(endpoint_url=http_server.url("").rstrip("/"), anonymous=True) as eng:
        http_server.put(
            "bkt", page.format("").encode()
        )  # the server answers every ?list-type=2 with it
        with pytest.raises(
            errors.HTTPStatusError, match="s3://bkt/: ListObjectsV2 .*no NextContinuationToken"
        ):
            eng.list("s3://bkt/")
        http_server.put(
            "bkt", page.format("<NextContinuationToken>t+1</NextContinuationToken>").encode()
        )
        with pytest.raises(errors.HTTPStatusError, match="the same NextContinuationToken"):
            eng.list("s3://bkt/")
        assert len(http_server.server.seen_headers) == 3


# -- errors -------------------------------------------------------------------------


def test_missing_keys_and_buckets(rclone_s3):
    with RangeEngine(**rclone_s3.options) as eng:
        with pytest.raises(FileNotFoundError, match=r"s3://data/nope.bin: HEAD"):
            eng.size("s3://data/nope.bin")
        with pytest.raises(FileNotFoundError, match=r"s3://data/nope.bin bytes 0-9: .*NoSuchKey"):
            eng.read_into(["s3://data/nope.bin"], table([(0, 0, 10, 0)]), bytearray(10))
        with pytest.raises(FileNotFoundError, match="NoSuchBucket"):
            eng.read_into(["s3://nobucket/x"], table([(0, 0, 10, 0)]), bytearray(10))
        with pytest.raises(ValueError, match="object size is 1000"):
            eng.read_ranges("s3://data/small/obj-000.bin", [(1000, 10)])
        with pytest.raises(ValueError, match="not an object"):
            eng.read_ranges("s3://data/small/", [(0, 10)])
    with pytest.raises(ValueError, match="no bucket"):
        RangeEngine().size("s3:///key")
    # malformed URIs are refused before any request (no server listens on port 1)
    for uri, match in [
        ("s3://a@b:1/key", "not a valid S3 bucket name"),
        ("s3://bu cket/k", "bucket name"),
        ("http://exa mple/x", "cannot hold ' '"),
        ("http://h:99999/x", "bad port"),
        ("http://[::1/x", "malformed URL"),
        ("https://:80/x", "no host"),
        ("gs://b/k", "unsupported scheme"),
    ]:
        with RangeEngine(endpoint_url="http://127.0.0.1:1", anonymous=True, max_retries=0) as eng:
            with pytest.raises(ValueError, match=match):
                eng.read_ranges(uri, [(0, 10)])
            assert eng._backends == {} or eng.backend("s3").stats()["requests"] == 0


def test_wrong_credentials_never_leak(rclone_s3, caplog):
    caplog.set_level("DEBUG")
    opts = {
        **rclone_s3.options,
        "secret_access_key": SECRET_KEY + "x",
        "session_token": "TOKEN-xyz",
    }
    with RangeEngine(**opts) as eng:
        for call in (
            lambda: eng.size("s3://data/big.bin"),
            lambda: eng.read_into(["s3://data/big.bin"], table([(0, 0, 10, 0)]), bytearray(10)),
            lambda: eng.list("s3://data/"),
        ):
            with pytest.raises(PermissionError) as ei:
                call()
            no_secret(str(ei.value) + repr(ei.value) + repr(ei.value.args))
            chained = ei.value.__cause__ or ei.value.__context__
            no_secret(repr(chained) + str(chained))
            assert "s3://data" in str(ei.value) and ei.value.http_status == 403
        no_secret(repr(eng.backend("s3").opts) + repr(eng.backend("s3").config))
    no_secret(caplog.text)


# -- addressing ---------------------------------------------------------------------


def test_addressing_styles():
    aws = S3Backend(NetworkOptions.from_kwargs(anonymous=True, region="eu-west-1"))
    assert aws._location("bkt", "a b/c")[0] == "https://bkt.s3.eu-west-1.amazonaws.com/a%20b/c"
    assert aws._location("my.bkt", "k")[0] == "https://s3.eu-west-1.amazonaws.com/my.bkt/k"
    custom = S3Backend(NetworkOptions.from_kwargs(anonymous=True, endpoint_url="http://h:9000/"))
    assert custom._location("bkt", "k")[:2] == ("http://h:9000/bkt/k", "h:9000")
    virt = S3Backend(
        NetworkOptions.from_kwargs(
            anonymous=True, endpoint_url="https://h:443", addressing_style="virtual"
        )
    )
    assert virt._location("bkt", "k")[:2] == ("https://bkt.h/k", "bkt.h")
    with pytest.raises(ValueError, match="addressing_style='virtual'.*IP address 127.0.0.1"):
        S3Backend(
            NetworkOptions.from_kwargs(
                anonymous=True, endpoint_url="http://127.0.0.1:9000", addressing_style="virtual"
            )
        )


def test_object_urls_match_botocore_for_odd_keys():
    """Keys are encoded in the URL (and so in the signed path) exactly as botocore encodes them."""
    import boto3
    from botocore.awsrequest import AWSResponse
    from botocore.config import Config

    keys = [*ODD_KEYS, "a//b/../c", " lead", "x/~y/z-_.txt"]
    sent: list[str] = []

    class EmptyBody:
        def stream(self, **_):
            yield b""

    def capture(request, **_):
        sent.append(request.url)
        return AWSResponse(request.url, 200, {}, EmptyBody())  # never reaches the network

    for style in ("path", "virtual"):
        sent.clear()
        client = boto3.client(
            "s3",
            endpoint_url="http://s3.test:9000",
            aws_access_key_id="a",
            aws_secret_access_key="b",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": style}),
        )
        client.meta.events.register("before-send.s3.*", capture)
        ours = S3Backend(
            NetworkOptions.from_kwargs(
                anonymous=True, endpoint_url="http://s3.test:9000", addressing_style=style
            )
        )
        for key in keys:
            client.head_object(Bucket="bkt", Key=key)
        assert [ours._location("bkt", k)[0] for k in keys] == sent
    # a ListObjectsV2 continuation token holds '+', '/' and '='; a prefix may hold anything
    sent.clear()
    client.list_objects_v2(
        Bucket="bkt", Prefix="sp ace/ü+=~", ContinuationToken="a+b/c==", MaxKeys=7
    )
    theirs = sorted(
        p for p in sent[0].partition("?")[2].split("&") if not p.startswith("encoding-type")
    )
    ours_q = sigv4.canonical_query(
        {
            "list-type": "2",
            "prefix": "sp ace/ü+=~",
            "continuation-token": "a+b/c==",
            "max-keys": "7",
        }
    )
    assert ours_q.split("&") == theirs


# -- faults -------------------------------------------------------------------------


def test_faults_are_retried_byte_exact(rclone_s3, fault_proxy_s3):
    opts = {**rclone_s3.options, "endpoint_url": fault_proxy_s3.endpoint, **FAST_RETRY}
    data = expected("data/big.bin")
    fault_proxy_s3.queue(
        Fault("slowdown", retry_after=0),
        Fault("reset", after=100_000),
        Fault("short", after=300_000),
        Fault("status", status=500),
    )
    with RangeEngine(part_size=1 << 20, max_inflight_parts=2, **opts) as eng:
        out = eng.read_ranges("s3://data/big.bin", [(0, len(data))])
        assert bytes(out) == data
        assert eng.backend("s3").stats()["retries"] == 4
    fault_proxy_s3.queue(*[Fault("slowdown")] * 3)
    with RangeEngine(max_retries=2, **opts) as eng:
        with pytest.raises(OSError, match="max_retries.*SlowDown") as ei:
            eng.read_ranges("s3://data/big.bin", [(0, 1000)])
        assert ei.value.http_status == 503


# -- TLS ----------------------------------------------------------------------------


def test_https_s3_with_ca_bundle_from_environment(tmp_path, monkeypatch):
    tls = make_tls(str(tmp_path))
    root = tmp_path / "root"
    (root / "bkt").mkdir(parents=True)
    data = payload(100_000, 9)
    (root / "bkt" / "x.bin").write_bytes(data)
    server = start_rclone(str(root), "--cert", tls.cert, "--key", tls.key)
    try:
        opts = {**server.options, "endpoint_url": f"https://127.0.0.1:{server.port}"}
        with RangeEngine(max_retries=0, **opts) as eng, pytest.raises(errors.CertificateError):
            eng.read_into(["s3://bkt/x.bin"], table([(0, 0, 10, 0)]), bytearray(10))
        monkeypatch.setenv("AWS_CA_BUNDLE", tls.ca)
        with RangeEngine(**opts) as eng:
            assert bytes(eng.read("s3://bkt/x.bin")) == data
        ssl.create_default_context(cafile=tls.ca)  # the bundle is a valid PEM
    finally:
        stop(server)
        os.environ.pop("AWS_CA_BUNDLE", None)
