"""The node-local cache (fastload.storage.cache): entries only ever complete, versions,
LRU eviction under the limit, locks shared by threads and processes, a process killed
while writing, and a folder that is read-only, full or without file locks."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastload.errors import CacheFullError, CacheLockError, CacheReadOnlyError
from fastload.storage.cache import HEADER, NodeCache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def meta(i: int, length: int, tag: str = "v1") -> dict:
    return {"uri": f"s3://b/shard{i}", "start": 0, "length": length, "size": 1 << 30, "tag": tag}


def put(cache: NodeCache, i: int, data: np.ndarray, tag: str = "v1") -> str:
    m = meta(i, len(data), tag)
    key = cache.key(m["uri"], 0, len(data))
    fd = cache.try_lock(key)
    assert fd is not None
    try:
        cache.store(key, m, data)
    finally:
        cache.unlock(fd)
    return key


def get(cache: NodeCache, i: int, length: int, tag: str = "v1") -> bytes | None:
    m = meta(i, length, tag)
    fd = cache.lookup(cache.key(m["uri"], 0, length), m)
    if fd is None:
        return None
    try:
        out = bytearray(length)
        cache.read(fd, 0, memoryview(out))
        return bytes(out)
    finally:
        os.close(fd)


def blob(i: int, n: int = 10_000) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, n, dtype=np.uint8)


def test_entries_round_trip_and_record_the_version(tmp_path):
    c = NodeCache(tmp_path / "c")
    put(c, 1, blob(1))
    assert get(c, 1, 10_000) == blob(1).tobytes()
    assert get(c, 1, 10_000, tag="v2") is None  # the object changed: not trusted
    put(c, 1, blob(2), tag="v2")  # replaces the stale entry
    assert get(c, 1, 10_000, tag="v2") == blob(2).tobytes() and c.counters["invalidated"] == 1
    assert get(c, 1, 10_000, tag="v1") is None
    # another process (a new NodeCache on the folder) finds it
    assert get(NodeCache(tmp_path / "c"), 1, 10_000, tag="v2") == blob(2).tobytes()


def test_incomplete_entries_are_never_trusted(tmp_path):
    c = NodeCache(tmp_path / "c")
    key = put(c, 3, blob(3))
    path = c.entry_path(key)
    with open(path, "r+b") as f:
        f.truncate(HEADER + 5000)  # what a torn write would leave
    assert get(c, 3, 10_000) is None
    with open(path, "r+b") as f:
        f.write(b"JUNKJUNK")
    assert get(c, 3, 10_000) is None
    # leftovers of a dead writer in tmp/ go at the next start; a live writer's stay
    dead = tmp_path / "c" / "tmp" / f"{key}.999999999.1"
    dead.write_bytes(b"half")
    live = tmp_path / "c" / "tmp" / f"{key}.{os.getpid()}.1"
    live.write_bytes(b"half")
    NodeCache(tmp_path / "c")
    assert not dead.exists() and live.exists()


def test_lru_eviction_under_the_limit(tmp_path):
    size = HEADER + 10_000
    c = NodeCache(tmp_path / "c", limit=5 * size)
    for i in range(5):
        put(c, i, blob(i))
        time.sleep(0.01)  # distinct modification times
    assert get(c, 0, 10_000) is not None  # 0 becomes the most recently used
    time.sleep(0.01)
    put(c, 5, blob(5))  # over the limit: the least recently used go (1, then maybe 2)
    kept = [i for i in range(6) if get(c, i, 10_000) is not None]
    assert 0 in kept and 5 in kept and 1 not in kept
    assert c.counters["evictions"] >= 1 and c.stats()["stored_bytes"] <= 5 * size
    with pytest.raises(CacheFullError, match="larger than cache_limit"):
        put(c, 9, blob(9, 6 * size))
    skip = NodeCache(tmp_path / "c", limit=5 * size, on_error="skip")
    put(skip, 9, blob(9, 6 * size))
    assert skip.counters["skipped"] == 1 and get(skip, 9, 6 * size) is None


def test_a_locked_entry_is_not_evicted_and_waiters_wait(tmp_path):
    c = NodeCache(tmp_path / "c", limit=3 * (HEADER + 10_000))
    keys = [put(c, i, blob(i)) for i in range(3)]
    held = c.try_lock(keys[0])
    assert held is not None and c.try_lock(keys[0]) is None  # threads exclude each other too
    put(c, 3, blob(3))
    assert get(c, 0, 10_000) is not None  # the oldest, but locked: kept
    got = []
    t = threading.Thread(target=lambda: got.append(c.lock(keys[0], time.monotonic() + 5)))
    t.start()
    time.sleep(0.1)
    assert not got
    c.unlock(held)
    t.join(5)
    assert got
    c.unlock(got[0])
    held = c.try_lock(keys[1])
    with pytest.raises(TimeoutError, match="another process"):
        c.lock(keys[1], time.monotonic() + 0.1)
    c.unlock(held)


WRITER = r"""
import os, sys, numpy as np
sys.path.insert(0, sys.argv[2])
from fastload.storage.cache import NodeCache
c = NodeCache(sys.argv[1])
data = np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8)
i = 0
print("ready", flush=True)
while True:
    m = {"uri": f"s3://b/{i % 50}", "start": 0, "length": len(data), "size": 1, "tag": str(i)}
    key = c.key(m["uri"], 0, len(data))
    fd = c.lock(key, None)
    c.store(key, m, data)
    c.unlock(fd)
    i += 1
