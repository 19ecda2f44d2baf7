"""Hostile tar headers and brace patterns: each is a named error, never a hang or a
memory blow-up (fastload.plan.tar_format, tar_index, shard_uris)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from fastload.errors import LabelError, MissingFieldError, TarFormatError
from fastload.plan.shard_uris import MAX_EXPANSION, expand_braces
from fastload.plan.tar_format import BLOCK, parse_header
from fastload.plan.tar_shards import TarShardDataset
from fastload.storage.engine import RangeEngine
from tests.support.tar_data import write_shards, write_tar


def _header(name: str, size_field: bytes, typeflag: bytes = b"0") -> bytes:
    info = tarfile.TarInfo(name)
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    block[124:136] = size_field.ljust(12, b"\0")
    block[156:157] = typeflag
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


@pytest.mark.parametrize("field", [b"-0000001", b"-2000", b"+17", b"0o17", b"1_0", b"9"])
def test_size_fields_that_int_would_accept_but_are_not_octal(field):
    with pytest.raises(TarFormatError, match=r"u: the tar header at byte 0 has a bad size"):
        parse_header(_header("a.bin", field), "u", 0)


def test_negative_base256_size_is_refused():
    block = bytearray(_header("a.bin", b"0"))
    block[124:136] = (-1024).to_bytes(12, "big", signed=True)  # 0xFF...: GNU negative
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    with pytest.raises(TarFormatError, match="negative size field"):
        parse_header(bytes(block), "u", 0)


def test_a_negative_size_in_a_shard_is_an_error_not_a_hang(tmp_path):
    # before: the walk stepped back to the previous header and looped forever
    path = tmp_path / "neg.tar"
    path.write_bytes(_header("a.bin", b"0") + _header("b.bin", b"-2000") + bytes(2 * BLOCK))
    with pytest.raises(TarFormatError, match=r"neg.tar: the tar header at byte 512 has a bad"):
        TarShardDataset(str(path), field="bin")
    ds = TarShardDataset(str(path), field="bin", on_error="skip")
    assert ds.keys == ["a"] and ds.skipped == {"broken shard (indexed up to the break)": 1}


def _pax(records: dict[str, str]) -> bytes:
    body = b""
    for k, v in records.items():
        rec = f" {k}={v}\n"
        n = len(rec) + 1
        n = len(f"{n}{rec}")
        body += f"{n}{rec}".encode()
    head = _header("pax", oct(len(body))[2:].encode(), b"x")
    return head + body.ljust(-(-len(body) // BLOCK) * BLOCK, b"\0")


@pytest.mark.parametrize("size", ["-1024", "abc", "1e3", " 12"])
def test_a_pax_size_record_that_is_no_number(tmp_path, size):
    # before: "abc" escaped as a bare ValueError (past on_error="skip"), "-1024" hung
    path = tmp_path / "p.tar"
    path.write_bytes(
        _header("a.bin", b"0") + _pax({"size": size}) + _header("b.bin", b"0") + bytes(1024)
    )
    with pytest.raises(TarFormatError, match=r"p.tar: the pax header .* bad size record"):
        TarShardDataset(str(path), field="bin")
    ds = TarShardDataset(str(path), field="bin", on_error="skip")
    assert ds.keys == ["a"] and sum(ds.skipped.values()) == 1


def test_brace_ranges_pad_as_bash_does():
    assert expand_braces("{0..10}")[:2] == ["0", "1"]  # before: "00", "01"
    assert expand_braces("{1..010}")[:2] == ["001", "002"]  # before: "1", "2"
    assert expand_braces("{-05..1}") == ["-05", "-04", "-03", "-02", "-01", "000", "001"]
    assert expand_braces("{00..2}") == ["00", "01", "02"]
    assert expand_braces("{3..1}{a,b}") == ["3a", "3b", "2a", "2b", "1a", "1b"]
    assert expand_braces("x{a,{1..2}}y") == ["xay", "x1y", "x2y"]


@pytest.mark.parametrize(
    "pattern",
    ["s-{0..9999}{0..9999}.tar", "{a,{0..99999}}-{0..99999}", "{0..999}{0..999}{0..999}"],
)
def test_a_product_of_ranges_is_counted_before_it_is_built(pattern):
    # before: 10**8 strings were built (gigabytes) before the limit was checked
    with pytest.raises(ValueError, match=f"names more than {MAX_EXPANSION} shards"):
        expand_braces(pattern)


def test_malformed_patterns_are_clear_and_show_no_secret():
    with pytest.raises(ValueError, match="nested more than"):
        expand_braces("{a," * 2000 + "b" + "}" * 2000)  # before: RecursionError
    for pattern, what in [
        ("https://u:pw@h/s-{0..3.tar", "unclosed"),
        ("https://h/s-{0..3}}.tar?X-Amz-Signature=SECRET", "without"),
        ("https://h/{0..3..0}.tar?token=SECRET", "step 0"),
        ("https://h/{0..99999999999}.tar?sig=SECRET", "names 100000000000 values"),
    ]:
        with pytest.raises(ValueError, match=what) as info:
            expand_braces(pattern)
        assert "SECRET" not in str(info.value) and "pw@" not in str(info.value)


# -- sidecar indexes that are not what they claim --------------------------------------


def _rewritten(good: bytes, meta_fn=None, **arrays_fn) -> bytes:
    z = dict(np.load(io.BytesIO(good)))
    if meta_fn is not None:
        meta = meta_fn(json.loads(z["meta"].tobytes()))
        z["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    for name, fn in arrays_fn.items():
        z[name] = fn(z[name])
    out = io.BytesIO()
    np.savez(out, **z)
    return out.getvalue()


def _shift_members(meta):
    a, b = meta["shards"][:2]
    return {
        **meta,
        "shards": [{**a, "members": 3}, {**b, "members": b["members"] + a["members"] - 3}],
    }


@pytest.fixture
def indexed(tmp_path):
    paths = write_shards(str(tmp_path / "t"), 10, 5)
    where = tmp_path / "i.flidx"
    TarShardDataset(paths, field="bin", label="cls", index=str(where))
    return paths, where.read_bytes(), tmp_path / "bad.flidx"


@pytest.mark.parametrize(
    "damage",
    [
        lambda g: g[: len(g) // 2],  # truncated zip: was a bare BadZipFile
        lambda g: b"",  # was EOFError
        lambda g: _rewritten(g, lambda m: [1]),  # was AttributeError
        lambda g: _rewritten(g, lambda m: {k: v for k, v in m.items() if k != "shards"}),
        lambda g: _rewritten(
            g, lambda m: {**m, "shards": [{**s, "size": "x"} for s in m["shards"]]}
        ),
        lambda g: _rewritten(g, inline_bounds=lambda a: a[:3]),  # was IndexError
        lambda g: _rewritten(g, sizes=lambda a: a.astype(np.float64)),  # was accepted
        lambda g: _rewritten(g, offsets=lambda a: a - 10**6),
        lambda g: _rewritten(g, offsets=lambda a: a + 10**9),
        lambda g: _rewritten(g, _shift_members),  # was accepted: wrong bytes, silently
        lambda g: _rewritten(g, offsets=lambda a: a + 1),
    ],
)
def test_a_damaged_sidecar_is_a_value_error_naming_it(indexed, damage):
    paths, good, bad = indexed
    bad.write_bytes(damage(good))
    with pytest.raises(ValueError, match=r"bad.flidx: (not a|a damaged) fastload tar index"):
        TarShardDataset(paths, field="bin", label="cls", index=str(bad))


def test_a_sidecar_of_other_shards_is_walked_past(indexed, tmp_path):
    paths, good, bad = indexed
    bad.write_bytes(good)
    other = write_shards(str(tmp_path / "o"), 10, 5)
    ds = TarShardDataset(other, field="bin", label="cls", index=str(bad))
    assert ds.index_stats == {"reused": 0, "walked": 2} and len(ds) == 10


def test_a_member_name_twice_in_a_row_is_not_dropped_silently(tmp_path):
    # before: the second a.bin / a.cls were ignored: one sample fewer, no word
    members = [("a.bin", b"1"), ("a.cls", b"1"), ("a.bin", b"2"), ("a.cls", b"2")]
    members += [("b.bin", b"3"), ("b.cls", b"3")]
    path = write_tar(str(tmp_path / "d.tar"), members)
    with pytest.raises(TarFormatError, match=r"d.tar: sample 'a' has 2 duplicate member"):
        TarShardDataset(path, field="bin", label="cls")
    ds = TarShardDataset(path, field="bin", label="cls", on_error="skip")
    assert ds.keys == ["b"] and ds.skipped == {"duplicate member": 1}


def test_odd_member_names_are_keys_only(tmp_path):
    # names are never paths here: "../x" and "/abs/x" are keys like any other; "e.x.bin"
    # is key "e" with field "x.bin" (webdataset's first-dot rule)
    members = [("../c.bin", b"q"), ("../c.cls", b"3"), ("/abs/d.bin", b"dd")]
    members += [("/abs/d.cls", b"4"), ("z.bin", b""), ("z.cls", b"5")]
    members += [("e.x.bin", b"e"), ("e.x.cls", b"6")]
    path = write_tar(str(tmp_path / "n.tar"), members)
    ds = TarShardDataset(path, field="bin", label="cls", on_error="skip")
    assert ds.keys == ["../c", "/abs/d", "z"] and ds.skipped == {"missing data field": 1}
    assert [ds[i][0].tobytes() for i in range(3)] == [b"q", b"dd", b""]
    with pytest.raises(MissingFieldError, match=r"sample 'e' has no bin member \(it has x.bin"):
        TarShardDataset(path, field="bin", label="cls")


def test_bad_labels_are_counted_skips_with_skip(tmp_path):
    # before: a LabelError even with on_error="skip"
    members = [("a.bin", b"1"), ("a.cls", b"seven"), ("b.bin", b"2"), ("b.cls", b"2")]
    members += [("c.bin", b"3"), ("d.bin", b"4"), ("d.cls", b"4")]
    path = write_tar(str(tmp_path / "l.tar"), members)
    with pytest.raises(LabelError, match=r"a.tar: sample 'a': .cls does not hold a label"):
        TarShardDataset(write_tar(str(tmp_path / "a.tar"), members[:4]), field="bin", label="cls")
    ds = TarShardDataset(path, field="bin", label="cls", on_error="skip")
    assert ds.keys == ["b", "d"] and list(ds._labels) == [2, 4]
    assert ds.skipped == {"bad label": 1, "missing label field": 1}
    assert ds[0][0].tobytes() == b"2" and ds[1][1] == 4


def test_a_deeply_nested_json_label_is_a_label_error(tmp_path):
    path = write_tar(str(tmp_path / "j.tar"), [("c.bin", b"3"), ("c.json", b"[" * 100_000)])
    with pytest.raises(LabelError, match=r"sample 'c': .json does not hold a label"):
        TarShardDataset(path, field="bin", label="json:x")  # before: a RecursionError
    with pytest.raises(ValueError, match="no sample of 1 shards has a label"):
        TarShardDataset(path, field="bin", label="json:x", on_error="skip")


def test_a_label_member_of_gigabytes_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr("fastload.plan.tar_shards.LABEL_MAX", 2048)
    members = [("a.bin", b"1"), ("a.cls", b"1" * 4096), ("b.bin", b"2"), ("b.cls", b"2")]
    path = write_tar(str(tmp_path / "g.tar"), members)
    with pytest.raises(LabelError, match=r"sample 'a': its .cls member holds 4096 bytes"):
        TarShardDataset(path, field="bin", label="cls")
    ds = TarShardDataset(path, field="bin", label="cls", on_error="skip")
    assert ds.keys == ["b"] and ds.skipped == {"bad label": 1}


def test_a_damaged_sidecar_is_walked_past_with_skip(indexed):
    paths, good, bad = indexed
    bad.write_bytes(good[: len(good) // 2])
    with pytest.warns(RuntimeWarning, match=r"bad.flidx: not a fastload tar index.*walking"):
        ds = TarShardDataset(paths, field="bin", label="cls", index=str(bad), on_error="skip")
    assert len(ds) == 10 and ds.index_stats == {"reused": 0, "walked": 2}
    again = TarShardDataset(paths, field="bin", label="cls", index=str(bad))  # rewritten
    assert again.index_stats == {"reused": 2, "walked": 0}


def test_a_sidecar_read_by_url_is_named_without_its_secret(indexed, http_server):
    paths, good, _ = indexed
    url = http_server.put("i.flidx", good[:100]) + "?X-Amz-Signature=SECRET"
    with pytest.raises(ValueError, match="not a fastload tar index") as info:
        TarShardDataset(paths, field="bin", index=url, engine=RangeEngine())
    assert "SECRET" not in str(info.value)


def test_a_pax_path_with_a_nul_byte_is_refused(tmp_path):
    # before: accepted, and the sidecar written for it could not be read back
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in [("a.bin", b"1"), ("b.bin", b"2")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name == "b.bin":
                info.pax_headers = {"path": "b\0x.bin"}
            t.addfile(info, io.BytesIO(data))
    path = tmp_path / "nul.tar"
    path.write_bytes(buf.getvalue())
    with pytest.raises(
        TarFormatError, match=r"nul.tar: a pax path record with a NUL byte .* at byte 1024"
    ):
        TarShardDataset(str(path), field="bin")
    where = str(tmp_path / "i.flidx")
    for _ in range(2):  # the second run reads the sidecar the first one wrote
        ds = TarShardDataset(str(path), field="bin", index=where, on_error="skip")
        assert ds.keys == ["a"] and sum(ds.skipped.values()) == 1
