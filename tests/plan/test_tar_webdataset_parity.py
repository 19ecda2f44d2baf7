"""TarShardDataset against webdataset 1.0 on the same valid-but-unusual shards.

Every shard here is read both ways: webdataset's own reader (``wds.WebDataset``, no
decoding) and fastload's header walk (and its sidecar, written by ``fastload index``).
Where they agree the samples must be equal: keys, fields and every field's bytes. Where
webdataset's answer is not a sensible one (a sparse member's bytes, a key of "d/" for a
hidden file, a global header renaming every member ...) fastload refuses with a
TarFormatError naming the shard and the member, never silently dropping or mixing bytes.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import tarfile

import numpy as np
import pytest

from fastload.app.cli import main as cli
from fastload.errors import LabelError, MissingFieldError, TarFormatError
from fastload.loop.loader import DataLoader
from fastload.plan import tar_format
from fastload.plan.shard_uris import expand_braces
from fastload.plan.tar_shards import TarShardDataset
from fastload.storage.engine import RangeEngine
from tests.support.servers import start_rclone, stop

wds = pytest.importorskip("webdataset")
braceexpand = pytest.importorskip("braceexpand")

KINDS = {
    "folder": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
Samples = list[tuple[str, dict[str, bytes]]]

# -- reading a shard both ways -----------------------------------------------------------


def wds_samples(paths: list[str]) -> Samples:
    out = []
    for s in wds.WebDataset(list(paths), shardshuffle=False, empty_check=False):
        out.append((s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")}))
    return out


def fl_samples(paths: list[str], field: str = "jpg", **kw) -> Samples:
    ds = TarShardDataset(list(paths), field=field, **kw)
    return [(ds.keys[i], ds.fields(i)) for i in range(len(ds))]


def loaded(paths: list[str], field: str, label: str | None = None, **kw) -> list:
    """What the DataLoader hands on: each sample's data bytes (and label)."""
    ds = TarShardDataset(list(paths), field=field, label=label, decode=False, **kw)
    out: list = []
    for batch in DataLoader(ds, batch_size=7, shuffle=False):
        x, y = batch if label else (batch, None)
        for k in range(x.count):
            out.append(x.sample(k).tobytes() if y is None else (x.sample(k).tobytes(), y[k]))
    return out


def assert_parity(paths: list[str], tmp_path, field: str = "jpg") -> Samples:
    """Both readers give the same samples, by the header walk and by the sidecar, and the
    DataLoader the same data bytes."""
    theirs = wds_samples(paths)
    assert fl_samples(paths, field) == theirs
    assert loaded(paths, field) == [fields[field] for _, fields in theirs]
    side = tmp_path / "parity.flidx"
    assert cli(["index", *paths, "-o", str(side)]) == 0
    ds = TarShardDataset(paths, field=field, index=str(side))
    assert ds.index_stats == {"reused": len(paths), "walked": 0}
    assert [(ds.keys[i], ds.fields(i)) for i in range(len(ds))] == theirs
    return theirs


def refused(paths: list[str], match: str, field: str = "jpg") -> TarFormatError:
    """fastload refuses the shard (the walk and `fastload index` alike), naming it."""
    with pytest.raises(TarFormatError, match=match) as info:
        TarShardDataset(list(paths), field=field)
    assert any(os.path.basename(p) in str(info.value) for p in paths)
    return info.value


def walk_refused(paths: list[str], match: str, tmp_path, capsys) -> None:
    refused(paths, match)
    assert cli(["index", *paths, "-o", str(tmp_path / "x.flidx")]) == 1
    err = capsys.readouterr().err
    assert re.search(match, err) and os.path.basename(paths[-1]) in err


# -- writing shards ------------------------------------------------------------------------


def tar_of(path, members, fmt: str = "ustar", **kw) -> str:
    """A tar by Python's tarfile: ``(name, data)`` regular files, ``(name, KIND)`` others."""
    with tarfile.open(path, "w", format=FORMATS[fmt], **kw) as t:
        for name, what in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if isinstance(what, bytes):
                info.size = len(what)
                t.addfile(info, io.BytesIO(what))
            else:
                info.type = KINDS[what]
                info.linkname = "target.jpg" if what in ("symlink", "hardlink") else ""
                t.addfile(info)
    return str(path)


