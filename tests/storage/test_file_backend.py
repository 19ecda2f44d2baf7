"""Local files (plain paths, file://, direct://) through the range engine: byte-exact reads,
clear errors, page-cache hints, and no leaks."""

import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

import fastload
from fastload._native.buffer import AlignedBuffer
from fastload._native.file_reader import CancelToken
from fastload.errors import ObjectNotFoundError, RangeError
from fastload.storage.engine import RangeEngine
from tests.support.files import SIZE


def uri_for(scheme, path):
    return {"plain": path, "file": f"file://{path}", "direct": f"direct://{path}"}[scheme]


@pytest.mark.parametrize("scheme", ["plain", "file", "direct"])
@pytest.mark.parametrize("part_size,inflight", [(4096, 1), (65536, 3), (1 << 20, 4), (8 << 20, 16)])
def test_whole_object_byte_exact(data_file, scheme, part_size, inflight):
    path, data = data_file
    eng = RangeEngine(part_size=part_size, max_inflight_parts=inflight)
    buf = eng.read(uri_for(scheme, path))
    assert isinstance(buf, AlignedBuffer) and buf.nbytes == SIZE
    assert bytes(memoryview(buf)) == data


@pytest.mark.parametrize("scheme", ["file", "direct"])
@pytest.mark.parametrize("part_size,inflight", [(4096, 2), (10_000, 4), (1 << 20, 1)])
def test_random_ranges_byte_exact(data_file, scheme, part_size, inflight):
    path, data = data_file
    rng = np.random.default_rng(part_size + inflight)
    offsets = rng.integers(0, SIZE - 1, 300)
    lengths = np.minimum(rng.integers(1, 200_000, 300), SIZE - offsets)
    ranges = list(zip(offsets.tolist(), lengths.tolist(), strict=True))
    eng = RangeEngine(part_size=part_size, max_inflight_parts=inflight)
    got = bytes(memoryview(eng.read_ranges(uri_for(scheme, path), ranges)))
    want = []
    with open(path, "rb") as f:  # plain Python reads are the reference
        for o, n in ranges:
            f.seek(o)
            want.append(f.read(n))
    assert got == b"".join(want)


def test_into_caller_buffer_and_many_sources(tmp_path, data_file):
    path, data = data_file
    other = tmp_path / "other.bin"
    other_data = os.urandom(50_000)
    other.write_bytes(other_data)
    table = np.array(
        [[0, 10, 100, 0], [1, 0, 50_000, 100], [0, SIZE - 7, 7, 50_100], [1, 49_999, 1, 60_000]],
        dtype=np.int64,
    )
    out = np.zeros(60_001, dtype=np.uint8)
    RangeEngine(part_size=4096, max_inflight_parts=3).read_into(
        [path, f"direct://{other}"], table, out
    )
    assert out[:100].tobytes() == data[10:110]
    assert out[100:50_100].tobytes() == other_data
    assert out[50_100:50_107].tobytes() == data[-7:]
    assert out[50_107:60_000].sum() == 0  # untouched gap
    assert out[60_000] == other_data[-1]


def test_unaligned_destination_for_direct(data_file):
    path, data = data_file
    out = bytearray(1 + 8192)
    fastload.read_ranges(f"direct://{path}", [(4096, 8192)], out=memoryview(out)[1:])
    assert bytes(out[1:]) == data[4096:12288]


