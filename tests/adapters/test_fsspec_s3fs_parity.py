"""fastload's fsspec filesystem against s3fs on the same bucket of an rclone S3 server, call
by call: loaders that embed fastload's filesystem expect s3fs's answers. Names differ only
by the scheme (fastload's are ``s3://bucket/key``, s3fs's ``bucket/key``). Where s3fs passes
a server error through (a range past the end: 416), fastload follows fsspec's own
filesystems (Python's slice rules), and that is what is compared."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import os
import pickle
import time

import pytest

fsspec = pytest.importorskip("fsspec")
s3fs = pytest.importorskip("s3fs")

import fastload  # noqa: E402
from tests.support.servers import ACCESS_KEY, SECRET_KEY, payload, start_rclone, stop  # noqa: E402

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("clean_aws_env")]

B = "parity"
# key characters a signer or a URI parser may get wrong, as names and in folder names
ODD = [
    "sp ace",
    "plus+",
    "pct%41",
    "pct%2F",
    "hash#",
    "q?x=1",
    "amp&",
    "eq=",
    "semi;",
    "comma,",
    "tilde~",
    "at@",
    "bang!",
    "dollar$",
    "quote'",
    "paren()",
    "star*",
    "é",
    "中文",
    "😀",
]
LONG = ("L" * 250 + "/") * 4 + "x" * 20  # 1,024 bytes, S3's longest key
OBJECTS = {f"odd/{n}.bin": payload(300 + i, i) for i, n in enumerate(ODD)}
OBJECTS.update({f"odd/{n} dir/f {n}.bin": payload(90 + i, 50 + i) for i, n in enumerate(ODD)})
OBJECTS[LONG] = payload(77, 99)
OBJECTS.update(
    {
        "tree/a.bin": payload(1000, 1),
        "tree/empty.bin": b"",
        "tree/lines.txt": b"one\ntwo\n\nthree\nfour",
        "tree/sub/b.bin": payload(200, 2),
        "tree/sub/deep/c.bin": payload(30, 3),
    }
)
MANY = 1100  # past one ListObjectsV2 page (1,000 keys)
OBJECTS.update({f"many+ dir/k é {i:04d}.bin": b"%04d" % i for i in range(MANY)})
READ_KEYS = [k for k in OBJECTS if k.startswith("odd/")] + [LONG, "tree/a.bin"]
DIRS = ["", "odd", "odd/sp ace dir", "odd/pct%41 dir", "odd/中文 dir", "odd/😀 dir", "tree"]
DIRS += ["tree/sub", "many+ dir", "L" * 250]
GLOBS = ["tree/*", "tree/**", "tree/**/*.bin", "tree/sub/**", "odd/*.bin", "**/c.bin"]
GLOBS += ["tree/su?", "tree/*/", "many+ dir/k é 00[0-1]*", "odd/*dir/*.bin", "tree/[a-b].bin"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Buckets ``parity`` (the objects above and an empty folder ``tree/hollow``, which
    rclone lists as a prefix, as S3 lists a folder marker), ``hollow`` (empty) and
    ``churn`` and ``abstract`` (the tests that write objects, through s3fs)."""
    root = tmp_path_factory.mktemp("parity")
    for key, data in OBJECTS.items():
        path = root / B / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / B / "tree" / "hollow").mkdir()
    (root / "hollow").mkdir()
    (root / "churn").mkdir()
    (root / "abstract").mkdir()
    s = start_rclone(str(root))
    yield s
    stop(s)
    _stop_fsspec_io_thread()


def _stop_fsspec_io_thread() -> None:
    """s3fs runs on fsspec's IO thread; later tests fork workers, so it ends with this
    module (fsspec starts a new one when one is needed)."""
    import fsspec.asyn

    loop, thread = fsspec.asyn.loop[0], fsspec.asyn.iothread[0]
    if loop is not None and thread is not None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        fsspec.asyn.loop[0] = fsspec.asyn.iothread[0] = None


def _s3fs(server, **extra):
    return s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        client_kwargs={"endpoint_url": server.endpoint, "region_name": "us-east-1"},
        # rclone sends the whole object's checksum with a range: botocore would refuse it
        config_kwargs={
            "response_checksum_validation": "when_required",
            "request_checksum_calculation": "when_required",
        },
        skip_instance_cache=True,
        **extra,
    )


