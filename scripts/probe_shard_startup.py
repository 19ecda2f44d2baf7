"""How long does an epoch of JPEG tar shards wait for its first batch, over S3 and from
local disk, with and without the block shuffle's first-buffer ramp?

Builds bench_shards' image shards (asv_bench/benchmarks), starts ``rclone serve s3`` on
loopback, and runs four loaders taking turns in a seeded order per round (S3 / local, ramp
on / off: ``sampler.ramp = 0`` gives the windows of one whole buffer each). Prints, per
loader, the time to the first batch and to the end of the epoch (min and median).

    python scripts/probe_shard_startup.py [--rounds 6]

Not an asv benchmark: a diagnosis tool (its findings are in the README, *Shards on object
storage*).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "asv_bench", "benchmarks"))

import bench_shards  # noqa: E402
import numpy as np  # noqa: E402

import fastload  # noqa: E402


def epoch(loader: fastload.DataLoader) -> tuple[float, float]:
    """(seconds to the first batch, seconds to the end) of one epoch from a fresh iterator."""
    t = time.perf_counter()
    first = None
    for _ in loader:
        if first is None:
            first = time.perf_counter() - t
    return float(first or 0.0), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    images = bench_shards.bench_images
    root = bench_shards.write_data()
    folder = bench_shards.write_image_shards(root)
    prefix = os.path.basename(folder)
    with bench_shards.rclone_server(root) as endpoint:
        eng = bench_shards._engine(endpoint)
        s3 = fastload.TarShardDataset(
            f"s3://shards/{prefix}/", field="jpg", label="cls", engine=eng
        )
        local = fastload.TarShardDataset(folder, field="jpg", label="cls")
        kw = {
            "batch_size": 256,
            "shuffle": "block",
            "memory_format": "channels_first",
            "dtype": np.float32,
            "mean": images.MEAN,
            "std": images.STD,
            "transform": images.fastload_pipeline("train"),
        }
        loaders = {}
        for name, ds, ramp in (
            ("s3", s3, True),
            ("s3, no ramp", s3, False),
            ("local", local, True),
            ("local, no ramp", local, False),
        ):
            dl = (
                fastload.DataLoader(ds, engine=eng, **kw)
                if ds is s3
                else fastload.DataLoader(ds, **kw)
            )
            if not ramp:
                dl.sampler.ramp = 0
            loaders[name] = dl
        got: dict[str, list[tuple[float, float]]] = {n: [] for n in loaders}
        order = random.Random(1)
        try:
            for r in range(args.rounds + 1):  # round 0 warms connections and the page cache
                names = list(loaders)
                order.shuffle(names)
                for n in names:
                    t = epoch(loaders[n])
                    if r:
                        got[n].append(t)
        finally:
            for dl in loaders.values():
                dl.close()
            eng.close()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for n, ts in got.items():
        first = [a for a, _ in ts]
        whole = [b for _, b in ts]
        print(
            f"{n:15s} first batch min {min(first):.3f} median {statistics.median(first):.3f} s"
            f"   epoch min {min(whole):.3f} median {statistics.median(whole):.3f} s"
        )


if __name__ == "__main__":
    main()
