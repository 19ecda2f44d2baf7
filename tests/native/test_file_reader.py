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


# -- FileReader: threads and descriptors kept between reads ------------------------------


def _read(reader, paths, table, out, part=4096, inflight=4, mode=0):
    return file_reader.read_file_ranges(
        paths,
        paths,
        np.asarray(table, dtype=np.int64),
        out,
        part,
        inflight,
        False,
        mode,
        None,
        0.0,
        reader,
    )


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_cached_descriptor_is_reused_while_the_file_is_unchanged(tmp_path):
    path = str(tmp_path / "a.bin")
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    _write(path, data)
    reader = file_reader.FileReader()
    out = bytearray(100)
    for i in range(10):
        _read(reader, [path], [[0, i * 100, 100, 0]], out)
        assert bytes(out) == data[i * 100 : i * 100 + 100]
    st = reader.stats()
    assert st["opens"] == 1 and st["hits"] == 9 and st["reopens"] == 0 and st["open_files"] == 1


@pytest.mark.parametrize("change", ["replace", "rewrite", "truncate", "delete"])
def test_a_changed_file_is_opened_again(tmp_path, change):
    """A cached descriptor is used only while stat(path) shows the file it was opened on:
    a file replaced (new inode), rewritten, truncated or deleted is never read stale."""
    path = str(tmp_path / "a.bin")
    old, new = b"a" * 8192, b"b" * 8192
    _write(path, old)
    reader = file_reader.FileReader()
    out = bytearray(8192)
    _read(reader, [path], [[0, 0, 8192, 0]], out)
    assert bytes(out) == old
    if change == "replace":
        _write(path + ".tmp", new)
        os.replace(path + ".tmp", path)
    elif change == "rewrite":
        os.utime(path, ns=(0, 0))  # the mtime differs even on coarse-grained file systems
        _write(path, new)
    elif change == "truncate":
        os.truncate(path, 4096)
        with pytest.raises(RangeError, match="object size is 4096"):
            _read(reader, [path], [[0, 0, 8192, 0]], out)
        return
    else:
        os.unlink(path)
        with pytest.raises(FileNotFoundError, match="a.bin"):
            _read(reader, [path], [[0, 0, 8192, 0]], out)
        assert reader.stats()["open_files"] == 0  # no descriptor keeps the deleted file
        return
    _read(reader, [path], [[0, 0, 8192, 0]], out)
    assert bytes(out) == new
    st = reader.stats()
    assert st["reopens"] == 1 and st["opens"] == 2 and st["open_files"] == 1


def test_open_descriptors_are_bounded_by_max_open_files(tmp_path):
    paths = []
    for i in range(10):
        paths.append(str(tmp_path / f"{i}.bin"))
        _write(paths[-1], bytes([i]) * 5000)
    for bound in (0, 3):
        reader = file_reader.FileReader(bound)
        for _ in range(2):
            for i, p in enumerate(paths):
                out = bytearray(10)
                _read(reader, [p], [[0, 100, 10, 0]], out)
                assert bytes(out) == bytes([i]) * 10
                assert reader.stats()["open_files"] <= bound
        # least recently used goes first: the last `bound` files are the cached ones
        before = reader.stats()["opens"]
        for p in paths[len(paths) - bound :]:
            _read(reader, [p], [[0, 0, 10, 0]], bytearray(10))
        assert reader.stats()["opens"] == before
    assert file_reader.FileReader(0).stats()["open_files"] == 0
    with pytest.raises(ValueError, match="max_open_files=-1 is invalid"):
        file_reader.FileReader(-1)


def test_threads_persist_are_bounded_and_close_ends_them(tmp_path):
    path = str(tmp_path / "big.bin")
    data = np.random.default_rng(3).integers(0, 256, 8 << 20, dtype=np.uint8)
    data.tofile(path)
    reader = file_reader.FileReader()
    out = np.zeros(8 << 20, np.uint8)
    # 8 MiB in 1 MiB parts, 4 in flight: the caller and 3 pool threads, made once
    for _ in range(5):
        assert _read(reader, [path], [[0, 0, 8 << 20, 0]], out, part=1 << 20) == 8
        assert np.array_equal(out, data)
        assert reader.stats()["threads"] == 3
    # a small read runs on the calling thread alone
    inline = reader.stats()["inline_reads"]
    _read(reader, [path], [[0, 0, 4096, 0], [0, 8192, 4096, 4096]], out, part=4096)
    assert reader.stats()["inline_reads"] == inline + 1
    reader.close()
    st = reader.stats()
    assert st["threads"] == 0 and st["open_files"] == 0
    _read(reader, [path], [[0, 0, 8 << 20, 0]], out, part=1 << 20)  # usable after close
    assert np.array_equal(out, data) and reader.stats()["threads"] == 3