@pytest.fixture
def pair(server):
    """(fastload's filesystem, s3fs's) over the same server."""
    ours = fastload.filesystem(**server.options, skip_instance_cache=True)
    theirs = _s3fs(server)
    yield ours, theirs
    ours.engine.close()
    _close(theirs)


def _close(theirs) -> None:
    if getattr(theirs, "_s3", None) is not None:
        s3fs.S3FileSystem.close_session(theirs.loop, theirs._s3)


def bare(x):
    """fastload's answer in s3fs's terms: names without ``s3://``; an info dict as its
    name, size and type."""
    if isinstance(x, str):
        return x.removeprefix("s3://")
    if isinstance(x, (list, tuple)):
        return type(x)(bare(v) for v in x)
    if isinstance(x, dict):
        if "type" in x and "name" in x:
            return {"name": bare(x["name"]), "size": x["size"], "type": x["type"]}
        return {bare(k): bare(v) for k, v in x.items()}
    return x


def both(pair, call, path):
    """``call(fs, path)`` on both filesystems: (fastload's in s3fs's terms, s3fs's)."""
    ours, theirs = pair
    return bare(call(ours, f"s3://{B}/{path}")), bare(call(theirs, f"{B}/{path}"))


# -- reads of odd keys ----------------------------------------------------------------


@pytest.mark.parametrize("key", READ_KEYS, ids=lambda k: k[:24])
def test_reads_of_odd_keys_match_s3fs(pair, server, key):
    ours, theirs = pair
    data = OBJECTS[key]
    uri = f"s3://{B}/{key}"
    assert ours.cat_file(uri) == theirs.cat_file(f"{B}/{key}") == data
    for a, b in [(3, 50), (-20, None), (10, 10**6), (None, 7)]:
        got = ours.cat_file(uri, a, b)
        assert got == theirs.cat_file(f"{B}/{key}", start=a, end=b) == data[a:b], (a, b)
    mine, want = both(pair, lambda fs, p: fs.info(p), key)
    assert mine == want and mine["size"] == len(data)
    assert ours.size(uri) == len(data) and ours.isfile(uri) and ours.exists(uri)
    assert not ours.isdir(uri) and not theirs.isdir(f"{B}/{key}")
    with ours.open(uri) as f:
        assert f.read() == data
    # the other spellings of the same object
    assert ours.cat_file(f"fastload://{uri}") == data
    assert ours.cat_file(f"s3/{B}/{key}") == data
    # and the engine's own reads of the URI (the key is literal after the bucket)
    with fastload.RangeEngine(**server.options) as eng:
        assert eng.size(uri) == len(data)
        assert bytes(eng.read(uri)) == data
        assert bytes(eng.read_ranges(uri, [(1, 5), (len(data) - 3, 3)])) == data[1:6] + data[-3:]


# -- listings -------------------------------------------------------------------------


@pytest.mark.parametrize("path", DIRS, ids=lambda p: p[:24] or "bucket")
def test_listings_match_s3fs(pair, path):
    def names(entries):
        return sorted(e["name"] for e in entries)

    mine, want = both(pair, lambda fs, p: fs.ls(p, detail=False), path)
    assert sorted(mine) == sorted(want) and mine
    mine, want = both(pair, lambda fs, p: fs.ls(p, detail=True), path)
    assert sorted(mine, key=lambda d: d["name"]) == sorted(want, key=lambda d: d["name"])
    assert names(mine) == sorted(both(pair, lambda fs, p: fs.ls(p + "/", detail=False), path)[1])
    for kwargs in [{}, {"withdirs": True}, {"maxdepth": 1}, {"maxdepth": 2, "withdirs": True}]:
        # s3fs's find derives fewer folders once its ls cache holds some: a fresh cache
        pair[1].invalidate_cache()
        mine, want = both(pair, lambda fs, p, kw=kwargs: fs.find(p, **kw), path)
        assert mine == want, kwargs
    pair[1].invalidate_cache()
    mine, want = both(pair, lambda fs, p: fs.find(p, withdirs=True, detail=True), path)
    assert mine == want
    pair[1].invalidate_cache()  # (its find fills its ls cache without empty folders)
    mine, want = both(pair, lambda fs, p: list(fs.walk(p)), path)
    assert mine == want
    mine, want = both(pair, lambda fs, p: fs.info(p), path)
    assert mine["type"] == want["type"] == "directory"
    assert both(pair, lambda fs, p: fs.isdir(p), path) == (True, True)


