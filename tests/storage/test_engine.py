"""RangeEngine: the checks of every read (ranges, destinations, knobs) before native work."""

from __future__ import annotations

import numpy as np
import pytest

import fastload
from fastload.storage.engine import RangeEngine

I64_MAX = np.iinfo(np.int64).max


# -- ranges -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["", "direct://"])
@pytest.mark.parametrize(
    "row",
    [
        (0, 0, 10, I64_MAX),
        (0, 0, 10, I64_MAX - 3),
        (0, I64_MAX - 5, 10, 0),
        (0, 5, I64_MAX, 0),
        (0, I64_MAX, I64_MAX, I64_MAX),
    ],
)
def test_range_ends_past_int64_raise_naming_the_range(blob, scheme, row):
    """dst + length and offset + length used to wrap: a write to a wild address (SEGV)."""
    path, _ = blob
    with pytest.raises(ValueError, match=r"range #0 .*does not fit in 64 bits") as ei:
        RangeEngine().read_into([scheme + path], np.array([row]), bytearray(100))
    assert path in str(ei.value)


@pytest.mark.parametrize(
    "rng,what", [((-1, 10), "negative offset"), ((5, 0), "empty"), ((5, -3), "empty")]
)
def test_negative_or_empty_range(data_file, rng, what):
    path, _ = data_file
    with pytest.raises(ValueError, match=what) as ei:
        fastload.read_ranges(path, [rng])
    assert path in str(ei.value)


# -- destinations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((10, 12), dtype=np.uint8, order="F"),
        np.zeros(15, dtype=">u8"),
        np.zeros(10, dtype="u4,u8"),
    ],
)
def test_any_contiguous_writable_out_gets_bytes_in_memory_order(blob, out):
    """Fortran-ordered, byte-swapped and structured arrays used to fail memoryview.cast."""
    path, data = blob
    RangeEngine().read_ranges(path, [(3, out.nbytes)], out)
    assert out.tobytes(order="A") == data[3 : 3 + out.nbytes]


def test_buffer_too_small_or_read_only(data_file):
    path, _ = data_file
    with pytest.raises(ValueError, match="holds 99 bytes, 100 are needed"):
        fastload.read_ranges(path, [(0, 100)], out=bytearray(99))
    with pytest.raises(ValueError, match="read-only"):
        fastload.read_ranges(path, [(0, 100)], out=bytes(100))
    with pytest.raises(ValueError, match="read-only"):
        arr = np.zeros(100, np.uint8)
        arr.flags.writeable = False
        fastload.read_ranges(path, [(0, 100)], out=arr)


def test_buffer_too_small_names_a_uri_with_many_sources(blob, tmp_path):
    path, _ = blob
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * 50)
    table = np.array([[0, 0, 10, 0], [1, 0, 50, 10]])
    with pytest.raises(ValueError, match=rf"{other} \(range #1\): .*holds 30 bytes, 60 are needed"):
        RangeEngine().read_into([path, str(other)], table, bytearray(30))