def test_one_reader_shared_by_many_threads_reads_byte_exact(tmp_path):
    paths, datas = [], []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.bin"))
        datas.append(np.random.default_rng(i).integers(0, 256, 300_000, dtype=np.uint8))
        datas[-1].tofile(paths[-1])
    reader = file_reader.FileReader(2)  # fewer slots than files: eviction under use
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(60):
                s = int(rng.integers(0, 6))
                off = int(rng.integers(0, 200_000))
                n = int(rng.integers(1, 100_000))
                out = np.zeros(n, np.uint8)
                _read(reader, [paths[s]], [[0, off, n, 0]], out, part=8192, inflight=3)
                assert np.array_equal(out, datas[s][off : off + n])
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert reader.stats()["open_files"] <= 2
    fds = len(os.listdir("/proc/self/fd"))
    reader.close()
    assert len(os.listdir("/proc/self/fd")) <= fds - reader.stats()["open_files"]


def _read_in_child(reader, path, q):
    out = np.zeros(4 << 20, np.uint8)
    _read(reader, [path], [[0, 0, 4 << 20, 0]], out, part=1 << 20)
    q.put((int(out.sum()), reader.stats()["threads"]))


def test_a_forked_child_reads_with_the_parents_reader(tmp_path):
    """The parent's pool threads do not exist in a child: it makes its own, and never waits
    on a lock a parent thread held at fork time."""
    import multiprocessing

    path = str(tmp_path / "big.bin")
    data = np.random.default_rng(5).integers(0, 256, 4 << 20, dtype=np.uint8)
    data.tofile(path)
    reader = file_reader.FileReader()
    out = np.zeros(4 << 20, np.uint8)
    _read(reader, [path], [[0, 0, 4 << 20, 0]], out, part=1 << 20)
    assert reader.stats()["threads"] == 3
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(reader, path, q))
    p.start()
    total, threads = q.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0
    assert total == int(data.sum()) and threads == 3


def _on_new_thread(fn):
    """fn() on a fresh thread (a thread budget is the calling thread's own)."""
    box = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join(60)
    return box[0]


def test_a_thread_budget_caps_the_threads_a_large_page_cached_read_wakes(tmp_path):
    path = str(tmp_path / "big.bin")
    data = np.random.default_rng(7).integers(0, 256, 8 << 20, dtype=np.uint8)
    data.tofile(path)
    out = np.zeros(8 << 20, np.uint8)
    _read(file_reader.FileReader(), [path], [[0, 0, 8 << 20, 0]], out, part=1 << 20)  # cached

    def read(budget):
        before = file_reader.set_thread_budget(budget)
        assert before == 0 and file_reader.thread_budget() == budget
        reader = file_reader.FileReader()  # a pool makes its threads when a read posts
        out[:] = 0
        _read(reader, [path], [[0, 0, 8 << 20, 0]], out, part=1 << 20)
        assert np.array_equal(out, data)
        st = reader.stats()
        return st["inline_starts"], st["threads"]

    # 8 parts of 1 MiB, 4 in flight: 3 pool threads from the start, or as many as the
    # budget leaves (a budget of 1 starts the parts here alone; a part preempted long
    # enough to look like a disk wait would still call pool threads in)
    assert _on_new_thread(lambda: read(0)) == (0, 3)
    assert _on_new_thread(lambda: read(1))[0] == 1
    starts, threads = _on_new_thread(lambda: read(2))
    assert starts == 0 and threads >= 1  # 1 up front (2 more once a part waits)
    assert file_reader.thread_budget() == 0  # the other threads' budgets were their own
    with pytest.raises(ValueError, match="nthreads=-1 is invalid"):
        file_reader.set_thread_budget(-1)