def test_long_listings_page_through_every_key(pair):
    ours, _ = pair
    names = ours.ls(f"s3://{B}/many+ dir", detail=False)
    assert names == [f"s3://{B}/many+ dir/k é {i:04d}.bin" for i in range(MANY)]
    assert ours.find(f"s3://{B}/many+ dir") == names
    assert ours.cat_file(names[1050]) == b"1050"


@pytest.mark.parametrize("pattern", GLOBS)
def test_globs_match_s3fs(pair, pattern):
    mine, want = both(pair, lambda fs, p: fs.glob(p), pattern)
    assert mine == want


def test_a_folder_is_listed_with_itself_under_withdirs(pair):
    """find(withdirs=True), so glob('dir/**'), has the folder itself (fsspec's posix glob
    rule, s3fs's too); it was left out."""
    ours, _ = pair
    assert ours.find(f"s3://{B}/tree/sub", withdirs=True) == [
        f"s3://{B}/tree/sub",
        f"s3://{B}/tree/sub/b.bin",
        f"s3://{B}/tree/sub/deep",
        f"s3://{B}/tree/sub/deep/c.bin",
    ]
    assert ours.glob(f"s3://{B}/tree/sub/**")[0] == f"s3://{B}/tree/sub"
    assert ours.find(f"s3://{B}/tree/a.bin", withdirs=True) == [f"s3://{B}/tree/a.bin"]


def test_an_empty_folder_is_listed_as_s3fs_lists_it(pair):
    """A folder with nothing under it (rclone's empty directory; a folder marker on S3) is
    a CommonPrefix of a delimiter listing: ls shows it, as s3fs's ls does (a recursive
    listing never names it, so find leaves it out, as s3fs's find does)."""
    ours, _ = pair
    assert f"s3://{B}/tree/hollow" in ours.ls(f"s3://{B}/tree", detail=False)
    mine, want = both(pair, lambda fs, p: fs.ls(p, detail=False), "tree")
    assert sorted(mine) == sorted(want)
    entry = [e for e in ours.ls(f"s3://{B}/tree") if e["name"].endswith("hollow")]
    assert entry == [{"name": f"s3://{B}/tree/hollow", "size": 0, "type": "directory"}]
    assert ours.isdir(f"s3://{B}/tree/hollow")  # the listing of its parent says so
    assert f"s3://{B}/tree/hollow" not in ours.find(f"s3://{B}/tree", withdirs=True)


def test_an_empty_bucket_is_a_folder(pair):
    ours, theirs = pair
    assert ours.ls("s3://hollow") == [] == theirs.ls("hollow")
    assert ours.info("s3://hollow")["type"] == theirs.info("hollow")["type"] == "directory"
    assert ours.exists("s3://hollow") and ours.isdir("s3://hollow/")
    assert ours.find("s3://hollow") == [] == theirs.find("hollow")


def test_trailing_slashes_name_the_folder(pair):
    ours, _ = pair
    for path in ["tree/", "tree/sub/", "odd/sp ace dir/"]:
        mine, want = both(pair, lambda fs, p: fs.info(p), path)
        assert mine == want and mine["type"] == "directory"
        mine, want = both(pair, lambda fs, p: fs.ls(p, detail=False), path)
        assert sorted(mine) == sorted(want)
        assert ours.ls(f"s3://{B}/{path}") == ours.ls(f"s3://{B}/{path[:-1]}")
        assert both(pair, lambda fs, p: fs.find(p), path) == both(
            pair, lambda fs, p: fs.find(p), path[:-1]
        )
    assert ours.cat_file(f"s3://{B}/tree/a.bin/") == OBJECTS["tree/a.bin"]


def test_find_prefix_keeps_only_names_under_it(pair):
    """s3fs's find(path, prefix=...): only names starting path/prefix (it was ignored:
    every name came back)."""
    for prefix, kwargs in [("s", {}), ("a", {}), ("s", {"withdirs": True}), ("zz", {})]:
        mine, want = both(
            pair, lambda fs, p, kw=kwargs, pre=prefix: fs.find(p, prefix=pre, **kw), "tree"
        )
        assert mine == want, prefix
    ours, _ = pair
    assert ours.find(f"s3://{B}/tree", prefix="s") == [
        f"s3://{B}/tree/sub/b.bin",
        f"s3://{B}/tree/sub/deep/c.bin",
    ]


