"""S3 listings (fastload.storage.s3_listing) against ``rclone serve s3`` on 127.0.0.1:
nested and flat layouts against a sorted reference, page boundaries, sub-prefixes listed
as chains of their own, a prefix that vanishes mid-listing, errors; and the page reader
on hand-written answers."""

from __future__ import annotations

import os
import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from fastload import errors
from fastload.storage.engine import RangeEngine
from fastload.storage.object_version import object_version
from fastload.storage.s3_listing import SPLIT_MIN_KEYS, next_token, read_page, split_points
from fastload.storage.uri import parse_uri
from tests.support.network import FAST_RETRY, no_secret
from tests.support.servers import SECRET_KEY, Fault, proxy_to, start_rclone, stop

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("clean_aws_env")]

# key (under bucket "tree") -> size; written before the server starts
TREE: dict[str, int] = {}
TREE.update({f"flat/k{i:05d}": i % 13 for i in range(2500)})
TREE.update({f"b1000/k{i:04d}": 1 for i in range(1000)})
TREE.update({f"b1001/k{i:04d}": 2 for i in range(1001)})
# sparse numbers, then dense ones: a stretch guessed as one page holds five
TREE.update({f"denser/k{n:05d}": 1 for n in [*range(0, 1000, 10), *range(1000, 1500)]})
# not numbered: no guess where its pages end
TREE.update({f"hashed/{(i * 2654435761) % 2**32:08x}.bin": 3 for i in range(600)})
TREE.update(
    {
        "nested/a.bin": 3,
        "nested/d1.txt": 4,  # sorts between 'd1-x/' and 'd1/' ('-' < '.' < '/')
        **{f"nested/d1/k{i:02d}": i for i in range(30)},
        **{f"nested/d1-x/k{i}": 5 for i in range(5)},
        **{f"nested/d2/e/f/k{i:02d}": 6 for i in range(12)},
        **{f"nested/sp ace/ü€/k{i}+%.bin": 7 for i in range(3)},
        "nested/z/only": 8,
        # 40 folders of 2: more sub-prefixes than chains one page may start
        **{f"nested/many/f{i:02d}/k{j}": 9 for i in range(40) for j in range(2)},
    }
)


