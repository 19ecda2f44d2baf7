"""pyarrow reading a Parquet file's columns from S3 through three filesystems, and
fastload's own ParquetDataset reading the same columns.

A ~1 GB Parquet file (FASTLOAD_BENCH_PQ_MB, default 1024; 8 float64 columns, 8 row
groups, uncompressed so the figure is I/O, not decoding) on ``rclone serve s3``
(127.0.0.1). ``pyarrow.parquet.read_table(path, columns=4 of them, filesystem=fs,
pre_buffer=True)`` with fs = fastload's fsspec filesystem, s3fs (the fsspec S3 filesystem)
and pyarrow's own ``S3FileSystem`` (C++, its default IO thread pool; pre_buffer is its best
setting here and read_table's default). ``dataset``: ``ParquetDataset(uri, columns=the
same 4).read_table()`` on the filesystem's engine (footer, then every column chunk of every
row group in one engine call). ``fresh_buffers``: fastload's filesystem with
``fetch_buffers=0`` (a fresh buffer per read, as before read buffers were reused). Each client keeps its connections across runs. Runs are
interleaved; min and median of FASTLOAD_BENCH_PQ_REPEAT (7). The server shares the
machine's 2 cores with the clients.

Quick run without asv: ``python asv_bench/benchmarks/bench_fsspec.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import numpy as np

try:
    from .common import MB, S3_REGION, data_dir, min_and_median, rclone_s3
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import MB, S3_REGION, data_dir, min_and_median, rclone_s3

PQ_MB = int(os.environ.get("FASTLOAD_BENCH_PQ_MB", "1024"))
COLUMNS = [f"c{i}" for i in range(8)]
READ = ["c1", "c2", "c5", "c6"]
REPEAT = int(os.environ.get("FASTLOAD_BENCH_PQ_REPEAT", "7"))


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


def run_all() -> dict[str, dict]:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    import s3fs

    import fastload
    from fastload.plan.parquet_dataset import ParquetDataset

    root = _parquet()
    key = f"pq/t-{PQ_MB}.parquet"
    with rclone_s3(root) as opts:
        endpoint = opts["endpoint_url"]
        ours = fastload.filesystem(**opts, skip_instance_cache=True)
        # the same without reused read buffers: every read maps fresh memory
        fresh = fastload.filesystem(**opts, skip_instance_cache=True, fetch_buffers=0)
        theirs = s3fs.S3FileSystem(
            key=opts["access_key_id"],
            secret=opts["secret_access_key"],
            client_kwargs={"endpoint_url": endpoint, "region_name": S3_REGION},
            skip_instance_cache=True,
        )
        native = pafs.S3FileSystem(
            access_key=opts["access_key_id"],
            secret_key=opts["secret_access_key"],
            endpoint_override=endpoint,
            scheme="http",
            region=S3_REGION,
        )
        want = pq.read_table(key, columns=READ, filesystem=native)
        nbytes = want.nbytes

        def read(fs: object, path: str) -> Callable[[], object]:
            return lambda: pq.read_table(path, columns=READ, filesystem=fs, pre_buffer=True)

        def dataset() -> object:
            return ParquetDataset(f"s3://{key}", columns=READ, engine=ours.engine).read_table()

        assert read(ours, f"s3://{key}")().equals(want)
        assert dataset().equals(want)
        res = min_and_median(
            {
                "fastload": read(ours, f"s3://{key}"),
                "fresh_buffers": read(fresh, f"s3://{key}"),
                "s3fs": read(theirs, key),
                "pyarrow_s3": read(native, key),
                "dataset": dataset,
            },
            REPEAT,
        )
        for r in res.values():
            r["bytes"] = nbytes
        res["load_average"] = {"1min": os.getloadavg()[0]}
        return res


class FsspecParquetS3:
    """Columns of a ~1 GB Parquet file over S3 (goals: >= 1.5x s3fs, >= 1x pyarrow S3;
    the dataset is fastload's own reader of the same columns)."""

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

    def track_ratio_vs_pyarrow_s3_median(self, r):
        return r["pyarrow_s3"]["median"] / r["fastload"]["median"]

    track_ratio_vs_pyarrow_s3_median.unit = "ratio"

    def track_dataset_ratio_vs_pyarrow_s3(self, r):
        return r["pyarrow_s3"]["min"] / r["dataset"]["min"]

    track_dataset_ratio_vs_pyarrow_s3.unit = "ratio"

    def track_ratio_vs_fresh_buffers(self, r):
        return r["fresh_buffers"]["min"] / r["fastload"]["min"]

    track_ratio_vs_fresh_buffers.unit = "ratio"

    def track_ratio_vs_fresh_buffers_median(self, r):
        return r["fresh_buffers"]["median"] / r["fastload"]["median"]

    track_ratio_vs_fresh_buffers_median.unit = "ratio"

    def track_fastload_mb_per_s(self, r):
        return r["fastload"]["bytes"] / r["fastload"]["min"] / MB

    track_fastload_mb_per_s.unit = "MB/s"


if __name__ == "__main__":
    res = run_all()
    load = res.pop("load_average")["1min"]
    ref = res["fastload"]
    for name, r in res.items():
        print(
            f"{name:11s} min {r['min']:6.3f} s  median {r['median']:6.3f} s  "
            f"{r['bytes'] / r['min'] / MB:7.0f} MB/s  fastload fsspec is {r['min'] / ref['min']:.2f}x "
            f"(median {r['median'] / ref['median']:.2f}x)"
        )
    print(f"load average (1 min) at the end: {load:.2f}")
