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


def write_records(folder: str, n: int, shape: tuple[int, ...], shards: int, *, header: bytes = b"",
                  seed: int = 0) -> np.ndarray:
    """n records of ``shape`` uint8 over ``shards`` files; record i starts with byte i % 256."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    data.reshape(n, -1)[:, 0] = np.arange(n) % 256
    os.makedirs(folder, exist_ok=True)
    per = -(-n // shards)
    for s in range(shards):
        with open(os.path.join(folder, f"shard-{s:03d}.bin"), "wb") as f:
            f.write(header)
            f.write(data[s * per:(s + 1) * per].tobytes())
    return data


def slow_engine(slow_uris: set[str], delay: float, **kw: object):
    """A RangeEngine whose reads of ``slow_uris`` take ``delay`` seconds more (cancellable)."""
    import threading

    from fastload.engine import RangeEngine

    class SlowEngine(RangeEngine):
        def read_into(self, sources, table, out, *, cancel=None):  # type: ignore[no-untyped-def]
            if any(getattr(s, "path", s) in slow_uris for s in sources):
                end = threading.Event()
                waited = 0.0
                while waited < delay and not (cancel is not None and cancel.cancelled):
                    end.wait(0.01)
                    waited += 0.01
            return super().read_into(sources, table, out, cancel=cancel)

    return SlowEngine(**kw)