@pytest.fixture(scope="module")
def tree_s3(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("s3tree"))
    for key, size in TREE.items():
        path = os.path.join(root, "tree", key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x" * size)
    s = start_rclone(root)
    yield s
    stop(s)


def reference(prefix: str) -> tuple[list[str], list[int]]:
    keys = sorted(k for k in TREE if k.startswith(prefix))
    return [f"s3://tree/{k}" for k in keys], [TREE[k] for k in keys]


def list_requests(proxy) -> list[dict[str, str]]:
    """The query of every ListObjectsV2 request the proxy saw, in order."""
    return [
        {k: v[0] for k, v in parse_qs(urlsplit(p).query, keep_blank_values=True).items()}
        for (_, p, _, _) in proxy.log
        if "list-type=2" in p
    ]


@pytest.mark.parametrize("concurrency", [1, 2, 8])
def test_nested_and_flat_listings_equal_a_sorted_reference(tree_s3, concurrency):
    with RangeEngine(list_concurrency=concurrency, **tree_s3.options) as eng:
        for prefix in ("nested/", "nested", "nested/d1", "nested/many/", "flat/", ""):
            assert eng.list_sizes(f"s3://tree/{prefix}") == reference(prefix), prefix
        assert eng.list("s3://tree/nested/sp ace/") == reference("nested/sp ace/")[0]
        assert eng.list("s3://tree/nope/") == []
    with RangeEngine(list_concurrency=concurrency, list_page_size=7, **tree_s3.options) as eng:
        for prefix in ("nested/", "nested", "nested/many/f0"):
            assert eng.list_sizes(f"s3://tree/{prefix}") == reference(prefix), prefix


def test_sub_prefixes_are_listed_as_chains_of_their_own(tree_s3):
    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(list_concurrency=8, **opts) as eng:
            assert eng.list_sizes("s3://tree/nested/") == reference("nested/")
            sent = list_requests(proxy)
            # the folder question first, then one chain per folder (8 of them)
            assert sent[0]["delimiter"] == "/" and sent[0]["prefix"] == "nested/"
            assert sorted(q["prefix"] for q in sent[1:]) == sorted(
                f"nested/{d}/" for d in ("d1", "d1-x", "d2", "many", "sp ace", "z")
            )
            assert not [q for q in sent[1:] if "delimiter" in q or "start-after" in q]
            assert not [m for (m, _, _, _) in proxy.log if m == "HEAD"]
        n = len(proxy.log)
        with RangeEngine(list_concurrency=1, list_page_size=7, **opts) as eng:
            assert eng.list_sizes("s3://tree/nested/") == reference("nested/")
            sent = list_requests(proxy)[n:]
            # one chain of pages, no folder question
            assert len(sent) == -(-len(reference("nested/")[0]) // 7)
            assert not [q for q in sent if "delimiter" in q]
            assert all("continuation-token" in q for q in sent[1:])


def test_a_listing_of_many_small_folders_starts_a_bounded_number_of_chains(tree_s3):
    """40 folders, 2 at a time: at most 4 x 2 chains start from one page (runs of
    adjacent folders), each keeping only its own folders' keys."""
    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(list_concurrency=2, **opts) as eng:
            assert eng.list_sizes("s3://tree/nested/many/") == reference("nested/many/")
            sent = list_requests(proxy)
            assert len(sent) == 1 + 8 and sum("start-after" in q for q in sent) == 8


def test_a_bucket_or_a_prefix_without_its_slash_lists_its_one_folder_by_sub_prefixes(tree_s3):
    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(**opts) as eng:
            assert eng.list_sizes("s3://tree/nested") == reference("nested")
            sent = list_requests(proxy)
            assert sent[0]["prefix"] == "nested" and sent[0]["delimiter"] == "/"
            assert sent[1]["prefix"] == "nested/" and sent[1]["delimiter"] == "/"
            assert sum(q["prefix"] == "nested/d1/" for q in sent) == 1


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize(
    ("prefix", "page_size", "pages"),
    [
        ("b1000/", 1000, (1, 2)),  # a server may or may not say "truncated" at exactly one page
        ("b1001/", 1000, (2,)),
        ("b1000/", 500, (2, 3)),
        ("b1001/", 500, (3,)),
        ("b1000/k00", 10, (10, 11)),  # 100 keys
        ("b1001/k10", 1, (1, 2)),  # 1 key
        ("b1000/", 250, (4, 5)),
        ("b1001/", 250, (5,)),
    ],
)
def test_page_boundaries(tree_s3, concurrency, prefix, page_size, pages):
    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(list_concurrency=concurrency, list_page_size=page_size, **opts) as eng:
            assert eng.list_sizes(f"s3://tree/{prefix}") == reference(prefix)
            sent = len(list_requests(proxy))
            if concurrency == 1:
                assert sent in pages
            else:  # a numbered listing of full pages is split: a guess past the end costs
                # one request, at most `concurrency` of them
                assert min(pages) <= sent <= max(pages) + concurrency


def test_a_long_numbered_listing_is_split_into_stretches_listed_at_once(tree_s3):
    """2,500 numbered keys in pages of 250: after the first page, stretches from guessed
    points (start-after) are listed at once, each exactly (no key twice, none lost)."""
    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(list_page_size=250, list_concurrency=4, **opts) as eng:
            assert eng.list_sizes("s3://tree/flat/") == reference("flat/")
            sent = list_requests(proxy)
            starts = [q["start-after"] for q in sent if "start-after" in q]
            # the first page spans 250 numbers: guesses every 250 after it
            assert set(starts) >= {f"flat/k{n:05d}" for n in (499, 749, 999, 1249)}
            # 10 pages' worth, a few guesses past the end
            assert 10 <= len(sent) <= 10 + 4 + 4
        n = len(proxy.log)
        with RangeEngine(list_page_size=100, list_concurrency=4, **opts) as eng:
            assert eng.list_sizes("s3://tree/denser/") == reference("denser/")
            starts = [q["start-after"] for q in list_requests(proxy)[n:] if "start-after" in q]
            assert set(starts) >= {f"denser/k{n:05d}" for n in (1990, 2990, 3990)}
            assert "denser/k01199" in starts  # (990, 1990] held 5 pages: split again
        n = len(proxy.log)
        with RangeEngine(list_page_size=100, **opts) as eng:
            assert eng.list_sizes("s3://tree/hashed/") == reference("hashed/")
            sent = list_requests(proxy)[n:]
            assert len(sent) == 6 and not [q for q in sent if "start-after" in q]


def test_split_points():
    keys = [f"list/flat/k{i:05d}" for i in range(1000)]
    assert split_points(keys, "list/flat/", 1000, 3) == [
        "list/flat/k01999",
        "list/flat/k02999",
        "list/flat/k03999",
    ]
    # every other number used: a page of 500 keys spans 1,000 numbers
    assert split_points(keys[::2], "list/flat/", 500, 2) == ["list/flat/k01998", "list/flat/k02998"]
    assert split_points(keys[:100], "list/flat/", 100, 10**6)[-1] == "list/flat/k99999"
    assert split_points([f"s-{i:03d}.tar" for i in range(990, 1000)], "", 10, 5) == []  # full
    assert split_points(["k1", "k10", "k100", "k1000"], "", 4, 4) == []  # not zero-padded
    assert split_points(["a/x", "a/y"], "a/", 2, 4) == []  # no number
    assert SPLIT_MIN_KEYS > 7  # the finely paged listings of the tests stay one chain


def test_a_listing_keeps_sizes_and_version_tags(tree_s3):
    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(**opts) as eng:
            names, sizes = eng.list_sizes("s3://tree/nested/")
            backend = eng.backend("s3")
            n = len(proxy.log)
            for name, size in zip(names, sizes, strict=True):
                src = parse_uri(name)
                assert eng.size(name) == size
                listed = object_version(eng, src, fresh=False)
                assert listed[0] == size and listed[1] and listed[1].startswith("mtime:")
            assert len(proxy.log) == n  # sizes and versions from the listing: no request
            for name in names[:5]:  # the listing's version is the one a HEAD finds
                assert object_version(eng, parse_uri(name)) == backend.known_version(
                    parse_uri(name)
                )


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_prefix_that_vanishes_mid_listing(tree_s3, concurrency):
    """Objects deleted while a listing runs: no error, no hang; every object that stays is
    listed once, nothing that never existed is, the order is sorted."""
    s3 = tree_s3.boto3()
    bucket = f"gone{concurrency}"
    s3.create_bucket(Bucket=bucket)
    everything = {f"top/a/k{i:02d}": 1 for i in range(20)}
    everything.update({f"top/b/k{i:02d}": 2 for i in range(20)})
    everything.update({"top/c.bin": 3})
    for key, size in everything.items():
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)

    def drop_a() -> None:
        for key in everything:
            if key.startswith("top/a/"):
                s3.delete_object(Bucket=bucket, Key=key)

    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint}
        with RangeEngine(list_concurrency=concurrency, list_page_size=7, **opts) as eng:
            proxy.queue(Fault(), Fault("new_version", action=drop_a))  # before request 2
            names, sizes = eng.list_sizes(f"s3://{bucket}/top/")
            got = [n[len(f"s3://{bucket}/") :] for n in names]
            assert got == sorted(set(got)) and set(got) <= set(everything)
            assert {k for k in everything if not k.startswith("top/a/")} <= set(got)
            assert sizes == [everything[k] for k in got]
            assert eng.list(f"s3://{bucket}/top/a/") == []
            proxy.queue(Fault("new_version", action=lambda: None))
            for key in [k for k in everything if not k.startswith("top/a/")]:
                s3.delete_object(Bucket=bucket, Key=key)
            assert eng.list(f"s3://{bucket}/top/") == []  # the whole prefix gone


