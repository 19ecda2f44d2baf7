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
