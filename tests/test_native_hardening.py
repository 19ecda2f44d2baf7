"""Regressions found by fuzzing the native layers under ASan/UBSan (tests/fuzz_native.py),
and leak checks: every call is byte-exact or raises, never crashes, leaks or wraps."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastload
from fastload import AlignedBuffer, RangeEngine, _collate, _file_engine
from fastload.collate import collate_slab
from fastload.errors import InvalidRequestError, RangeError

I64_MAX = np.iinfo(np.int64).max
ROOT = os.path.dirname(os.path.dirname(fastload.__file__))


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    path = tmp_path_factory.mktemp("hardening") / "blob.bin"
    data = np.random.default_rng(7).integers(0, 256, 3 * 4096 + 123, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return str(path), data


# -- file engine: int64 extremes -------------------------------------------------------


@pytest.mark.parametrize("scheme", ["", "direct://"])
@pytest.mark.parametrize(
    "row",
    [(0, 0, 10, I64_MAX), (0, 0, 10, I64_MAX - 3), (0, I64_MAX - 5, 10, 0), (0, 5, I64_MAX, 0),
     (0, I64_MAX, I64_MAX, I64_MAX)],
)
def test_range_ends_past_int64_raise_naming_the_range(blob, scheme, row):
    """dst + length and offset + length used to wrap: a write to a wild address (SEGV)."""
    path, _ = blob
    with pytest.raises(ValueError, match=r"range #0 .*does not fit in 64 bits") as ei:
        RangeEngine().read_into([scheme + path], np.array([row]), bytearray(100))
    assert path in str(ei.value)


@pytest.mark.parametrize("direct", [False, True])
def test_native_layer_checks_wrapping_ranges_itself(blob, direct):
    """The C reader must not rely on the Python checks: call the bridge directly."""
    path, _ = blob
    out = bytearray(100)
    call = lambda row: _file_engine.read_file_ranges(  # noqa: E731
        [path], [path], np.array([row], dtype=np.int64), out, 4096, 2, direct, 0)
    with pytest.raises(InvalidRequestError, match="does not fit the buffer"):
        call((0, 1, 10, I64_MAX - 3))
    with pytest.raises(RangeError, match="object size is"):
        call((0, I64_MAX - 5, 10, 0))


def test_source_index_is_not_truncated_to_int32(blob):
    """A source index of 2**32 was cast to int32 0 and read the first file."""
    path, _ = blob
    with pytest.raises(ValueError, match="source index 4294967296 is not one of the 1 sources"):
        _file_engine.read_file_ranges([path], [path], np.array([[1 << 32, 0, 10, 0]]),
                                      bytearray(10), 4096, 1, False, 0)


def test_nul_byte_in_path_is_rejected_not_truncated(blob):
    """C would stop at the NUL and open another file."""
    path, _ = blob
    with pytest.raises(ValueError, match="NUL byte"):
        fastload.RangeEngine().size(path + "\0.bak")
    with pytest.raises(ValueError, match="NUL byte"):
        fastload.read(path + "\0.bak")


def test_direct_huge_part_size_sizes_the_bounce_buffer_by_the_parts(blob):
    """part_size=1 PiB used to ask for a 1 PiB O_DIRECT bounce buffer: MemoryError."""
    path, data = blob
    eng = RangeEngine(part_size=1 << 50)
    assert bytes(memoryview(eng.read(f"direct://{path}"))) == data
    got = eng.read_ranges(f"direct://{path}", [(1, 4097), (5000, 77)])
    assert bytes(memoryview(got)) == data[1:4098] + data[5000:5077]


@pytest.mark.parametrize("out", [
    np.zeros((10, 12), dtype=np.uint8, order="F"),
    np.zeros(15, dtype=">u8"),
    np.zeros(10, dtype="u4,u8"),
])
def test_any_contiguous_writable_out_gets_bytes_in_memory_order(blob, out):
    """Fortran-ordered, byte-swapped and structured arrays used to fail memoryview.cast."""
    path, data = blob
    RangeEngine().read_ranges(path, [(3, out.nbytes)], out)
    assert out.tobytes(order="A") == data[3:3 + out.nbytes]


def test_buffer_too_small_names_a_uri_with_many_sources(blob, tmp_path):
    path, _ = blob
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * 50)
    table = np.array([[0, 0, 10, 0], [1, 0, 50, 10]])
    with pytest.raises(ValueError, match=rf"{other} \(range #1\): .*holds 30 bytes, 60 are needed"):
        RangeEngine().read_into([path, str(other)], table, bytearray(30))


# -- aligned buffers ---------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [-1, 2**63, 2**64 - 1])
def test_aligned_buffer_size_out_of_range(nbytes):
    """2**64 - 1 rounded up to a 0-byte block and exported a 2**64 - 1 byte view."""
    with pytest.raises(OverflowError, match=f"nbytes={nbytes} must be between 0 and"):
        AlignedBuffer(nbytes)


def test_aligned_buffer_near_ssize_max_is_a_memory_error():
    with pytest.raises(MemoryError, match="cannot allocate an aligned buffer"):
        AlignedBuffer(2**63 - 1)


# -- collate -----------------------------------------------------------------------------


def test_collate_unit_larger_than_any_batch_is_one_unit():
    """collate_buffer_size near 2**63 overflowed the unit count: nothing was written."""
    rng = np.random.default_rng(3)
    samples = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) for _ in range(4)]
    for isa in ("auto", "generic"):
        stats: dict = {}
        got = fastload.collate(samples, memory_format="channels_first", dtype=np.float32,
                               collate_buffer_size=I64_MAX, num_threads=3, stats=stats, isa=isa)
        want = np.stack(samples).transpose(0, 3, 1, 2).astype(np.float32)
        np.testing.assert_array_equal(got, want)
        assert stats["work_units"] == 1 and stats["unit_bytes"] == want.nbytes


@pytest.mark.parametrize("unit", [1 << 40, I64_MAX])
def test_ragged_unit_larger_than_the_batch(unit):
    """The ragged unit count overflowed the same way: an uninitialised array came back."""
    samples = [bytes([i]) * (17 * i + 1) for i in range(9)]
    packed, offsets = fastload.collate_ragged(samples, num_threads=2, collate_buffer_size=unit)
    assert packed.tobytes() == b"".join(samples)
    assert offsets.tolist() == [0, *np.cumsum([len(s) for s in samples]).tolist()]


def test_collate_bridge_checks_huge_offsets_itself():
    """offset + sample size wrapped past the slab check: a read from a wild address."""
    slab = np.zeros(64, np.uint8)
    out = np.zeros((1, 16), np.uint8)
    offsets = np.array([I64_MAX - 3], dtype=np.int64)
    with pytest.raises(ValueError, match="lies outside src"):
        _collate.collate_native(None, slab, offsets, out, 1, 16, 1, True, True, _collate.DT_RAW,
                                _collate.DT_RAW, 1, 1, 1, None, None, 0, 1, "auto")
    with pytest.raises(ValueError, match="lies outside src"):
        collate_slab(slab, offsets, (16,), np.uint8)


def test_ragged_rejects_object_arrays():
    """numpy exports object arrays as PyObject pointers: they were packed as 'bytes'."""
    with pytest.raises(TypeError, match="sample 1 has dtype object: it holds Python objects"):
        fastload.collate_ragged([b"ab", np.array([object(), "x"], dtype=object)])


@pytest.mark.parametrize("knob,value", [("num_threads", 2**31), ("collate_buffer_size", 2**63)])
def test_collate_counts_too_large_name_the_knob(knob, value):
    """They used to raise a bare OverflowError from the bridge."""
    with pytest.raises(ValueError, match=f"{knob}={value} is too large"):
        fastload.collate([np.zeros(3, np.uint8)], **{knob: value})
    with pytest.raises(ValueError, match=f"{knob}={value} is too large"):
        fastload.collate_ragged([b"abc"], **{knob: value})


# -- leaks -------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_no_fd_or_thread_leaks_over_thousands_of_calls(blob, tmp_path):
    """Reads that succeed, and reads that fail after opening files (range past the end,
    O_DIRECT bounce, cancellation, a directory, a missing file), leave nothing open."""
    path, data = blob
    missing = str(tmp_path / "missing.bin")
    eng = RangeEngine(part_size=4096, max_inflight_parts=4)
    good = np.array([[0, 0, len(data), 0], [1, 5, 9000, len(data)]])
    past_end = np.array([[0, 0, 10, 0], [1, len(data) - 1, 2, 10]])
    out = np.zeros(2 * len(data), np.uint8)
    cancelled = _file_engine.CancelToken()
    cancelled.cancel()
    eng.read_into([path, f"direct://{path}"], good, out)  # warm up imports and caches
    fds, threads = _open_fds(), _native_threads()
    for i in range(1500):
        srcs = [path, f"direct://{path}" if i % 2 else path]
        eng.read_into(srcs, good, out)
        with pytest.raises(RangeError):
            eng.read_into(srcs, past_end, out)
        with pytest.raises(FileNotFoundError):
            eng.read_into([path, missing], good, out)
        if i % 10 == 0:
            with pytest.raises(ValueError, match="directory"):
                eng.read_into([path, str(tmp_path)], good, out)
            with pytest.raises(OSError, match="cancelled"):
                eng.read_into(srcs, good, out, cancel=cancelled)
    assert out[: len(data)].tobytes() == data
    # <=, not ==: threads and sockets of servers that earlier tests started in this process
    # may close meanwhile; a leak would only add.
    assert _open_fds() <= fds
    assert _native_threads() <= threads
    assert threading.active_count() >= 1  # the engine starts no Python threads either


# -- packaging ---------------------------------------------------------------------------


def test_import_does_not_import_torch():
    """torch is an optional extra: ``import fastload`` must not pay for it."""
    script = "import sys, fastload; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_py_typed_marker_ships():
    pkg = os.path.dirname(fastload.__file__)
    assert os.path.isfile(os.path.join(pkg, "py.typed"))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert '"py.typed"' in f.read()


def test_buffer_stub_matches_the_compiled_module():
    """fastload/_buffer.pyi types AlignedBuffer for py.typed users: every name it
    declares must exist at run time."""
    import ast

    from fastload import _buffer

    with open(os.path.join(os.path.dirname(fastload.__file__), "_buffer.pyi")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(_buffer, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name != "__buffer__":
                    assert hasattr(cls, item.name), f"{node.name}.{item.name}"
        elif isinstance(node, ast.FunctionDef):
            assert callable(getattr(_buffer, node.name))
        elif isinstance(node, ast.AnnAssign):
            assert hasattr(_buffer, node.target.id)


@pytest.mark.parametrize("part,inflight,paths,match", [
    (100, 1, 1, "part_size=100 must be >= 4096"),
    (4096, 0, 1, "max_inflight_parts=0 must be >= 1"),
    (4096, 1, 0, "no source files"),
])
def test_native_option_errors_name_the_knob(blob, part, inflight, paths, match):
    """One message used to cover all three ('part_size must be >= 4096 and ...'),
    even when the only fault was an empty source list."""
    path, _ = blob
    with pytest.raises(InvalidRequestError, match=match):
        _file_engine.read_file_ranges([path] * paths, [path] * paths,
                                      np.zeros((0, 4), np.int64), bytearray(1), part, inflight,
                                      False, 0)