# -- knobs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw,knob",
    [
        ({"part_size": 100}, "part_size"),
        ({"max_inflight_parts": 0}, "max_inflight_parts"),
        ({"page_cache_mode": "lru"}, "page_cache_mode"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_bad_engine_options_name_the_knob(kw, knob):
    with pytest.raises(ValueError, match=knob):
        RangeEngine(**kw)


# -- ranges are integers, checked before a buffer is allocated ----------------------


@pytest.mark.parametrize(
    "ranges,what",
    [
        ([(0.5, 10)], "floats"),
        ([(0, 10.0)], "floats"),
        ([("5", 10)], "strings"),
        (np.array([[0.0, 8.0]]), "floats"),
        ([(0, 2**64)], "not int64"),
        ([(0, None)], "not int64"),
    ],
)
def test_ranges_that_are_not_integers_are_refused_not_truncated(blob, ranges, what):
    """0.5 was read as 0 and "5" as 5: now a TypeError naming the URI and the ranges."""
    path, _ = blob
    with pytest.raises(TypeError, match=f"{path}: ranges=.* must hold integers, not .*{what}"):
        RangeEngine().read_ranges(path, ranges)
    with pytest.raises(TypeError, match="table=.* must hold integers"):
        table = (
            [(0, *r, 0) for r in ranges]
            if not isinstance(ranges, np.ndarray)
            else [[0, 0.0, 8.0, 0]]
        )
        RangeEngine().read_into([path], table, bytearray(100))


def test_tables_that_are_not_plain_int64_arrays_are_converted_or_refused_by_name(blob):
    """A C-contiguous int64 table goes straight to the C check; any other array is
    converted (other int dtypes, byte order, strides) or refused naming the knob."""
    path, data = blob
    eng = RangeEngine()
    rows = np.array([[0, 3, 5, 0], [0, 20, 4, 5]], dtype=np.int64)
    for table in (
        rows,
        rows.astype(np.int32),
        rows.astype(">i8"),
        np.asfortranarray(rows),
        np.repeat(rows, 2, axis=0)[::2],  # strided
    ):
        out = bytearray(9)
        eng.read_into([path], table, out)
        assert bytes(out) == data[3:8] + data[20:24]
    with pytest.raises(TypeError, match=r"(?s)table=.* must hold integers, not floats"):
        eng.read_into([path], rows.astype(np.float64), bytearray(9))
    with pytest.raises(ValueError, match="table"):
        eng.read_into([path], rows[:, :3].copy(), bytearray(9))
    eng.read_into([path], np.zeros((0, 4), dtype=np.int64), bytearray(0))  # nothing to read
    with pytest.raises(ValueError, match="negative destination offset"):
        eng.read_into([path], np.array([[0, 0, 4, -1]]), bytearray(9))
    eng.close()


def test_a_range_past_the_end_is_refused_before_the_buffer_is_allocated(blob, monkeypatch):
    """A 2 GiB range of a 12 kB file used to pre-fault 2 GiB (7.5 s) before the size check."""
    from fastload.storage import engine as engine_mod

    path, data = blob
    allocated = []
    real = engine_mod.AlignedBuffer
    monkeypatch.setattr(
        engine_mod, "AlignedBuffer", lambda n, **kw: allocated.append(n) or real(n, **kw)
    )
    with pytest.raises(fastload.RangeError, match=f"object size is {len(data)} bytes") as ei:
        RangeEngine().read_ranges(path, [(0, 10), (100, 2 << 30)])
    assert allocated == [] and ei.value.object_size == len(data)
    assert bytes(RangeEngine().read_ranges(path, [(0, 10)])) == data[:10]  # small: no extra stat


@pytest.mark.http
def test_a_network_range_past_the_end_is_refused_before_allocating(http_server, monkeypatch):
    from fastload.storage import engine as engine_mod

    url = http_server.put("small.bin", b"x" * 1000)
    monkeypatch.setattr(engine_mod, "AlignedBuffer", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(fastload.RangeError, match="object size is 1000 bytes"):
        RangeEngine().read_ranges(url, [(0, 64 << 20)])


# -- knobs are refused at construction, before they can overflow ----------------------


@pytest.mark.parametrize(
    "knob,value",
    [
        ("timeout", 1e300),
        ("max_inflight_parts", 2**31),
        ("part_size", 2**70),
        ("connect_timeout", float("inf")),
        ("connect_timeout", 1e300),
        ("request_timeout", 1e300),
        ("retry_deadline", 1e300),
        ("backoff_base", float("nan")),
        ("backoff_cap", 1e300),
        ("low_speed_limit", 2**63),
        ("low_speed_time", 2**62),
        ("max_retries", 2**40),
        ("list_page_size", 2**31),
        ("buffer_size", 2**40),
    ],
)
def test_knobs_that_would_overflow_are_refused_at_construction(knob, value):
    with pytest.raises(ValueError, match=f"{knob}=.* is invalid"):
        RangeEngine(**{knob: value})
