"""Local files through the range engine, against the strongest plain-Python way to do
the same read, measured in the same process and taking turns.

- ``SmallReads``: one 4 KiB or 1 MiB read of a page-cached file per call, against
  Python's ``open`` + ``readinto`` into page-aligned memory (an AlignedBuffer: a fresh
  numpy array starts 16 bytes into a page, and copies into it run ~3.6x slower) and,
  as a floor, ``os.preadv`` on a file kept open. Goals: 4 KiB <= 1.5x, 1 MiB <= 1.0x
  ``open + readinto``.
- ``FileRead1GiB``: a 1 GiB page-cached file, fastload (4 parts in flight, and 1),
  against one ``readinto`` into aligned memory, ``readinto`` split over 2 threads
  (``os.preadv`` of two halves; the machine has 2 cores) and ``numpy.copyto`` of 1 GiB
  (the memory bus's limit for a copy).
- ``ColdRead1GiB``: the same file out of the page cache (``posix_fadvise(DONTNEED)``
  on this one file before every call, never a global drop): fastload
  ``page_cache_mode="auto"`` (cold large parts of a file that fits half the memory read
  ahead through the page cache; of a larger one, O_DIRECT: ``auto_large``),
  ``"sequential"`` (buffered, 4 threads), ``direct://``, against one aligned ``readinto``;
  and the next epoch's read after a cold one (``*_epoch2``). Goal: auto >= 1.2x.

Every ``track_*`` reports the best and the median of interleaved rounds as separate
parameters (``stat``), ratios as baseline time / fastload time (> 1: fastload faster)
for speeds, fastload time / baseline time for the small-read goals (< 1: faster).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np

import fastload

from .common import MB, random_file, warm_page_cache

GIB = 1 << 30
STATS = ["min", "median"]


def rounds(
    fns: dict[str, Callable[[], object]],
    repeat: int,
    before: Callable[[str], None] | None = None,
):
    """Seconds of each function over ``repeat`` interleaved rounds (after one warm-up),
    ``before(name)`` run untimed ahead of every call."""
    for name, fn in fns.items():
        if before:
            before(name)
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if before:
                before(name)
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def summary(times: list[float], stat: str) -> float:
    return min(times) if stat == "min" else statistics.median(times)


def readinto(path: str, view: memoryview) -> None:
    with open(path, "rb", buffering=0) as f:
        f.readinto(view)


def readinto_threads(path: str, view: memoryview, n: int = 2) -> None:
    """``n`` threads each ``preadv`` one contiguous share of the file into ``view``."""
    size = len(view)
    step = -(-size // n)

    def share(off: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            end = min(off + step, size)
            while off < end:
                off += os.preadv(fd, [view[off:end]], off)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=share, args=(o,)) for o in range(0, size, step)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def drop_cache(path: str) -> None:
    """This one file out of the page cache (not a global drop)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _small_read_times(path: str, size: int) -> dict[str, list[float]]:
    """Seconds per call of each way to read ``size`` bytes of ``path``, interleaved."""
    buf = fastload.AlignedBuffer(size)
    view = memoryview(buf)
    table = np.array([[0, 0, size, 0]], dtype=np.int64)
    eng = fastload.RangeEngine()
    fd = os.open(path, os.O_RDONLY)
    n = 200 if size == 4096 else 20  # calls per timing: above the timer's noise

    def loop(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                fn()

        return run

    fns = {
        "fastload": loop(lambda: eng.read_into([path], table, buf)),
        "open_readinto": loop(lambda: readinto(path, view)),
        "preadv_open_fd": loop(lambda: os.preadv(fd, [view], 0)),
    }
    try:
        return {k: [t / n for t in v] for k, v in rounds(fns, 100).items()}
    finally:
        os.close(fd)
        eng.close()


class SmallReads:
    """Seconds per call and fastload's time over each baseline's (goal <= 1.5x at 4 KiB,
    <= 1.0x at 1 MiB against open + readinto)."""

    params = [[4096, 1 << 20], ["fastload/open_readinto", "fastload/preadv_open_fd"], STATS]
    param_names = ["size", "ratio", "stat"]
    timeout = 300

    def setup_cache(self):
        path = random_file("file-16mib.bin", 16 << 20)
        warm_page_cache(path)
        return {size: _small_read_times(path, size) for size in self.params[0]}

    def track_ratio(self, times, size, ratio, stat):
        num, den = ratio.split("/")
        return summary(times[size][num], stat) / summary(times[size][den], stat)

    track_ratio.unit = "time ratio"

    def track_us_per_call(self, times, size, ratio, stat):
        return summary(times[size][ratio.split("/")[0]], stat) * 1e6

    track_us_per_call.unit = "us"


class FileRead1GiB:
    """MB/s of each reader of a page-cached 1 GiB file, and fastload's speed over each
    baseline's (same run, taking turns)."""

    timeout = 900
    params = [
        ["fastload", "fastload_1_part", "readinto", "readinto_2_threads", "copyto"],
        STATS,
    ]
    param_names = ["reader", "stat"]

    def setup_cache(self):
        path = random_file("file-1gib.bin", GIB)
        warm_page_cache(path)
        buf = fastload.AlignedBuffer(GIB)  # allocated and pre-faulted once, reused
        view = memoryview(buf)
        src = fastload.AlignedBuffer(GIB)
        a, b = np.asarray(buf), np.asarray(src)
        eng = fastload.RangeEngine(part_size=8 << 20, max_inflight_parts=4)
        eng_1 = fastload.RangeEngine(part_size=8 << 20, max_inflight_parts=1)
        fns = {
            "fastload": lambda: eng.read(path, buf),
            "fastload_1_part": lambda: eng_1.read(path, buf),
            "readinto": lambda: readinto(path, view),
            "readinto_2_threads": lambda: readinto_threads(path, view),
            "copyto": lambda: np.copyto(a, b),
        }
        times = rounds(fns, 7)
        eng.close()
        eng_1.close()
        return times

    def track_mb_per_s(self, times, reader, stat):
        return GIB / summary(times[reader], stat) / MB

    track_mb_per_s.unit = "MB/s"

    def track_fastload_speed_ratio(self, times, reader, stat):
        """fastload's MB/s over this reader's (> 1: fastload faster)."""
        return summary(times[reader], stat) / summary(times["fastload"], stat)

    track_fastload_speed_ratio.unit = "ratio"


class ColdRead1GiB:
    """MB/s and CPU seconds of reads of a 1 GiB file out of the page cache, and each
    reader's speed over one aligned readinto (goal: auto >= 1.2x).

    ``auto`` reads a cold file that fits the page cache (cache_fit: half the memory) through
    it, read ahead; ``auto_large`` is auto for a file that does not fit (cache_fit=0: O_DIRECT).
    ``*_epoch2``: the same read again right after a cold one (the next epoch): auto's finds
    the file cached, direct's reads the disk again."""

    timeout = 1200
    READERS = (
        "fastload_auto",
        "fastload_auto_large",
        "fastload_sequential",
        "fastload_direct",
        "readinto",
        "fastload_auto_epoch2",
        "fastload_direct_epoch2",
    )
    params = [list(READERS), STATS]
    param_names = ["reader", "stat"]

    def setup_cache(self):
        path = random_file("file-1gib.bin", GIB)
        buf = fastload.AlignedBuffer(GIB)
        view = memoryview(buf)
        kw = {"part_size": 8 << 20, "max_inflight_parts": 4}
        auto = fastload.RangeEngine(page_cache_mode="auto", **kw)
        large = fastload.RangeEngine(page_cache_mode="auto", cache_fit=0, **kw)
        seq = fastload.RangeEngine(page_cache_mode="sequential", **kw)
        direct = fastload.RangeEngine(**kw)
        cpu: dict[str, list[float]] = {}

        def timed_cpu(name: str, fn: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                c = time.process_time()
                fn()
                cpu.setdefault(name, []).append(time.process_time() - c)

            return run

        fns = {
            "fastload_auto": timed_cpu("fastload_auto", lambda: auto.read(path, buf)),
            "fastload_auto_large": timed_cpu("fastload_auto_large", lambda: large.read(path, buf)),
            "fastload_sequential": timed_cpu("fastload_sequential", lambda: seq.read(path, buf)),
            "fastload_direct": timed_cpu(
                "fastload_direct", lambda: direct.read(f"direct://{path}", buf)
            ),
            "readinto": timed_cpu("readinto", lambda: readinto(path, view)),
        }
        fns["fastload_auto_epoch2"] = fns["fastload_auto"]
        fns["fastload_direct_epoch2"] = fns["fastload_direct"]

        def before(name: str) -> None:
            drop_cache(path)
            if name.endswith("_epoch2"):  # the first epoch, untimed
                fns[name.replace("_epoch2", "")]()

        times = rounds(fns, 3, before=before)
        for e in (auto, large, seq, direct):
            e.close()
        return {"times": times, "cpu": cpu}

    def track_mb_per_s(self, res, reader, stat):
        return GIB / summary(res["times"][reader], stat) / MB

    track_mb_per_s.unit = "MB/s"

    def track_speed_over_readinto(self, res, reader, stat):
        return summary(res["times"]["readinto"], stat) / summary(res["times"][reader], stat)

    track_speed_over_readinto.unit = "ratio"

    def track_cpu_s_per_gib(self, res, reader, stat):
        return summary(res["cpu"][reader], stat)

    track_cpu_s_per_gib.unit = "CPU s"