def header(name, size: int, typeflag: bytes = b"0", magic: bytes = b"ustar\x0000") -> bytes:
    """A raw 512-byte header with a valid checksum."""
    b = bytearray(512)
    raw = name.encode() if isinstance(name, str) else name
    b[0 : len(raw[:100])] = raw[:100]
    b[100:124] = b"0000644\x000000000\x000000000\x00"
    b[124:136] = f"{size:011o}\0".encode()
    b[136:148] = b"14000000000\0"
    b[156:157] = typeflag
    b[257:265] = magic
    b[148:156] = b" " * 8
    b[148:156] = f"{sum(b):06o}\0 ".encode()
    return bytes(b)


def member(name, data: bytes, typeflag: bytes = b"0", **kw) -> bytes:
    return header(name, len(data), typeflag, **kw) + data + bytes(-len(data) % 512)


def pax(records: dict[str, str], typeflag: bytes = b"x") -> bytes:
    body = b""
    for k, v in records.items():
        rec = f" {k}={v}\n".encode()
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n += 1
        body += str(n).encode() + rec
    return member("././@PaxHeader", body, typeflag)


def long_name(name: str, typeflag: bytes = b"L") -> bytes:
    return member("././@LongLink", name.encode() + b"\0", typeflag, magic=b"ustar  \0")


END = bytes(1024)


