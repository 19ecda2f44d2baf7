"""Reading a 1 GiB page-cached file into an aligned buffer.

Baselines measured in the same run: ``f.readinto`` into a preallocated numpy
array (what a Python loader does) and ``numpy.copyto`` of 1 GiB (the memory
bus's own limit for a copy).
"""

import numpy as np

import fastload

from .common import MB, interleaved_best, random_file, warm_page_cache

GIB = 1 << 30


class FileRead1GiB:
    """MB/s of each reader and ratios against the baselines (goal: >= 0.9x copyto)."""

    timeout = 600
    params = [["fastload", "fastload_1_part", "readinto", "copyto"]]
    param_names = ["reader"]

    def setup_cache(self):
        return random_file("file-1gib.bin", GIB)

    def setup(self, path, *args):
        warm_page_cache(path)
        self.path = path
        self.buf = fastload.AlignedBuffer(GIB)  # allocated and pre-faulted once, reused
        self.arr = np.zeros(GIB, dtype=np.uint8)
        self.src = np.ones(GIB, dtype=np.uint8)
        self.engine = fastload.RangeEngine(part_size=8 << 20, max_inflight_parts=4)
        self.engine_1 = fastload.RangeEngine(part_size=8 << 20, max_inflight_parts=1)
        self.readers = {
            "fastload": lambda: self.engine.read(path, self.buf),
            "fastload_1_part": lambda: self.engine_1.read(path, self.buf),
            "readinto": self._readinto,
            "copyto": lambda: np.copyto(self.arr, self.src),
        }
        self.seconds = interleaved_best(self.readers, repeat=5)

    def _readinto(self):
        with open(self.path, "rb", buffering=0) as f:
            f.readinto(self.arr)

    def time_read(self, path, reader):
        self.readers[reader]()

    def track_mb_per_s(self, path, reader):
        return GIB / self.seconds[reader] / MB

    track_mb_per_s.unit = "MB/s"


class FileRead1GiBRatios:
    """fastload's speed as a fraction of each baseline, measured together."""

    timeout = 600
    params = [["fastload/copyto", "fastload/readinto", "fastload_1_part/readinto"]]
    param_names = ["ratio"]

    setup_cache = FileRead1GiB.setup_cache
    setup = FileRead1GiB.setup
    _readinto = FileRead1GiB._readinto

    def track_ratio(self, path, ratio):
        num, den = ratio.split("/")
        return self.seconds[den] / self.seconds[num]

    track_ratio.unit = "ratio"
