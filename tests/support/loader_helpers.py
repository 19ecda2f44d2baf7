"""Transforms and data makers shared by the loader tests (importable by worker processes)."""

from __future__ import annotations

import os

import numpy as np

# Set by a test in the parent process: a forked worker sees the new value, a spawned one not.
MARK = 0


def invert(sample: np.ndarray) -> np.ndarray:
    return 255 - sample


def crop_half(sample: np.ndarray) -> np.ndarray:
    return sample[: sample.shape[0] // 2].copy()


def worker_facts(sample: np.ndarray) -> np.ndarray:
    """Who ran the transform: [pid, MARK, a draw from the worker's numpy stream]."""
    return np.array([os.getpid(), MARK, np.random.randint(0, 2**31 - 1)], dtype=np.int64)


def die_on_marker(sample: np.ndarray) -> np.ndarray:
    if int(sample.reshape(-1)[0]) == 7:
        os._exit(3)
    return sample


def fail_on_marker(sample: np.ndarray) -> np.ndarray:
    if int(sample.reshape(-1)[0]) == 7:
        raise ValueError("bad sample 7")
    return sample


def first_bytes(sample: np.ndarray) -> np.ndarray:
    """Ragged in, ragged out: the first half of an object's bytes."""
    return sample[: len(sample) // 2].copy()


def write_records(
    folder: str, n: int, shape: tuple[int, ...], shards: int, *, header: bytes = b"", seed: int = 0
) -> np.ndarray:
    """n records of ``shape`` uint8 over ``shards`` files; record i starts with byte i % 256."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    data.reshape(n, -1)[:, 0] = np.arange(n) % 256
    os.makedirs(folder, exist_ok=True)
    per = -(-n // shards)
    for s in range(shards):
        with open(os.path.join(folder, f"shard-{s:03d}.bin"), "wb") as f:
            f.write(header)
            f.write(data[s * per : (s + 1) * per].tobytes())
    return data


def slow_engine(slow_uris: set[str], delay: float, **kw: object):
    """A RangeEngine whose reads of ``slow_uris`` take ``delay`` seconds more (cancellable)."""
    import threading

    from fastload.storage.engine import RangeEngine

    class SlowEngine(RangeEngine):
        def read_into(self, sources, table, out, *, cancel=None, **kw):  # type: ignore[no-untyped-def]
            if any(getattr(s, "path", s) in slow_uris for s in sources):
                end = threading.Event()
                waited = 0.0
                while waited < delay and not (cancel is not None and cancel.cancelled):
                    end.wait(0.01)
                    waited += 0.01
            return super().read_into(sources, table, out, cancel=cancel, **kw)

    return SlowEngine(**kw)


def sleep_on_marker(sample: np.ndarray) -> np.ndarray:
    if int(sample.reshape(-1)[0]) == 7:
        import time

        time.sleep(30)
    return sample


def resident_fraction(path: str) -> float:
    """Fraction of ``path``'s pages in the page cache (mincore on a mapping of it)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        vec = ctypes.create_string_buffer((size + page - 1) // page)
        try:
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec.raw) / len(vec.raw)


def kill_on_marker(sample: np.ndarray) -> np.ndarray:
    if int(sample.reshape(-1)[0]) == 7:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return sample


# Transforms returning values of every rank (the batch's shape must not depend on num_workers).
def to_python_int(sample: np.ndarray) -> int:
    return int(sample.reshape(-1)[0])


def to_numpy_scalar(sample: np.ndarray) -> np.float32:
    return np.float32(sample.reshape(-1)[0]) / 2


def to_0d_array(sample: np.ndarray) -> np.ndarray:
    return np.array(sample.reshape(-1)[0], dtype=np.uint16)


def to_1d(sample: np.ndarray) -> np.ndarray:
    return sample.reshape(-1)[:5]


def to_transposed(sample: np.ndarray) -> np.ndarray:
    return sample.T  # n-d and not C-contiguous


def to_nested_list(sample: np.ndarray) -> list[list[int]]:
    return sample[:2, :2, 0].tolist()


def to_mixed_ranks(sample: np.ndarray) -> np.ndarray:
    """0-d for even first bytes, 1-d for odd ones: a ragged batch."""
    first = sample.reshape(-1)[0]
    return np.array(first) if first % 2 == 0 else np.array([first, first])


def to_objects(sample: np.ndarray) -> np.ndarray:
    return np.array([None, 1])


def pause_on_marker(sample: np.ndarray) -> np.ndarray:
    """Sample 7 takes 2 s (a slow transform, short enough for its thread to end soon)."""
    if int(sample.reshape(-1)[0]) == 7:
        import time

        time.sleep(2)
    return sample


class LockedTransform:
    """A transform object holding a lock: it cannot be pickled for spawned workers."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()

    def __call__(self, sample: np.ndarray) -> np.ndarray:
        return sample