def raw(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# -- names: keys and fields -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_member_names_give_webdatasets_keys_and_fields(tmp_path, fmt):
    deep = "d/" * 60 + "k" * 90  # past 100 characters: prefix, GNU long name or pax path
    if fmt == "ustar":
        deep = "d/" * 60 + "k"  # ustar: only a prefix (155) + name (100)
    members = [
        ("a/b/c.jpg", b"abc"),  # folders are part of the key
        ("a/b/c.cls", b"3"),
        ("x.y/img.jpg", b"xy"),  # a dot in a folder name is not an extension
        ("x.y/img.seg.png", b"seg"),  # multiple dots: the field is "seg.png"
        ("UP.JPG", b"up"),  # extensions are lower-cased, keys are not
        ("UP.Cls", b"4"),
        (f"{deep}.jpg", b"long"),
        (f"{deep}.cls", b"5"),
        ("ñandú/日本.jpg", "日本".encode()),
        ("./dot.jpg", b"dot"),  # tar c . writes ./ names: the key keeps them
        ("empty.jpg", b""),  # a zero-size member is a field of b""
        ("empty.cls", b""),
        ("a..jpg", b"dd"),  # key "a", field ".jpg"
        ("a.jpg", b"a1"),
    ]
    path = tar_of(tmp_path / f"n-{fmt}.tar", members, fmt)
    samples = assert_parity([path], tmp_path)
    assert [k for k, _ in samples][:3] == ["a/b/c", "x.y/img", "UP"]
    assert samples[1][1] == {"jpg": b"xy", "seg.png": b"seg"}
    assert samples[2][1] == {"jpg": b"up", "cls": b"4"}
    assert fl_samples([path], field="seg.png", on_error="skip") == [("x.y/img", samples[1][1])]
    # labels: webdataset's decoded .cls (an int), on the samples that have one
    shard = tar_of(tmp_path / "labels.tar", [m for m in members if m[0] != "empty.cls"], fmt)
    decoded = wds.WebDataset(shard, shardshuffle=False).decode()
    good = [(s["jpg"], s["cls"]) for s in decoded if "cls" in s]
    assert len(good) == 3 and good[1] == (b"up", 4)
    assert loaded([shard], "jpg", "cls", on_error="skip") == good
    empty = tar_of(tmp_path / "e.tar", [("empty.jpg", b""), ("empty.cls", b"")])
    with pytest.raises(wds.autodecode.DecodingError):  # webdataset: int(b"") fails
        list(wds.WebDataset(empty, shardshuffle=False).decode())
    with pytest.raises(LabelError, match=r"e.tar: sample 'empty': .cls does not hold a label"):
        TarShardDataset(empty, field="jpg", label="cls")


def test_folders_links_and_other_members_are_skipped_as_webdataset_does(tmp_path):
    path = tar_of(
        tmp_path / "kinds.tar",
        [
            ("a", "folder"),
            ("a/x.jpg", b"1"),
            ("a.b", "folder"),  # a folder with a dot: no sample
            ("a.b/x.jpg", b"2"),
            ("a.b/x.cls", b"2"),
            ("s.jpg", "symlink"),
            ("h.jpg", "hardlink"),
            ("f.jpg", "fifo"),
            ("w.jpg", b"9"),
        ],
        "gnu",
    )
    raw_kinds = raw(
        tmp_path,
        "raw.tar",
        member("c.jpg", b"7", b"7")  # contiguous file: a regular file
        + member("z.jpg", b"zz" * 300, b"Z")  # an unknown type: skipped with its data
        + member("m.jpg", b"mm", b"M")  # GNU multi-volume continuation: skipped
        + header("v7dir.x/", 0, b"\0", magic=bytes(8))  # v7 folder: a name ending in /
        + member(b"caf\xe9.jpg", b"latin-1")  # a name that is not UTF-8
        + long_name("t" * 120, b"K")  # a long link target before a link
        + long_name("l" * 120 + ".jpg")
        + header("l", 0, b"2")
        + member("q.jpg", b"q")
        + END,
    )
    samples = assert_parity([path, raw_kinds], tmp_path)
    assert [k for k, _ in samples] == ["a/x", "a.b/x", "w", "c", "caf\udce9", "q"]


def test_metadata_and_keyless_members_inside_a_sample_do_not_split_it(tmp_path):
    # was: README, __meta__ or a hidden file between two members of one key ended the
    # sample, so "a" lost its .cls (MissingFieldError); webdataset skips them in place
    path = tar_of(
        tmp_path / "meta.tar",
        [
            ("__meta__", b"m"),  # webdataset metadata: skipped
            ("__info__/about.json", b"{}"),  # inside a __x__ folder: skipped
            ("__x.y__", b"m"),  # starts and ends with __: skipped (was sample "__x")
            ("a.jpg", b"1"),
            ("README", b"r"),  # no extension: skipped
            ("__meta__", b"m"),
            (".hidden.jpg", b"h"),  # a hidden file at the top: no key
            ("a.cls", b"3"),
            ("__key__.jpg", b"5"),  # not metadata: it does not end in __
            ("x/__m__/y.jpg", b"6"),  # not metadata: __m__ is not the first folder
        ],
    )
    samples = assert_parity([path], tmp_path)
    assert samples == [
        ("a", {"jpg": b"1", "cls": b"3"}),
        ("__key__", {"jpg": b"5"}),
        ("x/__m__/y", {"jpg": b"6"}),
    ]
    ds = TarShardDataset(path, field="jpg", label="cls", on_error="skip")
    assert ds.keys == ["a"] and ds.skipped == {"missing label field": 2}


def test_split_key_is_webdatasets_split_wherever_no_conflict_is_reported():
    """Every name over a small alphabet: split_key gives webdataset's (key, field) or
    None where webdataset skips it, unless key_conflict says why it is refused."""
    from webdataset.tariterators import base_plus_ext

    is_meta, key_conflict, split_key = (
        tar_format.is_meta,
        tar_format.key_conflict,
        tar_format.split_key,
    )
    meta = re.compile(r"__[^/]*__($|/)")
    for n in range(1, 7):
        for chars in itertools.product("a./_\nA", repeat=n):
            name = "".join(chars)
            wmeta = bool(meta.match(name)) or (
                "/" not in name and name.startswith("__") and name.endswith("__")
            )
            assert is_meta(name) == wmeta, name
            key, ext = base_plus_ext(name)
            theirs = None if wmeta or key is None else (key, ext.lower())
            if key_conflict(name) is None or wmeta:
                assert split_key(name) == theirs, name
            else:  # refused: the plain rule and webdataset's differ
                assert split_key(name) is None, name


@pytest.mark.parametrize(
    "name, why",
    [
        ("d/.h.jpg", r"hidden file in a folder, which webdataset reads as sample 'd/'"),
        ("d/._img.jpg", r"hidden file"),  # macOS tar's AppleDouble files
        ("x.y\nz/a.jpg", r"line break in a folder name"),
    ],
)
def test_a_name_webdataset_reads_otherwise_is_refused(tmp_path, name, why):
    # was: "d/.h.jpg" dropped silently where webdataset makes sample "d/" of it, and
    # "x.y\nz/a.jpg" a sample where webdataset reads none
    members = [("a.jpg", b"1"), (name, b"2"), ("a.cls", b"3"), ("b.jpg", b"4")]
    path = tar_of(tmp_path / "odd.tar", members, "pax")
    err = refused([path], why)
    assert repr(name) in str(err)
    side = tmp_path / "odd.flidx"  # the sidecar holds the name as it is: refused the same
    assert cli(["index", path, "-o", str(side)]) == 0
    with pytest.raises(TarFormatError, match=why):
        TarShardDataset(path, field="jpg", index=str(side))
    ds = TarShardDataset(path, field="jpg", on_error="skip")
    assert ds.keys == ["a", "b"] and ds.skipped == {"ambiguous member name": 1}
    assert ds.fields(0) == {"jpg": b"1", "cls": b"3"}
    # the hidden file at the top and ./.DS_Store: webdataset has no key for them either
    ok = tar_of(tmp_path / "ok.tar", [("./.DS_Store", b"x"), (".h.jpg", b"y"), *members[:1]])
    assert assert_parity([ok], tmp_path) == [("a", {"jpg": b"1"})]


# -- samples and shards ---------------------------------------------------------------------


def test_same_key_in_a_row_and_apart(tmp_path):
    apart = tar_of(tmp_path / "apart.tar", [("x.jpg", b"1"), ("y.jpg", b"2"), ("x.jpg", b"3")])
    assert assert_parity([apart], tmp_path) == [
        ("x", {"jpg": b"1"}),
        ("y", {"jpg": b"2"}),
        ("x", {"jpg": b"3"}),
    ]
    for i, second in enumerate(("x.jpg", "x.JPG")):  # webdataset raises on these too
        dup = tar_of(tmp_path / f"dup{i}.tar", [("x.jpg", b"1"), (second, b"2")])
        with pytest.raises(ValueError, match="duplicate"):
            wds_samples([dup])
        refused([dup], rf"sample 'x' has 1 duplicate member\(s\) \('{re.escape(second)}'\)")


def test_one_sample_and_empty_tars(tmp_path):
    one = tar_of(tmp_path / "one.tar", [("only.jpg", b"1")])
    empty = tar_of(tmp_path / "empty.tar", [])  # end blocks only: no samples
    assert assert_parity([empty, one, empty], tmp_path) == [("only", {"jpg": b"1"})]


def test_an_empty_object_is_no_shard(tmp_path, capsys):
    # was: a 0-byte object read as a shard without members; webdataset's tarfile says
    # "empty file" and GNU tar "does not look like a tar archive"
    zero = raw(tmp_path, "zero.tar", b"")
    one = tar_of(tmp_path / "one.tar", [("only.jpg", b"1")])
    with pytest.raises(tarfile.ReadError, match="empty file"):
        wds_samples([zero])
    walk_refused(
        [one, zero], r"zero.tar: an empty object \(0 bytes\) is not a tar shard", tmp_path, capsys
    )
    ds = TarShardDataset([one, zero], field="jpg", on_error="skip")
    assert ds.keys == ["only"] and "broken shard (indexed up to the break)" in ds.skipped


def test_a_sample_split_across_two_shards_is_named_as_such(tmp_path):
    first = tar_of(tmp_path / "s0.tar", [("a.jpg", b"1"), ("a.cls", b"0"), ("k.jpg", b"2")])
    second = tar_of(tmp_path / "s1.tar", [("k.cls", b"3"), ("m.jpg", b"4"), ("m.cls", b"5")])
    # webdataset ends a sample at the end of its shard: two samples "k"
    assert wds_samples([first, second])[1:3] == [("k", {"jpg": b"2"}), ("k", {"cls": b"3"})]
    with pytest.raises(MissingFieldError, match=r"s1.tar: sample 'k' has no jpg .* in .*s0.tar"):
        TarShardDataset([first, second], field="jpg")
    with pytest.raises(MissingFieldError, match=r"s0.tar: sample 'k' has no .cls .* in .*s1.tar"):
        TarShardDataset([first, second], field="jpg", label="cls")
    ds = TarShardDataset([first, second], field="jpg", on_error="skip")
    assert ds.keys == ["a", "k", "m"] and ds.skipped == {"missing data field": 1}


# -- how the archive ends -------------------------------------------------------------------


def _base(tmp_path) -> tuple[bytes, int]:
    path = tar_of(tmp_path / "base.tar", [("a.jpg", b"1" * 600), ("a.cls", b"3"), ("b.jpg", b"2")])
    with tarfile.open(path) as t:
        last = t.getmembers()[-1]
    data = open(path, "rb").read()
    return data, last.offset_data + 512


@pytest.mark.parametrize(
    "tail",
    [
        lambda d, end: d[:end],  # no end blocks
        lambda d, end: d[: end + 512],  # one end block
        lambda d, end: d[: end + 100],  # end blocks cut short (was: "truncated")
        lambda d, end: d + b"garbage" * 100,  # a little after the end: ignored
        lambda d, end: d + bytes(2 << 20),  # tar -b 4096 pads 2 MiB of zeros (was refused)
    ],
)
def test_archive_ends_webdataset_reads(tmp_path, tail):
    data, end = _base(tmp_path)
    path = raw(tmp_path, "t.tar", tail(data, end))
    assert len(assert_parity([path], tmp_path)) == 2


def test_bytes_after_the_end_that_a_member_may_have_lied_about_are_refused(tmp_path):
    data, _ = _base(tmp_path)
    junk = np.random.default_rng(0).integers(1, 256, 100_000, dtype=np.uint8).tobytes()
    refused([raw(tmp_path, "j.tar", data + junk)], r"j.tar: a zero block .* non-zero bytes")
    zeros_then_junk = data + bytes(1 << 20) + b"x"
    refused([raw(tmp_path, "z.tar", zeros_then_junk)], r"non-zero bytes at byte \d+ follow")


# -- extended headers -----------------------------------------------------------------------


def test_pax_global_headers(tmp_path, capsys):
    def shard(name, records):
        return tar_of(
            tmp_path / name, [("a.jpg", b"1111"), ("b.jpg", b"2")], "pax", pax_headers=records
        )

    # git archive writes a comment: nothing about members
    assert len(assert_parity([shard("c.tar", {"comment": "abc"})], tmp_path)) == 2
    # was ignored: webdataset renames every member after it (a "duplicate" error) or reads
    # "size" bytes of each (other bytes than fastload's)
    path = shard("p.tar", {"path": "zz.jpg"})
    with pytest.raises(ValueError, match="duplicate"):
        wds_samples([path])
    walk_refused([path], r"p.tar: the pax global header at byte 0 sets 'path'", tmp_path, capsys)
    path = shard("s.tar", {"size": "2"})
    assert wds_samples([path])[0][1]["jpg"] == b"11"  # not a.jpg's bytes
    walk_refused([path], r"sets 'size' for every member", tmp_path, capsys)


def test_solaris_extended_headers_name_the_member(tmp_path):
    # was: the "X" header skipped, so the member took its cut-down ustar name
    deep = "long/" * 30 + "a.jpg"
    path = raw(tmp_path, "x.tar", pax({"path": deep}, b"X") + member("trunc.jpg", b"1") + END)
    assert assert_parity([path], tmp_path) == [(deep[:-4], {"jpg": b"1"})]


@pytest.mark.parametrize(
    "headers",
    [
        long_name("fromL.jpg") + pax({"path": "fromX.jpg"}),
        pax({"path": "fromX.jpg"}) + long_name("fromL.jpg"),
        long_name("first.jpg") + long_name("second.jpg"),
        pax({"path": "first.jpg"}) + pax({"path": "second.jpg"}),
    ],
    ids=["L-then-x", "x-then-L", "L-then-L", "x-then-x"],
)
def test_two_names_for_one_member_are_refused(tmp_path, headers, capsys):
    # was: the last name won; Python's tarfile (webdataset) keeps the first, GNU tar the last
    path = raw(tmp_path, "two.tar", headers + member("h.jpg", b"1") + END)
    walk_refused([path], r"two.tar: the .* at byte 1024 names the next member", tmp_path, capsys)


def test_the_same_name_twice_and_empty_names(tmp_path, capsys):
    same = long_name("same.jpg") + pax({"path": "same.jpg"})
    ok = raw(tmp_path, "same.tar", same + member("h.jpg", b"1") + END)
    assert assert_parity([ok], tmp_path) == [("same", {"jpg": b"1"})]
    sizes = pax({"size": "1"}) + pax({"size": "2"})
    walk_refused(
        [raw(tmp_path, "sz.tar", sizes + member("h.jpg", b"12") + END)],
        r"sz.tar: two pax headers .* the sizes '1' and '2'",
        tmp_path,
        capsys,
    )
    # was: the header's own name used; webdataset's tarfile names the member ""
    for i, head in enumerate((long_name(""), pax({"path": ""}))):
        path = raw(tmp_path, f"e{i}.tar", head + member("h.jpg", b"1") + END)
        assert wds_samples([path]) == []
        walk_refused(
            [path], r"an empty (GNU long name|pax path) in the header at byte 0", tmp_path, capsys
        )


def test_gnu_headers_keep_their_name_without_a_ustar_prefix(tmp_path):
    """A GNU header's bytes 345.. are its atime (GNU tar -G): Python's tarfile (so
    webdataset) reads them as a ustar prefix; fastload and GNU tar do not."""
    block = bytearray(member("a.jpg", b"1", magic=b"ustar  \0"))
    block[345:357] = b"14000000000\0"  # an atime
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block[:512]):06o}\0 ".encode()
    path = raw(tmp_path, "g.tar", bytes(block) + END)
    assert wds_samples([path])[0][0] == "14000000000/a"
    assert fl_samples([path]) == [("a", {"jpg": b"1"})]


