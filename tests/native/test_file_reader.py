"""The file reader bridge (fastload._native.file_reader) checks what it is given itself,
without relying on the Python checks above it (regressions found by tests/fuzz/fuzz_native.py)."""

from __future__ import annotations

import os
import socket
import threading

import numpy as np
import pytest

from fastload._native import file_reader
from fastload.errors import InvalidRequestError, NotRegularFileError, RangeError
from fastload.storage.engine import RangeEngine

I64_MAX = np.iinfo(np.int64).max


@pytest.mark.parametrize("direct", [False, True])
def test_native_layer_checks_wrapping_ranges_itself(blob, direct):
    """The C reader must not rely on the Python checks: call the bridge directly."""
    path, _ = blob
    out = bytearray(100)
    call = lambda row: file_reader.read_file_ranges(  # noqa: E731
        [path], [path], np.array([row], dtype=np.int64), out, 4096, 2, direct, 0
    )
    with pytest.raises(InvalidRequestError, match="does not fit the buffer"):
        call((0, 1, 10, I64_MAX - 3))
    with pytest.raises(RangeError, match="object size is"):
        call((0, I64_MAX - 5, 10, 0))


def test_source_index_is_not_truncated_to_int32(blob):
    """A source index of 2**32 was cast to int32 0 and read the first file."""
    path, _ = blob
    with pytest.raises(ValueError, match="source index 4294967296 is not one of the 1 sources"):
        file_reader.read_file_ranges(
            [path], [path], np.array([[1 << 32, 0, 10, 0]]), bytearray(10), 4096, 1, False, 0
        )


@pytest.mark.parametrize(
    "part,inflight,paths,match",
    [
        (100, 1, 1, "part_size=100 must be >= 4096"),
        (4096, 0, 1, "max_inflight_parts=0 must be >= 1"),
        (4096, 1, 0, "no source files"),
    ],
)
def test_native_option_errors_name_the_knob(blob, part, inflight, paths, match):
    """One message used to cover all three ('part_size must be >= 4096 and ...'),
    even when the only fault was an empty source list."""
    path, _ = blob
    with pytest.raises(InvalidRequestError, match=match):
        file_reader.read_file_ranges(
            [path] * paths,
            [path] * paths,
            np.zeros((0, 4), np.int64),
            bytearray(1),
            part,
            inflight,
            False,
            0,
        )


# -- only regular files: refused before any open that could block ---------------------


def _in_thread(call):
    """Run ``call`` on a daemon thread: (finished, exception). A hang cannot hang the suite."""
    result = {}

    def run():
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            result["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    return not t.is_alive(), result.get("exc")


def _unix_socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    return s


@pytest.mark.parametrize("kind", ["fifo", "socket", "dev_zero", "proc", "directory"])
def test_non_regular_files_are_refused_with_a_named_error(tmp_path, kind):
    """A FIFO blocked in open() forever (RangeEngine(timeout=2) did not help); /dev/zero
    and /proc files read as size 0."""
    keep = None
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    elif kind == "socket":
        path = str(tmp_path / "sock")
        keep = _unix_socket(path)
    elif kind == "dev_zero":
        path = "/dev/zero"
    elif kind == "proc":
        path = "/proc/self/status"
    else:
        path = str(tmp_path)
    try:
        eng = RangeEngine(timeout=2)
        calls = [
            lambda: eng.size(path),
            lambda: eng.read_ranges(path, [(0, 10)]),
            lambda: file_reader.read_file_ranges(
                [path], [path], np.array([[0, 0, 10, 0]]), bytearray(10), 4096, 1, False, 0
            ),
            lambda: eng.read(path),
        ]
        for call in calls:
            finished, exc = _in_thread(call)
            assert finished, f"{kind}: the call blocked"
            assert isinstance(exc, NotRegularFileError), exc
            assert isinstance(exc, ValueError) and path in str(exc)
    finally:
        if keep is not None:
            keep.close()