def _list_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fastload-list")]


def test_errors_name_the_uri_and_hold_no_secret(tree_s3, caplog):
    caplog.set_level("DEBUG")
    bad = {**tree_s3.options, "secret_access_key": SECRET_KEY + "x", "session_token": "TOKEN-xyz"}
    for concurrency in (1, 8):
        with RangeEngine(list_concurrency=concurrency, **bad) as eng:
            with pytest.raises(PermissionError) as ei:
                eng.list("s3://tree/nested/")
            text = str(ei.value) + repr(ei.value) + repr(ei.value.args)
            no_secret(text + repr(ei.value.__cause__ or ei.value.__context__))
            assert "s3://tree/nested/" in str(ei.value) and ei.value.http_status == 403
    # one sub-prefix's chain fails: the listing raises (naming the URI), nothing is left
    # running, and the next listing on the same engine works
    with proxy_to(tree_s3.port) as proxy:
        opts = {**tree_s3.options, "endpoint_url": proxy.endpoint, "max_retries": 1, **FAST_RETRY}
        with RangeEngine(**opts) as eng:
            proxy.queue(Fault(), Fault("status", status=403, code="AccessDenied"))
            with pytest.raises(PermissionError, match=r"s3://tree/nested/: GET .*AccessDenied"):
                eng.list("s3://tree/nested/")
            assert not _list_threads()
            assert eng.list_sizes("s3://tree/nested/") == reference("nested/")
        with RangeEngine(**{**opts, "max_retries": 0}) as eng:
            proxy.queue(Fault(), Fault("status", status=500))
            with pytest.raises(errors.HTTPStatusError, match=r"s3://tree/nested/: GET .* 500"):
                eng.list("s3://tree/nested/")
            assert not _list_threads()
    no_secret(caplog.text)


def test_list_concurrency_is_checked():
    for bad in (0, 65, -1, 2.5, "8", True):
        with pytest.raises((ValueError, TypeError), match="list_concurrency"):
            RangeEngine(list_concurrency=bad).backend("s3")


# -- the page reader ------------------------------------------------------------------

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _page(contents: str, tail: str = "<IsTruncated>false</IsTruncated>", ns: str = NS) -> bytes:
    return (
        f"<?xml version='1.0'?><ListBucketResult {ns}>{contents}{tail}</ListBucketResult>".encode()
    )


