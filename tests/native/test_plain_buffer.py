"""Only plain data reaches C (fastload/_native/plain_buffer.pxi): a buffer of Python objects
or pointers is refused by every bridge before any native code runs. Writing bytes over an
object array's PyObject pointers crashed the interpreter; collating one copied addresses."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fastload._native import collate as native_collate
from fastload._native import file_reader, http_reader
from fastload._native.buffer import plain_format_fault
from fastload.collate import collate_slab
from fastload.storage.engine import RangeEngine

OBJECT_LIKE = [
    np.dtype(object),
    np.dtype([("a", "<i4"), ("b", object)]),  # an object field inside a record
]


def _objects(n, dtype=object):
    a = np.empty(n, dtype=dtype)
    if a.dtype == object:
        a[:] = [object() for _ in range(n)]
    return a


@pytest.mark.parametrize(
    "fmt",
    ["B", "b", "c", "<f4", "=d", "3w", "Zd", "?", "T{<i:a:<d:O:}", "T{(2,3)B:x:}", "10s"],
)
def test_plain_formats(fmt):
    assert plain_format_fault(fmt) is None


@pytest.mark.parametrize("fmt", ["O", "P", "&<i", "T{i:a:O:b:}", "<i4O", "q$"])
def test_formats_that_are_not_plain_data(fmt):
    assert plain_format_fault(fmt)


@pytest.mark.parametrize("dtype", OBJECT_LIKE)
def test_file_reader_refuses_an_object_destination(blob, dtype):
    path, _ = blob
    out = _objects(64, dtype)
    kept = out.copy()
    exports = sys.getrefcount(out)
    with pytest.raises(TypeError, match="holds Python objects"):
        file_reader.read_file_ranges(
            [path], [path], np.array([[0, 0, 16, 0]]), out, 4096, 1, False, 0
        )
    assert sys.getrefcount(out) == exports  # the buffer taken to look at it was released
    if out.dtype == object:  # the pointers were not touched
        assert all(a is b for a, b in zip(out, kept, strict=True))


def test_engine_refuses_an_object_destination(blob):
    path, _ = blob
    for dtype in OBJECT_LIKE:
        with pytest.raises(TypeError, match="holds Python objects"):
            RangeEngine().read_into([path], np.array([[0, 0, 16, 0]]), _objects(64, dtype))
        with pytest.raises(TypeError, match="holds Python objects"):
            RangeEngine().read_ranges(path, [(0, 16)], _objects(64, dtype))


def test_a_record_field_named_o_is_plain(blob):
    path, data = blob
    out = np.zeros(4, dtype=[("O", "<u4"), ("P", "<u4")])
    RangeEngine().read_ranges(path, [(0, out.nbytes)], out)
    assert out.tobytes() == data[: out.nbytes]


@pytest.mark.http
def test_http_reader_refuses_an_object_destination_before_any_request(http_server):
    from fastload.storage import libcurl

    libcurl.load()
    url = http_server.put("o.bin", b"x" * 100)
    ctx = http_reader.HttpContext()
    try:
        with pytest.raises(TypeError, match="holds Python objects"):
            ctx.read(
                [url.encode()], [None], [url], np.array([[0, 0, 16, 0]]), _objects(64), 4096, 1, 0.0
            )
        assert ctx.stats()["requests"] == 0 and http_server.server.seen_headers == []
    finally:
        ctx.close()


def test_collate_refuses_object_buffers():
    objs = _objects(16)
    # an object slab used to come back as the bytes of its pointers
    with pytest.raises(TypeError, match="src: .*holds Python objects"):
        collate_slab(objs, np.array([0, 8]), (8,), np.uint8)
    raw_copy = {"src_dtype": native_collate.DT_RAW, "dst_dtype": native_collate.DT_RAW}
    layout = {"channels": 1, "src_channels_last": True, "dst_channels_last": True}
    plan = native_collate.CollatePlan(
        pixels=8, src_itemsize=1, dst_itemsize=1, **raw_copy, **layout
    )
    good = np.zeros(16, np.uint8)
    with pytest.raises(TypeError, match="src: .*holds Python objects"):
        plan.run(None, objs, np.array([0, 8]), np.zeros(16, np.uint8))
    with pytest.raises(TypeError, match="out: .*holds Python objects"):
        plan.run(None, good, np.array([0, 8]), _objects(16))
    with pytest.raises(TypeError, match="sample 1: .*holds Python objects"):
        plan.run([good[:8], objs[:8]], None, None, np.zeros(16, np.uint8))
    with pytest.raises(TypeError, match="sample 0: .*holds Python objects"):
        native_collate.gather_ragged([objs], 1, 0)