def test_folder_markers_name_folders_in_find(http_server):
    """S3 keeps a folder made by its console (or by s3fs's mkdir) as a key ending in '/':
    find(withdirs=True) names it and the folders above it, as s3fs's does, though no
    object is under it (rclone cannot hold such keys: a server answering the listing
    with a page of them stands in; every listing request gets the same page)."""
    keys = ["a/", "a/b/", "a/b/f.bin", "c/d/", "top.bin"]
    contents = "".join(f"<Contents><Key>{k}</Key><Size>{len(k)}</Size></Contents>" for k in keys)
    page = f"<ListBucketResult>{contents}<IsTruncated>false</IsTruncated></ListBucketResult>"
    http_server.put("bkt", page.encode())
    fs = fastload.filesystem(
        endpoint_url=http_server.url("").rstrip("/"), anonymous=True, skip_instance_cache=True
    )
    try:
        assert fs.find("s3://bkt") == ["s3://bkt/a/b/f.bin", "s3://bkt/top.bin"]
        assert fs.find("s3://bkt", withdirs=True) == [
            "s3://bkt/a",
            "s3://bkt/a/b",
            "s3://bkt/a/b/f.bin",
            "s3://bkt/c",
            "s3://bkt/c/d",
            "s3://bkt/top.bin",
        ]
    finally:
        fs.engine.close()


# -- missing paths --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["tree/nope.bin", "tree/su", "tree/sub/deep/c.bin/x"])
def test_missing_paths_are_file_not_found_naming_them(pair, path):
    ours, theirs = pair
    uri = f"s3://{B}/{path}"
    for call in (
        lambda fs, p: fs.info(p),
        lambda fs, p: fs.cat_file(p),
        lambda fs, p: fs.cat_file(p, 0, 10),
        lambda fs, p: fs.size(p),
        lambda fs, p: fs.ls(p),
        lambda fs, p: fs.open(p, "rb"),
    ):
        with pytest.raises(FileNotFoundError) as info:
            call(ours, uri)
        assert path in str(info.value)
        with pytest.raises(FileNotFoundError):
            call(theirs, f"{B}/{path}")
    assert both(pair, lambda fs, p: (fs.exists(p), fs.isfile(p), fs.isdir(p)), path) == (
        (False, False, False),
        (False, False, False),
    )
    assert both(pair, lambda fs, p: fs.find(p), path) == ([], [])


def test_a_missing_bucket_is_file_not_found(pair):
    ours, theirs = pair
    for call in (lambda fs, p: fs.ls(p), lambda fs, p: fs.info(p), lambda fs, p: fs.find(p)):
        with pytest.raises(FileNotFoundError, match="no-such-bucket"):
            call(ours, "s3://no-such-bucket")
        with pytest.raises(FileNotFoundError):
            call(theirs, "no-such-bucket")
    with pytest.raises(FileNotFoundError, match="no-such-bucket/k"):
        ours.cat_file("s3://no-such-bucket/k")
    assert not ours.exists("s3://no-such-bucket") and not ours.exists("s3://no-such-bucket/k")


# -- byte ranges ----------------------------------------------------------------------

RANGES = [(-10, None), (-10, -5), (990, 2000), (2000, 3000), (10, 5), (0, 0), (None, 10)]
RANGES += [(10, None), (-2000, 5), (5, -2000), (None, -1), (1000, None), (0, 1001)]


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_cat_file_ranges_follow_slices(pair, start, end):
    ours, theirs = pair
    data = OBJECTS["tree/a.bin"]
    got = ours.cat_file(f"s3://{B}/tree/a.bin", start, end)
    assert got == data[start:end]
    try:
        want = theirs.cat_file(f"{B}/tree/a.bin", start=start, end=end)
    except OSError:  # s3fs passes the server's 416 through (an empty range, a start before 0)
        pass
    else:
        assert got == want


def test_cat_ranges_match_s3fs(pair):
    ours, theirs = pair
    keys = ["tree/a.bin", "odd/plus+.bin", "tree/a.bin", "odd/中文 dir/f 中文.bin", "tree/a.bin"]
    starts, ends = [0, 5, 990, 1, -5], [5, 50, 2000, 20, None]
    mine = ours.cat_ranges([f"s3://{B}/{k}" for k in keys], starts, ends)
    assert mine == theirs.cat_ranges([f"{B}/{k}" for k in keys], starts, ends)
    assert mine == [OBJECTS[k][a:b] for k, a, b in zip(keys, starts, ends, strict=True)]
    got = ours.cat_ranges([f"s3://{B}/tree/a.bin", f"s3://{B}/tree/nope"], [0, 0], [3, 3])
    assert got[0] == OBJECTS["tree/a.bin"][:3] and isinstance(got[1], FileNotFoundError)
    assert (
        ours.cat_file(f"s3://{B}/tree/empty.bin")
        == b""
        == ours.cat_file(f"s3://{B}/tree/empty.bin", 0, 10)
    )