def _obj(key: str, size: str = "3", etag: str = "&quot;e1&quot;") -> str:
    return (
        f"<Contents><Key>{key}</Key><LastModified>2026-12-01T20:50:34.529Z</LastModified>"
        f"<ETag>{etag}</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
    )


def test_read_page_decodes_keys_as_the_server_says():
    enc = "<EncodingType>url</EncodingType>"
    body = _page(
        enc
        + _obj("a%2Bb+c%26.bin")
        + _obj("dir/")
        + "<CommonPrefixes><Prefix>p%2F/</Prefix></CommonPrefixes>"
    )
    page = read_page(body, "s3://b/", 200)
    assert page.keys == ["a+b c&.bin"] and page.sizes == [3] and page.prefixes == ["p//"]
    assert page.etags == [
        b"&quot;e1&quot;"
    ]  # decoded on use (fastload.storage.s3_listing.tag_text)
    plain = read_page(_page(_obj("a+b&amp;%41.bin", "12")), "s3://b/", 200)
    assert plain.keys == ["a+b&%41.bin"] and plain.sizes == [12]  # not encoded: taken as is
    assert next_token(body, "s3://b/", 200, None) is None


def test_read_page_falls_back_to_an_xml_parser_for_what_the_expressions_miss():
    prefixed = (
        b"<s3:ListBucketResult xmlns:s3='http://s3.amazonaws.com/doc/2006-03-01/'>"
        b"<s3:Contents><s3:Key>k.bin</s3:Key><s3:Size>5</s3:Size></s3:Contents>"
        b"<s3:IsTruncated>true</s3:IsTruncated>"
        b"<s3:NextContinuationToken>t1</s3:NextContinuationToken></s3:ListBucketResult>"
    )
    page = read_page(prefixed, "s3://b/", 200)
    assert page.keys == ["k.bin"] and page.sizes == [5]
    assert next_token(prefixed, "s3://b/", 200, None) == "t1"
    no_etag = _page("<Contents><Key>x</Key><Size>9</Size></Contents>" + _obj("y"))
    assert read_page(no_etag, "s3://b/", 200).sizes == [9, 3]


def test_read_page_keeps_directory_markers_apart():
    """A key ending in '/' (a folder made by a console or s3fs's mkdir) is no object, but
    says the folder is there: fastload's filesystem lists such a folder as s3fs does."""
    enc = "<EncodingType>url</EncodingType>"
    body = _page(enc + _obj("d/") + _obj("d/a.bin") + _obj("d/sp%20ace/"))
    page = read_page(body, "s3://b/d/", 200)
    assert page.keys == ["d/a.bin"] and page.sizes == [3]
    assert page.markers == ["d/", "d/sp ace/"]
    assert read_page(_page(_obj("d/a.bin")), "s3://b/", 200).markers == []
    prefixed = (  # the XML parser's way (a namespace prefix) keeps them apart too
        b"<s3:ListBucketResult xmlns:s3='http://s3.amazonaws.com/doc/2006-03-01/'>"
        b"<s3:Contents><s3:Key>m/</s3:Key><s3:Size>0</s3:Size></s3:Contents>"
        b"<s3:Contents><s3:Key>m/k</s3:Key><s3:Size>2</s3:Size></s3:Contents>"
        b"</s3:ListBucketResult>"
    )
    page = read_page(prefixed, "s3://b/", 200)
    assert page.keys == ["m/k"] and page.markers == ["m/"]


def test_read_page_errors_name_the_uri():
    with pytest.raises(errors.HTTPStatusError, match=r"s3://b/p/: ListObjectsV2 answer is not XML"):
        read_page(b"<html>proxy says hi</html>", "s3://b/p/", 200)
    with pytest.raises(errors.HTTPStatusError, match="not XML"):
        read_page(b"<ListBucketResult><Contents>", "s3://b/p/", 200)
    with pytest.raises(errors.HTTPStatusError, match="not XML"):
        read_page(_page(_obj("k", "lots")), "s3://b/p/", 200)
    truncated = _page(_obj("k"), "<IsTruncated>true</IsTruncated>")
    with pytest.raises(errors.HTTPStatusError, match="s3://b/p/: .*no NextContinuationToken"):
        next_token(truncated, "s3://b/p/", 200, None)
    again = _page(
        _obj("k"), "<IsTruncated>true</IsTruncated><NextContinuationToken>t</NextContinuationToken>"
    )
    assert next_token(again, "s3://b/p/", 200, None) == "t"
    with pytest.raises(errors.HTTPStatusError, match="the same NextContinuationToken"):
        next_token(again, "s3://b/p/", 200, "t")