def test_empty_object(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    assert fastload.read(str(p)).nbytes == 0


def test_direct_huge_part_size_sizes_the_bounce_buffer_by_the_parts(blob):
    """part_size=1 PiB used to ask for a 1 PiB O_DIRECT bounce buffer: MemoryError."""
    path, data = blob
    eng = RangeEngine(part_size=1 << 50)
    assert bytes(memoryview(eng.read(f"direct://{path}"))) == data
    got = eng.read_ranges(f"direct://{path}", [(1, 4097), (5000, 77)])
    assert bytes(memoryview(got)) == data[1:4098] + data[5000:5077]


# -- bad input ----------------------------------------------------------------------


def test_missing_file_names_uri(tmp_path):
    uri = f"file://{tmp_path}/nope.bin"
    with pytest.raises(FileNotFoundError, match="nope.bin") as ei:
        fastload.read(uri)
    assert isinstance(ei.value, ObjectNotFoundError)
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        fastload.read_ranges(f"direct://{tmp_path}/nope.bin", [(0, 10)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission bits")
def test_no_permission(tmp_path):
    p = tmp_path / "secret"
    p.write_bytes(b"x" * 100)
    p.chmod(0)
    with pytest.raises(PermissionError, match="secret"):
        fastload.read(str(p))


def test_no_permission_as_unprivileged_user(tmp_path):
    """Run the read as 'nobody' when the tests run as root."""
    if os.geteuid() != 0:
        pytest.skip("covered by test_no_permission")
    import sys
    import textwrap

    p = tmp_path / "secret"
    p.write_bytes(b"x" * 100)
    p.chmod(0o600)
    os.chmod(tmp_path, 0o755)
    script = textwrap.dedent(
        f"""
        import os, fastload
        os.setgid(65534); os.setuid(65534)
        try:
            fastload.read({str(p)!r})
        except PermissionError as e:
            print("PermissionError", e)
        """
    )
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=root),
        timeout=60,
    )
    assert res.stdout.startswith("PermissionError") and "secret" in res.stdout, res.stderr


def test_range_past_end_names_size(data_file):
    path, _ = data_file
    with pytest.raises(ValueError, match=f"object size is {SIZE} bytes") as ei:
        fastload.read_ranges(path, [(SIZE - 10, 11)])
    assert isinstance(ei.value, RangeError)
    assert ei.value.offset == SIZE - 10 and ei.value.length == 11 and ei.value.object_size == SIZE
    assert path in str(ei.value) and f"bytes {SIZE - 10}-{SIZE}" in str(ei.value)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        fastload.read(str(tmp_path))


def test_nul_byte_in_path_is_rejected_not_truncated(blob):
    """C would stop at the NUL and open another file."""
    path, _ = blob
    with pytest.raises(ValueError, match="NUL byte"):
        fastload.RangeEngine().size(path + "\0.bak")
    with pytest.raises(ValueError, match="NUL byte"):
        fastload.read(path + "\0.bak")


def test_truncated_while_open_is_an_error_not_garbage(tmp_path):
    p = tmp_path / "shrinks"
    p.write_bytes(os.urandom(100_000))
    table = np.array([[0, 0, 100_000, 0]], dtype=np.int64)
    out = np.zeros(100_000, np.uint8)
    os.truncate(p, 50_000)  # the engine checks sizes at open: clear RangeError
    with pytest.raises(RangeError, match="object size is 50000"):
        RangeEngine().read_into([str(p)], table, out)


# -- page-cache hints (observable through page-cache residency) ---------------------


def resident_bytes(path):
    out = subprocess.run(
        ["fincore", "-b", "-n", "-o", "RES", path], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


needs_fincore = pytest.mark.skipif(
    shutil.which("fincore") is None, reason="fincore (util-linux) missing"
)


@needs_fincore
def test_dont_need_drops_pages_after_reading(data_file):
    path, data = data_file
    evict(path)
    buf = RangeEngine(page_cache_mode="normal").read(path)
    assert resident_bytes(path) >= SIZE // 2
    evict(path)
    buf = RangeEngine(page_cache_mode="dont_need").read(path)
    assert bytes(memoryview(buf)) == data
    assert resident_bytes(path) < SIZE // 4


@needs_fincore
def test_random_hint_disables_readahead(data_file):
    path, _ = data_file
    evict(path)
    RangeEngine(page_cache_mode="random").read_ranges(path, [(0, 65536)])
    random_res = resident_bytes(path)
    evict(path)
    RangeEngine(page_cache_mode="sequential").read_ranges(path, [(0, 65536)])
    seq_res = resident_bytes(path)
    assert random_res <= 2 * 65536 < seq_res


@needs_fincore
def test_direct_bypasses_page_cache(data_file):
    path, data = data_file
    evict(path)
    buf = fastload.read(f"direct://{path}")
    assert bytes(memoryview(buf)) == data
    assert resident_bytes(path) < SIZE // 4


def test_timeout_bounds_a_local_read(data_file):
    """The deadline is checked before each part: one that has passed fails the read clearly."""
    path, data = data_file
    eng = RangeEngine(part_size=4096, max_inflight_parts=1, timeout=1e-9)
    with pytest.raises(TimeoutError, match="within the timeout") as ei:
        eng.read(f"direct://{path}")
    assert path in str(ei.value)
    # A generous timeout changes nothing.
    assert bytes(memoryview(RangeEngine(timeout=60).read(path))) == data


# -- leaks --------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_no_fd_or_thread_leaks_over_thousands_of_calls(blob, tmp_path):
    """Reads that succeed, and reads that fail after opening files (range past the end,
    O_DIRECT bounce, cancellation, a directory, a missing file), leave nothing open but
    the engine's own reader threads and cached descriptors (bounded), which close()
    ends."""
    path, data = blob
    missing = str(tmp_path / "missing.bin")
    good = np.array([[0, 0, len(data), 0], [1, 5, 9000, len(data)]])
    past_end = np.array([[0, 0, 10, 0], [1, len(data) - 1, 2, 10]])
    out = np.zeros(2 * len(data), np.uint8)
    with RangeEngine() as warm:  # warm up imports and caches
        warm.read_into([path, f"direct://{path}"], good, out)
    fds, threads = _open_fds(), _native_threads()
    eng = RangeEngine(part_size=4096, max_inflight_parts=4)
    cancelled = CancelToken()
    cancelled.cancel()
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
    # file:// and direct:// keep 3 helper threads each (4 in flight) and one descriptor
    # of the file each: nothing grows with the number of calls.
    assert _open_fds() <= fds + 2
    assert _native_threads() <= threads + 2 * 3
    eng.close()
    # <=, not ==: threads and sockets of servers that earlier tests started in this process
    # may close meanwhile; a leak would only add.
    assert _open_fds() <= fds
    assert _native_threads() <= threads
    assert threading.active_count() >= 1  # the engine starts no Python threads either


# -- descriptors kept open, listing ---------------------------------------------------


def test_max_open_files_reaches_the_backend(tmp_path):
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.bin"))
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]) * 100)
    for bound in (0, 2, 256):
        with RangeEngine(max_open_files=bound) as eng:
            for _ in range(2):
                for p in paths:
                    assert bytes(memoryview(eng.read(p))) == bytes([int(p[-5])]) * 100
            st = eng.backend("file").stats()
            assert st["open_files"] == min(bound, 6)
            assert st["opens"] == (12 if bound < 6 else 6)
    with pytest.raises(ValueError, match="max_open_files=-1 is invalid"):
        RangeEngine(max_open_files=-1)