# -- members whose bytes are not one range --------------------------------------------------


def _sparse_gnu() -> bytes:
    # an old GNU sparse member: one 3-byte chunk at offset 1 MiB (map at 386, real size 483)
    h = bytearray(header("a.jpg", 3, b"S", magic=b"ustar  \0"))
    h[386:398] = b"00004000000\0"
    h[398:410] = b"00000000003\0"
    h[483:495] = b"00004000003\0"
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h) + b"end" + bytes(509)


@pytest.mark.parametrize(
    "body",
    [
        _sparse_gnu(),
        # pax sparse 1.0: a renamed member whose data starts with the sparse map
        pax(
            {
                "GNU.sparse.major": "1",
                "GNU.sparse.minor": "0",
                "GNU.sparse.name": "a.jpg",
                "GNU.sparse.realsize": "1048579",
            }
        )
        + member("./GNUSparseFile.0/a.jpg", b"1\n1048576\n3\n".ljust(512, b"\0") + b"end"),
        # pax sparse 0.0: the member's name, its archived bytes only the non-hole parts
        pax(
            {
                "GNU.sparse.size": "1048579",
                "GNU.sparse.numblocks": "1",
                "GNU.sparse.offset": "1048576",
                "GNU.sparse.numbytes": "3",
            }
        )
        + member("a.jpg", b"end"),
    ],
    ids=["gnu-S", "pax-1.0", "pax-0.0"],
)
def test_sparse_members_are_refused(tmp_path, body, capsys):
    # was: an "S" member dropped silently (so a MissingFieldError about something else),
    # and pax sparse ones read as their archived bytes: not the file webdataset reads
    path = raw(tmp_path, "sp.tar", body + member("a.cls", b"3") + member("b.jpg", b"2") + END)
    theirs = wds_samples([path])
    assert theirs[0] == ("a", {"jpg": bytes(1 << 20) + b"end", "cls": b"3"})
    walk_refused(
        [path],
        r"sp.tar: member 'a.jpg' \(header at byte \d+\) is a GNU sparse file",
        tmp_path,
        capsys,
    )


