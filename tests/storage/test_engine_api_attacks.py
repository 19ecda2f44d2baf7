"""The range engine's public calls given bad arguments: named errors, never a crash or a
write outside the destination (risky cases run in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastload
from fastload.storage.engine import RangeEngine

N = 10_000


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(N))
    return str(p)


@pytest.fixture
def eng():
    with RangeEngine() as e:
        yield e


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _ro_array():
    a = np.zeros(N, np.uint8)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: bytearray(10), ValueError, "10 bytes"),
        (lambda: bytes(N), ValueError, "read-only"),
        (lambda: memoryview(bytearray(N)).toreadonly(), ValueError, "read-only"),
        (_ro_array, ValueError, "read-only"),
        (lambda: np.zeros(2 * N, np.uint8)[::2], ValueError, "not contiguous"),
        (lambda: np.zeros(N // 8 - 1, np.float64), ValueError, "9992 bytes"),
        (lambda: np.zeros(N, object), TypeError, "Python objects"),
    ],
)
def test_bad_out_of_read_is_named(eng, src, make, exc, words):
    with pytest.raises(exc, match=words) as info:
        eng.read(src, make())
    assert src in str(info.value)


def test_float64_and_fortran_out_hold_the_bytes(eng, src):
    want = np.fromfile(src, np.uint8)
    f64 = np.zeros(N // 8, np.float64)  # the length is in bytes, not items
    eng.read(src, f64)
    assert f64.view(np.uint8).tobytes() == want.tobytes()
    fo = np.zeros((100, 100), np.uint8, order="F")
    eng.read(src, fo)
    assert fo.reshape(-1, order="F").tobytes() == want.tobytes()


def test_closed_mmap_and_released_view_are_refused(eng, src):
    import mmap

    m = mmap.mmap(-1, N)
    m.close()
    with pytest.raises(ValueError):
        eng.read(src, m)
    mv = memoryview(bytearray(N))
    mv.release()
    with pytest.raises(ValueError):
        eng.read(src, mv)


@pytest.mark.parametrize(
    "row, words",
    [
        ([0, -1, 8, 0], "negative offset"),
        ([0, 0, -8, 0], "negative length"),
        ([0, 2**63 - 5, 8, 0], "64 bits"),
        ([0, 0, 8, 2**63 - 5], "64 bits"),
        ([1, 0, 8, 0], "source index 1"),
        ([0, 0, 8, 95], "100 bytes, 103 are needed"),
    ],
)
def test_bad_rows_are_named(eng, src, row, words):
    out = bytearray(100)
    with pytest.raises(ValueError, match=words):
        eng.read_into([src], np.array([row], np.int64), out)
    assert out == bytearray(100)


@pytest.mark.parametrize(
    "table, exc",
    [
        (np.array([[0, 0, 8.0, 0]]), TypeError),
        (np.array([[0, 0, 1, 0]], bool), TypeError),
        (np.array([[0, 0, 2**64 - 1, 0]], np.uint64), TypeError),
        (np.array([[0, 0, 8]], np.int64), ValueError),
        (np.array([0, 0, 8, 0], np.int64), ValueError),
        (np.array([[[0, 0, 8, 0]]], np.int64), ValueError),
    ],
)
def test_bad_tables_are_named(eng, src, table, exc):
    with pytest.raises(exc, match="table"):
        eng.read_into([src], table, bytearray(100))


def test_empty_and_other_int_tables_read(eng, src):
    out = bytearray(16)
    eng.read_into([src], np.zeros((0, 4), np.int64), out)
    eng.read_into([src], np.asfortranarray(np.array([[0, 0, 8, 0], [0, 8, 8, 8]])), out)
    eng.read_into([src], np.array([[0, 0, 8, 0]], np.int32), out)
    assert bytes(out) == open(src, "rb").read(16)


@pytest.mark.parametrize(
    "uri, exc",
    [
        (None, TypeError),
        (b"/x", TypeError),
        (5, TypeError),
        ("", ValueError),
        ("/tmp/a\0b", ValueError),
        ("file://", ValueError),
        ("/dev/zero", ValueError),
        ("nosuch://x", ValueError),
    ],
)
def test_bad_uris_are_named(eng, uri, exc):
    calls = [
        lambda: eng.read(uri),
        lambda: eng.size(uri),
        lambda: fastload.read(uri),
        lambda: eng.read_ranges(uri, [(0, 1)]),
        lambda: eng.read_into([uri], np.array([[0, 0, 1, 0]]), bytearray(1)),
        lambda: eng.read_many([uri]),
    ]
    for call in calls:
        with pytest.raises(exc) as info:
            call()
        if isinstance(uri, str) and uri:
            assert uri.split("\0")[0] in str(info.value)


def test_directory_and_fifo_do_not_hang(eng, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    for uri in (str(tmp_path), fifo):
        for call in (eng.read, eng.size, lambda u: eng.read_many([u])):
            with pytest.raises(ValueError, match=uri):  # NotRegularFileError
                call(uri)


def test_read_many_refuses_an_object_array_out(tmp_path):
    # it wrote the file's bytes over the array's PyObject pointers: a crash later
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(N))
    r = _run(f"""
        import numpy as np, fastload
        out = np.zeros({N}, object)
        try:
            fastload.read_many([{str(p)!r}], out=out)
        except TypeError as e:
            print("REFUSED", e)
        print(out.sum())
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "REFUSED" in r.stdout and "Python objects" in r.stdout