# -- open files -----------------------------------------------------------------------


def _file_session(fs, path):
    """What a reader sees of an open file, call by call."""
    out = []
    with fs.open(path, "rb") as f:
        out += [f.read(3), f.tell(), f.seek(2, 1), f.read(2), f.seek(-3, 2), f.read()]
        out += [f.read(), f.tell(), f.seek(0), f.readline(), f.readline(), f.readline()]
        out += [f.readlines()]
        f.seek(0)
        out += [list(f)]
        f.seek(1)
        buf = bytearray(6)
        out += [f.readinto(buf), bytes(buf), f.tell()]
        f.seek(0)
        out += [f.read(-1)[:3], f.read(0), f.seek(100), f.read(5), f.tell()]
        out += [(f.readable(), f.seekable(), f.writable()), f.size, f.closed]
        for bad in [(-1,), (0, 3)]:
            with pytest.raises((ValueError, OSError)):
                f.seek(*bad)
    out += [f.closed]
    with pytest.raises(ValueError):
        f.read()
    with fs.open(path, "r", encoding="utf-8", newline="") as t:
        out += [t.read(4), t.readline(), t.read()]
    return out


def test_open_file_reads_match_s3fs(pair):
    mine, want = both(pair, _file_session, "tree/lines.txt")
    assert mine == want
    ours, _ = pair
    with ours.open(f"s3://{B}/tree/empty.bin") as f:
        assert f.read() == b"" and f.readline() == b"" and f.size == 0
    with ours.open(f"s3://{B}/odd/hash#.bin", block_size=16) as f:
        reader = io.BufferedReader(f)
        assert reader.read() == OBJECTS["odd/hash#.bin"]


def test_filesystem_and_open_file_pickle(pair):
    ours, theirs = pair
    again = pickle.loads(pickle.dumps(ours))
    assert again.cat_file(f"s3://{B}/odd/at@.bin") == OBJECTS["odd/at@.bin"]
    data = OBJECTS["tree/a.bin"]
    for fs, path in [(ours, f"s3://{B}/tree/a.bin"), (theirs, f"{B}/tree/a.bin")]:
        with fs.open(path) as f:
            f.seek(10)
            f.read(5)
            copy = pickle.loads(pickle.dumps(f))
            assert copy.tell() == 15 and copy.read(5) == data[15:20]
            copy.close()


# -- metadata -------------------------------------------------------------------------


def test_modified_and_the_fields_of_entries_match_s3fs(pair):
    """modified() of an S3 object (it raised NotImplementedError), and info / ls / find
    entries with s3fs's ETag and LastModified (a datetime)."""
    ours, theirs = pair
    for key in ["tree/a.bin", "odd/😀.bin", "tree/empty.bin"]:
        when = ours.modified(f"s3://{B}/{key}")
        assert when == theirs.modified(f"{B}/{key}")
        assert when.tzinfo is not None and abs(when - dt.datetime.now(dt.timezone.utc)).days < 2
        mine, want = ours.info(f"s3://{B}/{key}"), theirs.info(f"{B}/{key}")
        assert mine["LastModified"] == want["LastModified"] and mine["ETag"] == want["ETag"]
    for folder in ["tree", "tree/sub/"]:
        with pytest.raises(IsADirectoryError, match=folder.rstrip("/")):
            ours.modified(f"s3://{B}/{folder}")
        with pytest.raises(IsADirectoryError):
            theirs.modified(f"{B}/{folder}")
    listed = {bare(e["name"]): e for e in ours.ls(f"s3://{B}/tree")}
    for e in theirs.ls(f"{B}/tree", detail=True):
        if e["type"] == "file":
            assert listed[e["name"]]["LastModified"] == e["LastModified"]
            assert listed[e["name"]]["ETag"] == e["ETag"]
    found = ours.find(f"s3://{B}/tree", detail=True)
    want = theirs.find(f"{B}/tree", detail=True)
    for name, entry in want.items():  # a listing's Last-Modified (in ms; a HEAD's in s)
        assert found["s3://" + name]["LastModified"] == entry["LastModified"], name
        assert found["s3://" + name]["ETag"] == entry["ETag"], name