@pytest.mark.parametrize("typeflag", [b"1", b"5"])
def test_a_link_or_folder_with_data_is_refused(tmp_path, typeflag, capsys):
    # was: its data skipped, while webdataset's tarfile reads a header there, finds none
    # and silently ends the shard (GNU tar: "Skipping to next header")
    body = member("a.jpg", b"1") + member("d.jpg", b"2" * 600, typeflag) + member("c.jpg", b"3")
    path = raw(tmp_path, "ld.tar", body + END)
    assert [k for k, _ in wds_samples([path])] == ["a"]  # c is lost there
    walk_refused([path], r"ld.tar: member 'd.jpg' .* claims 600 bytes of data", tmp_path, capsys)


# -- brace patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "s-{000000..000003}.tar",
        "s-{0..10}.tar",
        "s-{00..10}.tar",
        "s-{10..7}.tar",
        "s-{0..10..3}.tar",
        "s-{-02..2}.tar",
        "s-{a,{b,c}d}.tar",
        "s-{x}.tar",
        "s-{,a}.tar",
        "s-{0..3}{a,b}.tar",
        # were literal names: letter ranges and negative steps, as braceexpand and bash
        "s-{a..e}.tar",
        "s-{e..a..2}.tar",
        "s-{X..c}.tar",
        "s-{z..a}.tar",
        "s-{1..10..-2}.tar",
        "s-{10..1..-3}.tar",
        "{a..c}/{0..1}.tar",
    ],
)
def test_brace_patterns_expand_as_webdatasets(pattern):
    assert expand_braces(pattern) == list(braceexpand.braceexpand(pattern))


