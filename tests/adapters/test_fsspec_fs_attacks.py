"""The fsspec filesystem attacked where fsspec's callers lean on it: options holding
secrets (repr, vars, to_json), URLs holding credentials, bad knobs and offsets, a closed
file."""

from __future__ import annotations

import json
import pickle

import pytest

fsspec = pytest.importorskip("fsspec")

import fastload  # noqa: E402
from fastload.adapters.fsspec_fs import FastloadFileSystem  # noqa: E402

SECRET = "pw-DO-NOT-LEAK-42"
TOKEN = "TOKEN-DO-NOT-LEAK"
OPTIONS = {
    "endpoint_url": "http://127.0.0.1:9",
    "access_key_id": "AKID",
    "secret_access_key": SECRET,
    "session_token": TOKEN,
    "region": "us-east-1",
}


def _clean(text: str) -> None:
    assert SECRET not in text and TOKEN not in text, text


def test_storage_options_show_no_secret_and_still_rebuild_the_filesystem():
    fs = fastload.filesystem(**OPTIONS)
    for text in (repr(fs.storage_options), str(fs.storage_options), repr(vars(fs)), repr(fs)):
        _clean(text)
    assert fs.storage_options["secret_access_key"] == SECRET  # passed on as given
    # pickled and rebuilt (fsspec's make_instance): the same cached instance ...
    assert pickle.loads(pickle.dumps(fs)) is fs
    # ... and another secret is another filesystem (the cache token sees the real values)
    assert fastload.filesystem(**{**OPTIONS, "secret_access_key": SECRET + "2"}) is not fs


def test_to_json_without_password_leaves_the_secrets_out():
    fs = fastload.filesystem(**OPTIONS)
    shown = json.loads(fs.to_json(include_password=False))
    _clean(json.dumps(shown))
    assert shown["access_key_id"] == "AKID" and shown["args"] == []
    assert fsspec.AbstractFileSystem.from_json(fs.to_json()) is fs  # fsspec's default keeps them


def test_a_credentialed_url_is_not_shown_by_files_or_refusals(http_server):
    url = http_server.put("a.bin", bytes(range(100)))
    url = url.replace("://", f"://user:{SECRET}@", 1) + f"?X-Amz-Signature={SECRET}"
    fs = FastloadFileSystem(skip_instance_cache=True)
    with fs.open(url) as f:
        _clean(repr(f))
        assert f.read(3) == b"\x00\x01\x02"
    for call in (lambda: fs.open(url, "wb"), lambda: fs._open(url, "ab"), lambda: fs.modified(url)):
        with pytest.raises(NotImplementedError) as info:
            call()
        _clean(str(info.value))
        assert "user:***@" in str(info.value)


@pytest.mark.parametrize("knob", ["block_size", "max_gap"])
@pytest.mark.parametrize("value", [-1, "x", 1.5])
def test_bad_knobs_are_refused_by_name(knob, value):
    with pytest.raises(ValueError, match=knob):
        FastloadFileSystem(skip_instance_cache=True, **{knob: value})


def test_bad_per_call_knobs_are_refused_by_name(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    fs = FastloadFileSystem(skip_instance_cache=True)
    with pytest.raises(ValueError, match="block_size"):
        fs.open(str(tmp_path / "a"), block_size=-1)
    with pytest.raises(ValueError, match="max_gap"):
        fs.cat_ranges([str(tmp_path / "a")], [0], [1], max_gap=-5)


def test_offsets_follow_slices_and_refuse_non_integers(tmp_path):
    p = str(tmp_path / "a")
    (tmp_path / "a").write_bytes(data := bytes(range(100)))
    fs = FastloadFileSystem(skip_instance_cache=True)
    cases = [(10, 5), (-5, None), (-200, 3), (0, -98), (200, 300), (None, None), (5, 5)]
    got = fs.cat_ranges([p] * len(cases), [c[0] for c in cases], [c[1] for c in cases])
    assert got == [data[a:b] for a, b in cases]
    assert [fs.cat_file(p, a, b) for a, b in cases] == [data[a:b] for a, b in cases]
    for bad in (1.5, "1", True):
        # a float was truncated by cat_ranges (and refused by cat_file): both refuse it now
        with pytest.raises(TypeError, match=f"{p}: start="):
            fs.cat_ranges([p], [bad], [3])
        with pytest.raises(TypeError, match=f"{p}: end="):
            fs.cat_file(p, 0, bad)


def test_a_closed_file_refuses_seek_like_io(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    f = FastloadFileSystem(skip_instance_cache=True).open(str(tmp_path / "a"))
    f.seek(200)
    assert f.read() == b"" and f.tell() == 200  # past the end: allowed, reads nothing
    with pytest.raises(ValueError, match="before start"):
        f.seek(-1)
    f.close()
    for call in (lambda: f.seek(0), f.read, f.read_buffer):
        with pytest.raises(ValueError, match="closed file"):
            call()