"""


def test_a_process_killed_while_writing_leaves_nothing_a_later_run_trusts(tmp_path):
    folder = str(tmp_path / "c")
    data = np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    for delay in (0.15, 0.3, 0.45, 0.6):
        p = subprocess.Popen(
            [sys.executable, "-c", WRITER, folder, ROOT], stdout=subprocess.PIPE, text=True
        )
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)  # mid-write, mid-fsync or mid-rename: no chance to clean
        p.wait()
        c = NodeCache(folder)  # a later run: its start removes the dead writer's temporaries
        assert os.listdir(os.path.join(folder, "tmp")) == []
        for sub in os.listdir(os.path.join(folder, "blocks")):
            for name in os.listdir(os.path.join(folder, "blocks", sub)):
                path = os.path.join(folder, "blocks", sub, name)
                with open(path, "rb") as f:
                    head = f.read(HEADER)
                    m = json.loads(head[12 : 12 + int.from_bytes(head[8:12], "little")])
                    assert f.read() == data  # every entry there is whole and right
                assert c.lookup(name, m) is not None
        # the lock a killed process held is free again
        for name in os.listdir(os.path.join(folder, "locks")):
            if not name.startswith("."):
                fd = c.try_lock(name)
                assert fd is not None
                c.unlock(fd)


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: use a read-only mount
            ro = _mount_tmpfs(tmp_path / "mnt", "ro")
            if ro is None:
                pytest.skip("running as root and cannot mount a read-only file system")
            folder = ro
        with pytest.raises(CacheReadOnlyError, match="cannot be written"):
            NodeCache(folder)
        with pytest.warns(RuntimeWarning, match="reading without the cache"):
            c = NodeCache(folder, on_error="skip")
        assert c.disabled and "cannot be written" in c.stats()["disabled"]
    finally:
        os.chmod(tmp_path / "ro", 0o755)
        _umount(tmp_path / "mnt")


def _mount_tmpfs(where, *opts: str):
    where.mkdir(exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *opts)), "tmpfs", str(where)],
        capture_output=True,
    )
    return where if r.returncode == 0 else None


def _umount(where) -> None:
    if os.path.ismount(where):
        subprocess.run(["umount", str(where)], capture_output=True)


FULL = r"""
import resource, signal, sys, numpy as np
sys.path.insert(0, sys.argv[2])
from fastload.errors import CacheFullError
from fastload.storage.cache import NodeCache
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
data = np.zeros(2 << 20, np.uint8)
m = {"uri": "s3://b/x", "start": 0, "length": len(data), "size": 1, "tag": "t"}
for mode in ("raise", "skip"):
    c = NodeCache(sys.argv[1], on_error=mode)
    key = c.key("s3://b/x", 0, len(data))
    fd = c.try_lock(key)
    try:
        print(mode, c.store(key, m, data), c.counters["skipped"])
    except CacheFullError as exc:
        print(mode, "CacheFullError", exc)
    finally:
        c.unlock(fd)
import os
print("tmp", os.listdir(sys.argv[1] + "/tmp"))
"""


def test_a_full_file_system(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", FULL, str(tmp_path / "c"), ROOT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = r.stdout.splitlines()
    assert lines[0].startswith("raise CacheFullError") and "no room" in lines[0], r.stderr
    assert lines[1] == "skip False 1"
    assert lines[2] == "tmp []"  # the half-written temporary was removed


def test_a_really_full_tmpfs(tmp_path):
    where = _mount_tmpfs(tmp_path / "mnt")
    if where is None:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        c = NodeCache(where, on_error="skip")
        for i in range(3):
            put(c, i, blob(i, 400_000))  # 1 MiB holds two: the third evicts to make room
        assert c.counters["evictions"] >= 1 and get(c, 2, 400_000) == blob(2, 400_000).tobytes()
        put(c, 9, blob(9, 2 << 20))  # can never fit
        assert c.counters["skipped"] == 1
        with pytest.raises(CacheFullError, match="no room"):
            put(NodeCache(where), 9, blob(9, 2 << 20))
    finally:
        _umount(where)


def test_a_file_system_without_locks(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)  # the OS refusal, as NFS without lockd gives it
    with pytest.raises(CacheLockError, match="refuses file locks"):
        NodeCache(tmp_path / "c")
    with pytest.warns(RuntimeWarning, match="reading without the cache"):
        assert NodeCache(tmp_path / "c", on_error="skip").disabled
