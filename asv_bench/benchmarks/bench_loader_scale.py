"""Epoch set-up at scale: 10**7 samples of 4 bytes, ``batch_size=1`` (10**7 batches).

What a loader pays before its first batch, per epoch: the sampler's order, the batch
slices and the epoch's bookkeeping (goal: first batch < 2 s, < 200 MiB extra). Measured
for the sequential, shuffled and weighted (without replacement, 10**7 weights) orders.

- ``time_len`` / ``time_first_batch``: ``len(loader)``, and ``iter`` + the first ``next``.
- ``peakmem_first_batch`` beside ``peakmem_loader_only`` (the same process without the
  epoch): their difference is the epoch's peak.
- ``track_first_batch_extra_mib``: the same difference measured inside one process (the
  peak resident set reset through /proc/self/clear_refs just before the epoch starts).
- ``track_first_batch_s``: min and median over 3 epochs, printed; the min returned.
- ``track_first_batch_over_order``: the first batch's time over the time of the sampler's
  order alone (the floor), interleaved in the same run.

The record file is sparse (40 MB of zeros) and written once under FASTLOAD_BENCH_DIR.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset

from .common import data_dir, interleaved_best

N = 10_000_000
RECORD = 4


def _records() -> str:
    path = os.path.join(data_dir(), f"scale-{N}x{RECORD}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != N * RECORD:
        with open(path, "wb") as f:
            f.truncate(N * RECORD)
    return path


def _loader(order: str) -> DataLoader:
    ds = RecordDataset(_records(), (RECORD,), np.uint8)
    if order == "sequential":
        return DataLoader(ds, batch_size=1)
    if order == "shuffled":
        return DataLoader(ds, batch_size=1, shuffle=True, seed=1)
    weights = np.random.default_rng(0).random(N) + 0.5
    return DataLoader(ds, batch_size=1, sampler_type="weighted_random", weights=weights)


def _first_batch(dl: DataLoader) -> None:
    it = iter(dl)
    next(it)
    it.close()


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class LoaderScale:
    timeout = 600
    params = [["sequential", "shuffled", "weighted"]]
    param_names = ["order"]
    number = 1
    repeat = 3

    def setup(self, order: str) -> None:
        self.dl = _loader(order)

    def teardown(self, order: str) -> None:
        self.dl.close()

    def time_len(self, order: str) -> None:
        len(self.dl)

    def time_first_batch(self, order: str) -> None:
        _first_batch(self.dl)

    def peakmem_first_batch(self, order: str) -> None:
        _first_batch(self.dl)

    def peakmem_loader_only(self, order: str) -> None:
        """The baseline of peakmem_first_batch: the same set-up, no epoch."""

    def track_first_batch_extra_mib(self, order: str) -> float:
        _first_batch(self.dl)  # warm: imports, first buffers
        before = _rss_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (the peak) to the current resident set
        _first_batch(self.dl)
        return _rss_mib("VmHWM") - before

    track_first_batch_extra_mib.unit = "MiB"

    def track_first_batch_s(self, order: str) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            _first_batch(self.dl)
            times.append(time.perf_counter() - t)
        print(
            f"first batch ({order}): min {min(times):.3f} s, median {statistics.median(times):.3f} s"
        )
        return min(times)

    track_first_batch_s.unit = "s"

    def track_first_batch_over_order(self, order: str) -> float:
        """First batch / the sampler's order alone (the floor, measured in the same run,
        interleaved, best of 3): what the epoch's set-up adds on top of making the order."""
        sampler = self.dl.sampler
        best = interleaved_best(
            {"epoch": lambda: _first_batch(self.dl), "order": lambda: sampler.indices(0)},
            repeat=3,
        )
        print(f"first batch {best['epoch']:.3f} s, order alone {best['order']:.3f} s ({order})")
        return best["epoch"] / best["order"]

    track_first_batch_over_order.unit = "ratio"


if __name__ == "__main__":  # python -m benchmarks.bench_loader_scale (from asv_bench/)
    for order in LoaderScale.params[0]:
        b = LoaderScale()
        b.setup(order)
        t = time.perf_counter()
        n = len(b.dl)
        print(f"{order}: len {n} in {time.perf_counter() - t:.6f} s")
        print(f"{order}: extra {b.track_first_batch_extra_mib(order):.1f} MiB")
        b.track_first_batch_s(order)
        print(f"{order}: first batch / order {b.track_first_batch_over_order(order):.2f}")
        b.teardown(order)
