#!/usr/bin/env python3
"""The sweep behind the http(s)/s3 defaults of part_size and max_inflight_parts.

RangeEngine.read_into over ``rclone serve s3`` on 127.0.0.1: objects of 128 KiB to 1 GiB
(about the same bytes each), every (part_size, max_inflight_parts) of a grid, at the
latencies of FASTLOAD_BENCH_S3_DELAYS (milliseconds added to every request by the
delay proxy of scripts/sweep_loader_s3.py; 0 is bare loopback):

    python scripts/sweep_engine_s3.py                     # writes the table below
    FASTLOAD_BENCH_S3_DELAYS=0,10,50 python scripts/sweep_engine_s3.py

Prints one line per setting (MB/s best and median of the rounds, the settings of one
object size taking turns) and, per (object size, latency), the best setting and what
the defaults in fastload/storage/read_settings.py reach there.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "asv_bench"), os.path.join(REPO, "scripts")]

import numpy as np  # noqa: E402
from benchmarks.common import S3_KEY, S3_SECRET, data_dir, rclone_server  # noqa: E402
from sweep_loader_s3 import delayed  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
# object size -> how many (128-256 MiB a measurement, 1 GiB for the largest)
SIZES = {128 * KIB: 1024, 1 * MIB: 128, 16 * MIB: 8, 256 * MIB: 1, 1024 * MIB: 1}
PARTS = (8 * MIB, 32 * MIB)
DEPTHS = (8, 16, 32, 64)


def write_objects() -> str:
    root = os.path.join(data_dir(), "s3-sweep")
    bucket = os.path.join(root, "sweep")
    block = np.random.default_rng(0).integers(0, 256, 64 * MIB, dtype=np.uint8).tobytes()
    for size, count in SIZES.items():
        folder = os.path.join(bucket, f"s{size}")
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            path = os.path.join(folder, f"o{i:05d}")
            if os.path.exists(path) and os.path.getsize(path) == size:
                continue
            with open(path, "wb") as f:
                left = size
                while left:
                    n = min(left, len(block))
                    f.write(block[:n])
                    left -= n
    return root


def measure(endpoint: str, size: int, settings: list[tuple[int, int]], rounds: int, delay: float):
    import fastload

    # behind a delay, fewer small objects: a round at 4 in flight would take minutes
    count = SIZES[size] if not delay or size >= 16 * MIB else SIZES[size] // 4
    uris = [f"s3://sweep/s{size}/o{i:05d}" for i in range(count)]
    table = np.zeros((count, 4), dtype=np.int64)
    table[:, 0] = np.arange(count)
    table[:, 2] = size
    table[:, 3] = np.arange(count) * size
    buf = fastload.AlignedBuffer(count * size)
    opts = {
        "endpoint_url": endpoint,
        "access_key_id": S3_KEY,
        "secret_access_key": S3_SECRET,
        "region": "us-east-1",
    }
    engines = {
        (p, d): fastload.RangeEngine(part_size=p, max_inflight_parts=d, **opts) for p, d in settings
    }
    times: dict[tuple[int, int], list[float]] = {k: [] for k in engines}
    try:
        for eng in engines.values():  # warm-up: connections, the server's caches
            eng.read_into(uris, table, buf)
        for _ in range(rounds):
            for k, eng in engines.items():
                t = time.perf_counter()
                eng.read_into(uris, table, buf)
                times[k].append(time.perf_counter() - t)
    finally:
        for eng in engines.values():
            eng.close()
    nbytes = count * size
    return {
        k: (nbytes / min(v) / 1e6, nbytes / statistics.median(v) / 1e6) for k, v in times.items()
    }


def main() -> None:
    from fastload.storage.read_settings import NETWORK_MAX_INFLIGHT_PARTS, NETWORK_PART_SIZE

    delays = [float(x) for x in os.environ.get("FASTLOAD_BENCH_S3_DELAYS", "0,10,50").split(",")]
    rounds = int(os.environ.get("FASTLOAD_BENCH_S3_ROUNDS", "2"))
    default = (NETWORK_PART_SIZE, NETWORK_MAX_INFLIGHT_PARTS)
    summary = []
    with rclone_server(write_objects()) as direct:
        for delay in delays:
            with delayed(direct, delay) as endpoint:
                for size in SIZES:
                    # part size acts only on objects larger than a part
                    parts = [p for p in PARTS if p < size] or [PARTS[0]]
                    grid = [(p, d) for p in parts for d in DEPTHS]
                    if default not in grid:
                        grid.append(default)
                    res = measure(endpoint, size, grid, rounds, delay)
                    for (p, d), (best, med) in res.items():
                        print(
                            f"delay={delay:4.0f}ms size={size >> 10:8d}KiB part={p >> 20:3d}MiB "
                            f"inflight={d:3d} {best:8.0f} MB/s best {med:8.0f} median",
                            flush=True,
                        )
                    top = max(res, key=lambda k: res[k][1])
                    summary.append((delay, size, top, res[top][1], res[default][1]))
    print(
        "\n| latency | object | best part x in flight | best MB/s | defaults MB/s | defaults/best |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for delay, size, (p, d), best, dflt in summary:
        obj = f"{size >> 20} MiB" if size >= MIB else f"{size >> 10} KiB"
        print(
            f"| {delay:.0f} ms | {obj} | {p >> 20} MiB x {d} | {best:,.0f} | {dflt:,.0f} | "
            f"{dflt / best:.2f} |"
        )


if __name__ == "__main__":
    main()
