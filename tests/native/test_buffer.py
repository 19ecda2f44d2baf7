"""AlignedBuffer (fastload._native.buffer): aligned, zero-copy, pinned on request, sizes checked."""

import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastload
from fastload._native.buffer import AlignedBuffer


@pytest.mark.parametrize("n", [1, 4095, 4096, 100_000, 3 << 20, (8 << 20) + 1])
def test_aligned_and_zero_copy(n):
    buf = AlignedBuffer(n)
    assert buf.nbytes == n == len(buf)
    assert buf.address % 4096 == 0
    assert buf.capacity >= n and buf.capacity % 4096 == 0
    arr = np.asarray(buf)
    assert arr.dtype == np.uint8 and arr.shape == (n,)
    assert arr.ctypes.data == buf.address
    arr[:] = 7
    assert memoryview(buf)[n - 1] == 7


@pytest.mark.parametrize("n", [100, 60_000, 1 << 20, 5 << 20])
def test_memory_is_zero(n):
    for _ in range(3):  # also when the heap hands back memory a freed buffer used
        buf = AlignedBuffer(n)
        assert not np.asarray(buf).any()
        np.asarray(buf)[:] = 0xFF
        del buf


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_only_large_buffers_are_prefaulted():
    """Small buffers are not touched at allocation (their first read faults the pages it
    writes); from 2 MiB, prefault=True faults every page in at once."""
    before = _resident_bytes()
    small = [AlignedBuffer(1 << 20) for _ in range(64)]
    grown = _resident_bytes() - before
    assert grown < 16 << 20, grown  # 64 MiB asked, (almost) nothing resident
    np.asarray(small[0])[:] = 1
    before = _resident_bytes()
    big = AlignedBuffer(64 << 20)
    assert _resident_bytes() - before >= 48 << 20  # faulted in by the allocation
    lazy = AlignedBuffer(64 << 20, prefault=False)
    assert _resident_bytes() - before < 96 << 20
    del small, big, lazy


def test_view_keeps_memory_alive():
    buf = AlignedBuffer(1 << 20)
    arr = np.asarray(buf)
    arr[:] = 3
    assert buf.views == 1
    del buf
    gc.collect()
    # The array still owns a reference to the buffer: its memory is valid.
    assert int(arr.sum()) == 3 << 20


def test_pin_reports_how():
    buf = AlignedBuffer(1 << 20, pin=True)
    assert buf.pinned
    assert buf.pin_mode in ("cuda", "mlock")
    assert buf.pin_error is None
    unpinned = AlignedBuffer(4096)
    assert not unpinned.pinned and unpinned.pin_mode == "none"


def test_pin_refused_is_reported_and_buffer_stays_usable(tmp_path):
    """Without CAP_IPC_LOCK and with a tiny memlock limit, mlock is refused."""
    script = textwrap.dedent(
        """
        import os, resource
        import numpy as np
        from fastload import AlignedBuffer
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))
        if os.geteuid() == 0:
            os.setgid(65534); os.setuid(65534)  # nobody: no CAP_IPC_LOCK
        b = AlignedBuffer(8 << 20, pin=True)
        np.asarray(b)[:] = 1
        print(b.pinned, b.pin_mode, int(np.asarray(b).sum()), '|', b.pin_error)
        """
    )
    root = os.path.dirname(os.path.dirname(fastload.__file__))
    env = dict(os.environ, PYTHONPATH=root)
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 0, res.stderr
    head, why = res.stdout.split("|")
    assert head.split() == ["False", "none", str(8 << 20)]
    assert "mlock" in why and "memlock" in why


def test_bad_sizes():
    with pytest.raises(OverflowError):
        AlignedBuffer(-1)
    with pytest.raises(MemoryError, match="cannot allocate"):
        AlignedBuffer(1 << 62)


# -- regressions found by fuzzing (tests/fuzz/fuzz_native.py) -----------------------


@pytest.mark.parametrize("nbytes", [-1, 2**63, 2**64 - 1])
def test_aligned_buffer_size_out_of_range(nbytes):
    """2**64 - 1 rounded up to a 0-byte block and exported a 2**64 - 1 byte view."""
    with pytest.raises(OverflowError, match=f"nbytes={nbytes} must be between 0 and"):
        AlignedBuffer(nbytes)


def test_aligned_buffer_near_ssize_max_is_a_memory_error():
    with pytest.raises(MemoryError, match="cannot allocate an aligned buffer"):
        AlignedBuffer(2**63 - 1)


# -- the stub -----------------------------------------------------------------------


def test_buffer_stub_matches_the_compiled_module():
    """fastload/_native/buffer.pyi types AlignedBuffer for py.typed users: every name it
    declares must exist at run time."""
    import ast

    from fastload._native import buffer

    with open(os.path.join(os.path.dirname(fastload.__file__), "_native", "buffer.pyi")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(buffer, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name != "__buffer__":
                    assert hasattr(cls, item.name), f"{node.name}.{item.name}"
        elif isinstance(node, ast.FunctionDef):
            assert callable(getattr(buffer, node.name))
        elif isinstance(node, ast.AnnAssign):
            assert hasattr(buffer, node.target.id)