def test_listing_matches_os_walk_and_sizes_come_with_it(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.bin").write_bytes(b"12345")
    (tmp_path / "b" / "x.bin").write_bytes(b"1")
    (tmp_path / "top.bin").write_bytes(b"123")
    (tmp_path / "link").symlink_to(tmp_path / "a")  # a folder link: not followed
    want = []
    for d, dirs, files in os.walk(tmp_path):
        dirs.sort()
        want += [os.path.join(d, f) for f in sorted(files)]
    eng = RangeEngine()
    assert eng.list(str(tmp_path)) == want
    names, sizes = eng.list_sizes(f"file://{tmp_path}")
    assert names == [f"file://{p}" for p in want]
    assert sizes == [os.path.getsize(p) for p in want]
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    assert str(tmp_path / "broken") in eng.list(str(tmp_path))  # as os.walk lists it
    with pytest.raises(FileNotFoundError, match="broken"):
        eng.list_sizes(str(tmp_path))


@needs_fincore
def test_auto_reads_cold_large_parts_direct_and_warm_ones_from_the_cache(tmp_path):
    """page_cache_mode auto: a large read of a file that is not in the page cache and
    larger than cache_fit goes O_DIRECT (several threads' buffered reads defeat
    read-ahead); a cached one is copied from the cache; sequential always reads through
    the cache."""
    path = str(tmp_path / "big.bin")
    data = np.random.default_rng(9).integers(0, 256, (8 << 20) + 4321, dtype=np.uint8)
    data.tofile(path)
    kw = {"part_size": 1 << 20, "max_inflight_parts": 4, "cache_fit": data.nbytes - 1}
    evict(path)
    if resident_bytes(path) > data.nbytes // 10:
        pytest.skip("this file system keeps pages cached despite POSIX_FADV_DONTNEED")
    with RangeEngine(**kw) as eng:
        buf = eng.read(path)
        assert np.array_equal(np.asarray(buf), data)
        assert eng.backend("file").stats()["direct_parts"] >= 8  # every full part
        assert eng.backend("file").stats()["ahead_parts"] == 0
    assert resident_bytes(path) < data.nbytes // 4  # direct reads leave nothing cached
    with RangeEngine(page_cache_mode="sequential", **kw) as eng:
        assert np.array_equal(np.asarray(eng.read(path)), data)
        assert eng.backend("file").stats()["direct_parts"] == 0
    assert resident_bytes(path) > data.nbytes * 0.9
    with RangeEngine(**kw) as eng:  # now warm: from the cache
        assert np.array_equal(np.asarray(eng.read(path)), data)
        assert eng.backend("file").stats()["direct_parts"] == 0
    # many small ranges never go direct, cold or not
    evict(path)
    with RangeEngine(**kw) as eng:
        got = eng.read_ranges(path, [(k * 65536, 100) for k in range(64)])
        assert bytes(memoryview(got)) == b"".join(
            data[k * 65536 : k * 65536 + 100].tobytes() for k in range(64)
        )
        assert eng.backend("file").stats()["direct_parts"] == 0


@needs_fincore
def test_auto_keeps_only_cache_fit_cold_bytes_in_the_cache(tmp_path):
    """Files that fit one by one but not together: the first cache_fit cold bytes the
    reader meets are read into the page cache, the rest O_DIRECT (a dataset larger than
    the budget must not evict itself every epoch)."""
    paths, datas = [], []
    for i in range(2):
        path = str(tmp_path / f"f{i}.bin")
        datas.append(np.random.default_rng(i).integers(0, 256, 8 << 20, dtype=np.uint8))
        datas[-1].tofile(path)
        paths.append(path)
        evict(path)
    if any(resident_bytes(p) > (8 << 20) // 10 for p in paths):
        pytest.skip("this file system keeps pages cached despite POSIX_FADV_DONTNEED")
    with RangeEngine(part_size=1 << 20, max_inflight_parts=4, cache_fit=12 << 20) as eng:
        for path, data in zip(paths, datas, strict=True):
            assert np.array_equal(np.asarray(eng.read(path)), data)
        st = eng.backend("file").stats()
        assert (st["ahead_parts"], st["direct_parts"]) == (12, 4)  # 12 MiB kept, 4 MiB direct