def test_a_version_id_is_refused_not_ignored(pair):
    """s3fs reads the version asked for (or refuses unless version_aware); fastload read
    the current version silently."""
    ours, _ = pair
    uri = f"s3://{B}/tree/a.bin"
    for call in (
        lambda: ours.open(uri, version_id="v1"),
        lambda: ours.cat_file(uri, version_id="v1"),
        lambda: ours.info(uri, version_id="v1"),
    ):
        with pytest.raises(ValueError, match="version_id='v1'.*tree/a.bin|tree/a.bin.*version_id"):
            call()


# -- listing cache --------------------------------------------------------------------


def _put(server, key, data):
    server.boto3().put_object(Bucket="churn", Key=key, Body=data)


def test_listing_cache_refresh_and_invalidation_match_s3fs(server, pair):
    ours, theirs = pair
    _put(server, "d/a.bin", b"A" * 100)
    _put(server, "d/sub/b.bin", b"B")

    def ls(refresh=False):
        return (
            sorted(bare(ours.ls("s3://churn/d", detail=False, refresh=refresh))),
            sorted(theirs.ls("churn/d", detail=False, refresh=refresh)),
        )

    before = ["churn/d/a.bin", "churn/d/sub"]
    assert ls() == (before, before)
    _put(server, "d/new.bin", b"new")
    assert ls() == (before, before)  # both answer from their listing cache
    after = ["churn/d/a.bin", "churn/d/new.bin", "churn/d/sub"]
    assert ls(refresh=True) == (after, after)  # refresh=True lists again (it was ignored)
    # find lists every call, as s3fs's does (it answered from the cache)
    _put(server, "d/sub/c.bin", b"C")
    found = ["churn/d/a.bin", "churn/d/new.bin", "churn/d/sub/b.bin", "churn/d/sub/c.bin"]
    assert both_churn(ours, theirs, lambda fs, p: fs.find(p), "d") == (found, found)
    assert both_churn(ours, theirs, lambda fs, p: fs.glob(p), "d/sub/*") == (found[2:], found[2:])
    # an object that changes: reads see the new bytes; invalidate_cache: listings too
    time.sleep(1.1)  # a new Last-Modified second
    _put(server, "d/a.bin", b"Z" * 150)
    assert ours.cat_file("s3://churn/d/a.bin") == b"Z" * 150
    assert ours.cat_file("s3://churn/d/a.bin", 140, 1000) == b"Z" * 10
    with ours.open("s3://churn/d/a.bin") as f:
        assert f.read() == b"Z" * 150
    assert ours.info("s3://churn/d/a.bin")["size"] == 150
    server.boto3().delete_object(Bucket="churn", Key="d/new.bin")
    ours.invalidate_cache("s3://churn/d")
    theirs.invalidate_cache("churn/d")
    assert ls() == (before, before)
    sizes = {bare(e["name"]): e["size"] for e in ours.ls("s3://churn/d")}
    assert sizes["churn/d/a.bin"] == 150


def test_invalidate_cache_lets_reads_see_rewritten_objects(server, pair):
    """After invalidate_cache, reads of an object rewritten since its listing read the
    new version, as s3fs's do (the engine still held the listed version: a ranged read
    or open() raised ObjectChangedError)."""
    ours, _ = pair
    for i, key in enumerate(["re/a.bin", "re/b.bin", "re/c.bin"]):
        _put(server, key, b"%d" % i * 100)
    for n, path in [(150, "s3://churn/re"), (170, None)]:
        assert len(ours.find("s3://churn/re")) == 3  # the listing pins their versions
        time.sleep(1.1)
        for i, key in enumerate(["re/a.bin", "re/b.bin", "re/c.bin"]):
            _put(server, key, b"%d" % (i + 5) * n)
        ours.invalidate_cache(path)
        with ours.open("s3://churn/re/a.bin") as f:
            assert f.read() == b"5" * n
        assert ours.cat_file("s3://churn/re/b.bin", n - 10, 1000) == b"6" * 10
        assert ours.cat_ranges(["s3://churn/re/c.bin"], [0], [None]) == [b"7" * n]