def test_a_backslash_in_a_brace_pattern_is_refused():
    # was: braceexpand's escapes read as literal backslashes: shards that do not exist
    with pytest.raises(ValueError, match=r"backslash in a brace pattern"):
        expand_braces(r"s3://b/s\{1,2\}-{0..3}.tar")


# -- S3 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_odd(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3odd")
    bucket = root / "bucket"
    bucket.mkdir()
    data = member("a.jpg", b"1" * 600) + member("a.cls", b"3") + member("b.jpg", b"2")
    (bucket / "padded.tar").write_bytes(data + bytes(2 << 20))
    (bucket / "sparse.tar").write_bytes(_sparse_gnu() + member("b.jpg", b"2") + END)
    (bucket / "zero.tar").write_bytes(b"")
    server = start_rclone(str(root))
    engine = RangeEngine(**server.options)
    yield engine, bucket
    engine.close()
    stop(server)


@pytest.mark.s3
def test_s3_shards_end_and_refuse_as_local_ones(s3_odd):
    engine, bucket = s3_odd
    ds = TarShardDataset("s3://bucket/padded.tar", field="jpg", engine=engine)
    assert [(ds.keys[i], ds.fields(i)) for i in range(len(ds))] == wds_samples(
        [str(bucket / "padded.tar")]
    )
    with pytest.raises(TarFormatError, match=r"s3://bucket/sparse.tar: member 'a.jpg' .* sparse"):
        TarShardDataset("s3://bucket/sparse.tar", field="jpg", engine=engine)
    with pytest.raises(TarFormatError, match=r"s3://bucket/zero.tar: an empty object"):
        TarShardDataset("s3://bucket/zero.tar", field="jpg", engine=engine)
