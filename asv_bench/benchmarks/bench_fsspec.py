"""pyarrow reading a Parquet file's columns from S3 through three filesystems.

A ~1 GB Parquet file (FASTLOAD_BENCH_PQ_MB, default 1024; 8 float64 columns, 8 row
groups, uncompressed so the figure is I/O, not decoding) on ``rclone serve s3``
(127.0.0.1). ``pyarrow.parquet.read_table(path, columns=4 of them, filesystem=fs)`` with
fs = fastload's fsspec filesystem, s3fs (the fsspec S3 filesystem) and pyarrow's own
``S3FileSystem`` (C++, its IO thread pool). Runs are interleaved; min and median of 5.
The server shares the machine's 2 cores with the clients.

Quick run without asv: ``python asv_bench/benchmarks/bench_fsspec.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

try:
    from .common import MB, S3_KEY, S3_SECRET, data_dir, rclone_server
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import MB, S3_KEY, S3_SECRET, data_dir, rclone_server

PQ_MB = int(os.environ.get("FASTLOAD_BENCH_PQ_MB", "1024"))
COLUMNS = [f"c{i}" for i in range(8)]
READ = ["c1", "c2", "c5", "c6"]
REPEAT = int(os.environ.get("FASTLOAD_BENCH_PQ_REPEAT", "5"))
REGION = "us-east-1"


def _parquet() -> str:
    """The server root; bucket ``pq`` holds ``t.parquet`` (written once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = os.path.join(data_dir(), "fsspec")
    path = os.path.join(root, "pq", f"t-{PQ_MB}.parquet")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rows = (PQ_MB << 20) // (8 * len(COLUMNS))
        group = -(-rows // 8)
        rng = np.random.default_rng(0)
        with pq.ParquetWriter(path + ".tmp", _schema(pa), compression="none") as w:
            for start in range(0, rows, group):
                n = min(group, rows - start)
                w.write_table(pa.table({c: rng.random(n) for c in COLUMNS}), row_group_size=n)
        os.replace(path + ".tmp", path)
    return root


def _schema(pa):
    return pa.schema([(c, pa.float64()) for c in COLUMNS])


def _timed(fns: dict[str, Callable[[], object]], repeat: int = REPEAT) -> dict[str, dict]:
    for fn in fns.values():
        fn()
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            out = fn()
            runs[name].append(time.perf_counter() - t)
            del out
    return {k: {"min": min(v), "median": statistics.median(v)} for k, v in runs.items()}


def run_all() -> dict[str, dict]:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    import s3fs

    import fastload

    root = _parquet()
    key = f"pq/t-{PQ_MB}.parquet"
    with rclone_server(root) as endpoint:
        ours = fastload.filesystem(
            endpoint_url=endpoint,
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
            region=REGION,
            skip_instance_cache=True,
        )
        theirs = s3fs.S3FileSystem(
            key=S3_KEY,
            secret=S3_SECRET,
            client_kwargs={"endpoint_url": endpoint, "region_name": REGION},
            skip_instance_cache=True,
        )
        native = pafs.S3FileSystem(
            access_key=S3_KEY,
            secret_key=S3_SECRET,
            endpoint_override=endpoint,
            scheme="http",
            region=REGION,
        )
        want = pq.read_table(key, columns=READ, filesystem=native)
        nbytes = want.nbytes

        def read(fs: object, path: str) -> Callable[[], object]:
            return lambda: pq.read_table(path, columns=READ, filesystem=fs)

        got = read(ours, f"s3://{key}")()
        assert got.equals(want)
        res = _timed(
            {
                "fastload": read(ours, f"s3://{key}"),
                "s3fs": read(theirs, key),
                "pyarrow_s3": read(native, key),
            }
        )
        for r in res.values():
            r["bytes"] = nbytes
        return res


class FsspecParquetS3:
    """Columns of a ~1 GB Parquet file over S3 (goals: >= 1.5x s3fs, >= 1x pyarrow S3)."""

    timeout = 1800
    repeat = 1
    number = 1

    def setup_cache(self):
        return run_all()

    def track_ratio_vs_s3fs(self, r):
        return r["s3fs"]["min"] / r["fastload"]["min"]

    track_ratio_vs_s3fs.unit = "ratio"

    def track_ratio_vs_pyarrow_s3(self, r):
        return r["pyarrow_s3"]["min"] / r["fastload"]["min"]

    track_ratio_vs_pyarrow_s3.unit = "ratio"

    def track_fastload_mb_per_s(self, r):
        return r["fastload"]["bytes"] / r["fastload"]["min"] / MB

    track_fastload_mb_per_s.unit = "MB/s"


if __name__ == "__main__":
    res = run_all()
    ref = res["fastload"]
    for name, r in res.items():
        print(
            f"{name:11s} min {r['min']:6.3f} s  median {r['median']:6.3f} s  "
            f"{r['bytes'] / r['min'] / MB:7.0f} MB/s  fastload is {r['min'] / ref['min']:.2f}x "
            f"(median {r['median'] / ref['median']:.2f}x)"
        )