def both_churn(ours, theirs, call, path):
    return bare(call(ours, f"s3://churn/{path}")), call(theirs, f"churn/{path}")


def test_fsspec_listing_cache_options_are_honoured(server):
    """use_listings_cache / listings_expiry_time (fsspec's, s3fs's) were taken for engine
    options and refused."""
    fs = fastload.filesystem(**server.options, use_listings_cache=False, skip_instance_cache=True)
    try:
        _put(server, "opts/a.bin", b"a")
        assert fs.ls("s3://churn/opts", detail=False) == ["s3://churn/opts/a.bin"]
        _put(server, "opts/b.bin", b"b")
        assert fs.ls("s3://churn/opts", detail=False) == [
            "s3://churn/opts/a.bin",
            "s3://churn/opts/b.bin",
        ]
        assert (
            pickle.loads(pickle.dumps(fs)).ls("s3://churn/opts", detail=False)[0].endswith("a.bin")
        )
    finally:
        fs.engine.close()
    fs = fastload.filesystem(**server.options, listings_expiry_time=0.01, skip_instance_cache=True)
    try:
        fs.ls("s3://churn/opts")
        _put(server, "opts/c.bin", b"c")
        time.sleep(0.05)
        assert "s3://churn/opts/c.bin" in fs.ls("s3://churn/opts", detail=False)
    finally:
        fs.engine.close()


def test_fsspec_protocol_paths_list_the_same(server, pair):
    """fsspec.filesystem('fastload') and fastload:// names: the same answers."""
    from fastload.adapters.fsspec_fs import register

    register()
    fs = fsspec.filesystem("fastload", skip_instance_cache=True, **server.options)
    try:
        assert fs.ls(f"fastload://s3://{B}/tree", detail=False) == pair[0].ls(
            f"s3://{B}/tree", detail=False
        )
        assert fs.glob(f"fastload://s3://{B}/tree/**/*.bin") == pair[0].glob(
            f"s3://{B}/tree/**/*.bin"
        )
        assert os.path.basename(fs.find(f"s3/{B}/tree")[0]) == "a.bin"
    finally:
        fs.engine.close()


# -- fsspec's own tests of a filesystem, where they read ---------------------------

_RUNS = itertools.count()

try:
    from fsspec.tests.abstract import AbstractFixtures
    from fsspec.tests.abstract.get import AbstractGetTests

    SHIPPED = True
except ImportError:  # an fsspec that ships without its abstract tests
    SHIPPED = False

    class AbstractFixtures:  # type: ignore[no-redef]
        pass

    class AbstractGetTests:  # type: ignore[no-redef]
        pass


@pytest.mark.skipif(not SHIPPED, reason="this fsspec ships no abstract tests")
class TestFsspecAbstractGet(AbstractFixtures, AbstractGetTests):  # type: ignore[misc,valid-type]
    """fsspec's abstract ``get`` tests (glob edge cases, trailing slashes, recursion,
    lists of paths) with fastload as the remote filesystem: each scenario is written
    through s3fs into a fresh folder of bucket ``abstract``."""

    @pytest.fixture
    def fs(self, server):
        ours = fastload.filesystem(**server.options, skip_instance_cache=True)
        yield ours
        ours.engine.close()

    @pytest.fixture
    def fs_join(self):
        return lambda *parts: "/".join(parts)

    @pytest.fixture
    def fs_path(self):
        return f"s3://abstract/run{next(_RUNS)}"

    @pytest.fixture
    def supports_empty_directories(self):
        return False

    @pytest.fixture
    def writer(self, server):
        theirs = _s3fs(server)
        yield theirs
        _close(theirs)

    @staticmethod
    def _written(writer, fs_path, scenario):
        return "s3://" + scenario(writer, lambda *p: "/".join(p), fs_path.removeprefix("s3://"))

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, writer, fs_path):
        return self._written(writer, fs_path, self._bulk_operations_scenario_0)

    @pytest.fixture
    def fs_glob_edge_cases_files(self, writer, fs_path):
        return self._written(writer, fs_path, self._glob_edge_cases_files)

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, writer, fs_path):
        return self._written(writer, fs_path, self._dir_and_file_with_same_name_prefix)

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, writer, fs_path):
        return self._written(writer, fs_path, self._10_files_with_hashed_names)

    def test_get_directory_recursive(self):
        pytest.skip("writes through the filesystem under test (fastload's is read-only)")