@pytest.mark.parametrize(
    "sizes, exc, words",
    [
        ([5.5], TypeError, "floats"),
        ([-1], ValueError, ">= 0"),
        ([2**63 - 1], ValueError, "sizes"),
        ([1, 2], ValueError, "2 entries"),
    ],
)
def test_read_many_bad_sizes(eng, src, sizes, exc, words):
    with pytest.raises(exc, match=words):
        eng.read_many([src], sizes=sizes)


def test_read_many_bad_out(eng, src):
    with pytest.raises(ValueError, match="read-only"):
        eng.read_many([src], out=bytes(2 * N))
    with pytest.raises(ValueError, match="read-only"):
        eng.read_many([src], out=_ro_array())
    with pytest.raises(ValueError, match="holds 10 bytes"):
        eng.read_many([src], out=bytearray(10))


def test_read_many_nul_path_names_the_uri(eng):
    with pytest.raises(ValueError, match="NUL"):
        eng.read_many(["/tmp/a\0b"])


def test_bytearray_cannot_be_resized_during_a_read(tmp_path):
    # the destination stays exported for the whole read: a resize from another thread is
    # a BufferError there, never a write into freed memory
    p = tmp_path / "big.bin"
    p.write_bytes(b"\1" * (32 << 20))
    out = bytearray(32 << 20)
    stop = threading.Event()
    refused = []

    def resize():
        while not stop.is_set():
            try:
                out.extend(b"x" * 4096)
                del out[-4096:]
            except BufferError:
                refused.append(1)

    t = threading.Thread(target=resize)
    t.start()
    try:
        with RangeEngine(part_size=1 << 20, max_inflight_parts=4) as e:
            for _ in range(3):
                e.read_into([str(p)], np.array([[0, 0, 32 << 20, 0]]), out)
    finally:
        stop.set()
        t.join()
    assert out[: 32 << 20] == b"\1" * (32 << 20)


def test_file_shrinking_between_size_and_read(eng, tmp_path):
    p = tmp_path / "s.bin"
    p.write_bytes(b"a" * N)
    assert eng.size(str(p)) == N
    with open(p, "r+b") as f:
        f.truncate(N // 2)
    # a read of the old size: an error naming the file, or the new contents whole
    try:
        got = eng.read_ranges(str(p), [(0, N)])
    except (ValueError, OSError) as exc:
        assert str(p) in str(exc)
    else:
        pytest.fail(f"read {len(got)} bytes of a file of {N // 2}")
    assert bytes(eng.read(str(p))) == b"a" * (N // 2)
