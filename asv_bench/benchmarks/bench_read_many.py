"""read_many: many whole objects in one engine call, against the per-object ways.

(a) Local: 1,000 page-cached files of 128 KiB (FASTLOAD_BENCH_RM_COUNT). Baselines: a
Python thread pool (4 threads, the best of 2-32 here) whose task opens a file, makes a
``bytearray`` of its size and ``readinto`` it (what returning one buffer per object takes),
and the same pool reading into buffers allocated once beforehand (no allocation at all).
(b) S3 on ``rclone serve s3`` (127.0.0.1): the same count of 128 KiB objects from a URI
list (no listing given). Baselines: today's per-object call, ``RangeEngine.read(uri)`` on a
16-thread pool, and the hand-made batched read of ``bench_s3`` (list the prefix for the
sizes, build the table, one ``read_into``). Each call's results are dropped before the
next, as a loop over batches does. Runs are interleaved; min and median of 7.

Quick run without asv: ``python asv_bench/benchmarks/bench_read_many.py``.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from .common import data_dir, min_and_median, rclone_s3
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import data_dir, min_and_median, rclone_s3

COUNT = int(os.environ.get("FASTLOAD_BENCH_RM_COUNT", "1000"))
SIZE = 128 << 10
REPEAT = 7


def _objects() -> tuple[str, list[str]]:
    """The server root (bucket ``rm``) and the local paths of its COUNT objects."""
    root = os.path.join(data_dir(), "read_many")
    folder = os.path.join(root, "rm", "obj")
    os.makedirs(folder, exist_ok=True)
    block = np.random.default_rng(3).integers(0, 256, SIZE + 251, dtype=np.uint8).tobytes()
    paths = []
    for i in range(COUNT):
        p = os.path.join(folder, f"o-{i:05d}.bin")
        if not os.path.exists(p) or os.path.getsize(p) != SIZE:
            with open(p, "wb") as f:
                f.write(block[i % 251 : i % 251 + SIZE])
        paths.append(p)
    return root, paths


def local_run() -> dict[str, dict]:
    import fastload

    _, paths = _objects()
    eng = fastload.RangeEngine()
    pool = ThreadPoolExecutor(4)
    fixed = [bytearray(SIZE) for _ in paths]

    def readinto_fresh(path: str) -> bytearray:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            f.readinto(buf)
        return buf

    def readinto_fixed(job: tuple[str, bytearray]) -> bytearray:
        with open(job[0], "rb", buffering=0) as f:
            f.readinto(job[1])
        return job[1]

    got = eng.read_many(paths)
    assert bytes(got[7]) == readinto_fresh(paths[7])
    del got
    return min_and_median(
        {
            "read_many": lambda: eng.read_many(paths),
            "pool_readinto": lambda: list(pool.map(readinto_fresh, paths)),
            "pool_readinto_prealloc": lambda: list(
                pool.map(readinto_fixed, zip(paths, fixed, strict=True))
            ),
        },
        REPEAT,
    )


def s3_run() -> dict[str, dict]:
    import fastload

    root, _ = _objects()
    with rclone_s3(root) as opts:
        uris = [f"s3://rm/obj/o-{i:05d}.bin" for i in range(COUNT)]
        threads = ThreadPoolExecutor(16)

        def fresh_read_many() -> object:  # a new engine: no sizes known from before
            with fastload.RangeEngine(**opts) as eng:
                return eng.read_many(uris)

        def per_object() -> object:
            with fastload.RangeEngine(**opts) as eng:
                return list(threads.map(eng.read, uris))

        def hand_batched() -> object:
            with fastload.RangeEngine(**opts) as eng:
                listed = eng.list("s3://rm/obj/")
                backend = eng.backend("s3")
                sizes = np.array([backend.known_size(eng_uri(u)) for u in listed], np.int64)
                table = np.zeros((len(listed), 4), dtype=np.int64)
                table[:, 0] = np.arange(len(listed))
                table[:, 2] = sizes
                table[:, 3] = np.cumsum(sizes) - sizes
                buf = fastload.AlignedBuffer(int(sizes.sum()))
                eng.read_into(listed, table, buf)
                return buf

        from fastload.storage.uri import parse_uri as eng_uri

        return min_and_median(
            {
                "read_many": fresh_read_many,
                "per_object_read": per_object,
                "list_and_read_into": hand_batched,
            },
            repeat=5,
        )


class ReadManyLocal:
    """(a) 1,000 x 128 KiB local files (goal: >= 3x a Python thread pool of readinto)."""

    timeout = 600
    repeat = 1
    number = 1

    def setup_cache(self):
        return local_run()

    def track_ratio_vs_pool_readinto(self, r):
        return r["pool_readinto"]["min"] / r["read_many"]["min"]

    track_ratio_vs_pool_readinto.unit = "ratio"

    def track_ratio_vs_pool_readinto_prealloc(self, r):
        return r["pool_readinto_prealloc"]["min"] / r["read_many"]["min"]

    track_ratio_vs_pool_readinto_prealloc.unit = "ratio"

    def track_read_many_objects_per_s(self, r):
        return COUNT / r["read_many"]["min"]

    track_read_many_objects_per_s.unit = "objects/s"


class ReadManyS3:
    """(b) the same objects over S3 (goal: over today's objects/s)."""

    timeout = 900
    repeat = 1
    number = 1

    def setup_cache(self):
        return s3_run()

    def track_ratio_vs_per_object_read(self, r):
        return r["per_object_read"]["min"] / r["read_many"]["min"]

    track_ratio_vs_per_object_read.unit = "ratio"

    def track_ratio_vs_list_and_read_into(self, r):
        return r["list_and_read_into"]["min"] / r["read_many"]["min"]

    track_ratio_vs_list_and_read_into.unit = "ratio"

    def track_read_many_objects_per_s(self, r):
        return COUNT / r["read_many"]["min"]

    track_read_many_objects_per_s.unit = "objects/s"


def _show(title: str, res: dict[str, dict]) -> None:
    ref = res["read_many"]
    for name, r in res.items():
        print(
            f"{title:5s} {name:24s} min {r['min'] * 1e3:8.1f} ms  median {r['median'] * 1e3:8.1f} ms"
            f"  {COUNT / r['min']:9.0f} objects/s  read_many is {r['min'] / ref['min']:.2f}x"
            f" (median {r['median'] / ref['median']:.2f}x)"
        )


if __name__ == "__main__":
    _show("local", local_run())
    _show("s3", s3_run())
