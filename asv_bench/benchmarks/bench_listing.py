"""Listing 100,000 local files with their sizes: ``ObjectDataset(folder)`` against
``os.scandir`` recursion with ``DirEntry.stat()`` (the fastest plain-Python listing
that gives sizes), and the same sorted by path (the order a dataset needs), measured
in the same process, taking turns (best and median of 5). Goal: ObjectDataset <= 1.2x
os.scandir. (S3 listings are in bench_s3.S3Listing.)"""

from __future__ import annotations

import os
import statistics
import time

import fastload

from .common import data_dir

N_DIRS, PER_DIR = 100, 1000


def many_files() -> str:
    root = os.path.join(data_dir(), f"many-{N_DIRS}x{PER_DIR}")
    done = root + ".complete"
    if os.path.exists(done):
        return root
    for d in range(N_DIRS):
        folder = os.path.join(root, f"d{d:03d}")
        os.makedirs(folder, exist_ok=True)
        for f in range(PER_DIR):
            with open(os.path.join(folder, f"f{f:04d}.bin"), "wb") as fh:
                fh.write(b"x" * (f % 97 + 1))
    open(done, "w").close()
    return root


def scandir_sizes(folder: str, out: list[tuple[str, int]]) -> list[tuple[str, int]]:
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                scandir_sizes(e.path, out)
            else:
                out.append((e.path, e.stat().st_size))
    return out


class LocalListing:
    """Seconds to list with sizes, and each way's time over os.scandir's."""

    timeout = 900
    params = [["ObjectDataset", "scandir", "scandir_sorted"], ["min", "median"]]
    param_names = ["lister", "stat"]

    def setup_cache(self):
        root = many_files()
        fns = {
            "ObjectDataset": lambda: len(fastload.ObjectDataset(root)),
            "scandir": lambda: len(scandir_sizes(root, [])),
            "scandir_sorted": lambda: len(sorted(scandir_sizes(root, []))),
        }
        assert len({fn() for fn in fns.values()}) == 1  # same files; also the warm-up
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(5):
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        return times

    def _pick(self, times, lister, stat):
        return min(times[lister]) if stat == "min" else statistics.median(times[lister])

    def track_seconds(self, times, lister, stat):
        return self._pick(times, lister, stat)

    track_seconds.unit = "s"

    def track_time_over_scandir(self, times, lister, stat):
        return self._pick(times, lister, stat) / self._pick(times, "scandir", stat)

    track_time_over_scandir.unit = "ratio"
