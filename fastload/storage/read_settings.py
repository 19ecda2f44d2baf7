"""How one read is done: part size, parts in flight, page-cache policy, time limit.

A ``ReadSettings`` travels with each engine call (the loader builds one from its options
and the auto-tuner swaps it), so nobody mutates a shared engine to change how it reads.
The defaults live here once; the options layer and the engine both take them from here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

import numpy as np

from fastload._native.status import CacheMode
from fastload.checks import check_choice, check_int, check_number

MIN_PART_SIZE = 4096  # one page: O_DIRECT needs page-aligned parts
DEFAULT_PART_SIZE = 8 << 20
# A part size that never cuts a range: one request per range (reader_mode="sequential").
WHOLE_RANGES = 1 << 62
MAX_PART_SIZE = WHOLE_RANGES  # past it, part arithmetic in C could overflow int64
# In-flight parts when none is asked, per kind of source. Local files: reader
# threads; 4 keep two cores' page-cache copies busy (unchanged). http(s)/s3:
# transfers, where a request's first-byte latency, not bandwidth, bounds small
# reads. DataLoader over rclone serve s3 (4,000 shuffled 64x64x3 records; 2,000
# 16-128 KiB objects; batch 256, prefetch 2; scripts/sweep_loader_s3.py) behind a
# 10 ms delay: 4 -> 32 in flight took records/s 640 -> 3,700-4,200 and objects/s
# 620 -> 2,400-3,200 (64: -19% to +27% more); on bare loopback 4-32 are within
# noise and 64 lost up to 40% (client and server share two cores).
# Part size of http(s)/s3 reads when none is asked: RangeEngine.read_into of 128 KiB to
# 1 GiB objects over rclone serve s3, loopback and behind 10 / 50 ms
# (scripts/sweep_engine_s3.py, table in the README): objects of 256 MiB and more went
# 1.2-1.6x faster in 32 MiB parts than in 8 MiB ones at the same depth; parts do not
# act on objects smaller than a part. 32 in flight stays for small parts (64 helped
# 128 KiB objects behind a delay, 1.3-1.7x, and lost on loopback for 1 MiB ones,
# 0.84x), but not for large ones: one 1 GiB object in 32 MiB parts went 1.7-2.2x
# faster 8 at a time than 32 at a time (asv bench_s3, same run, taking turns; the
# server then reads 32 streams of the file at once). So unless asked, http(s)/s3 keep
# about NETWORK_INFLIGHT_BYTES in flight: 8 to 32 parts, by the size of the parts read.
DEFAULT_MAX_INFLIGHT_PARTS = 4
NETWORK_MAX_INFLIGHT_PARTS = 32
NETWORK_MIN_INFLIGHT_PARTS = 8
NETWORK_INFLIGHT_BYTES = 256 << 20
NETWORK_PART_SIZE = 32 << 20
MAX_INFLIGHT_PARTS = 4096  # native threads or transfers: far past any useful depth
MAX_TIMEOUT_S = 365 * 24 * 3600.0  # past a year a deadline is a typo (and overflows C time)
PAGE_CACHE_MODES = tuple(m.name.lower() for m in CacheMode)


def default_inflight(scheme: str) -> int:
    """``max_inflight_parts`` when none is set, for a source of ``scheme``."""
    return (
        DEFAULT_MAX_INFLIGHT_PARTS if scheme in ("file", "direct") else NETWORK_MAX_INFLIGHT_PARTS
    )


def network_inflight(part_bytes: int) -> int:
    """http(s)/s3 parts in flight when none is asked, for parts of about ``part_bytes``:
    NETWORK_INFLIGHT_BYTES in flight, at least 8 and at most 32 parts."""
    fit = NETWORK_INFLIGHT_BYTES // max(int(part_bytes), 1)
    return max(NETWORK_MIN_INFLIGHT_PARTS, min(NETWORK_MAX_INFLIGHT_PARTS, fit))


# Where a container's memory limit is (cgroup v2, then v1): its page cache is charged to it.
CGROUP_MEMORY_LIMITS = (
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
)


def memory_limit(limits: tuple[str, ...] = CGROUP_MEMORY_LIMITS) -> int | None:
    """This process's memory: the machine's, or its container's limit when lower (None when
    neither can be read)."""
    try:
        total: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # no such sysconf name here
        total = None
    for path in limits:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) or a huge number (v1) mean no limit
            limit = int(text)
            total = limit if total is None else min(total, limit)
        break
    return total


def default_cache_fit() -> int:
    """``cache_fit`` when none is set: half of this process's memory (:func:`memory_limit`).
    A cold file that size or smaller is read into the page cache (the next epoch copies it
    from memory); a larger one would evict the files read before it, so it goes O_DIRECT."""
    memory = memory_limit()
    return (1 << 62) if memory is None else memory // 2


def default_part_size(scheme: str) -> int:
    """``part_size`` when none is set, for a source of ``scheme``."""
    return DEFAULT_PART_SIZE if scheme in ("file", "direct") else NETWORK_PART_SIZE


@dataclass(frozen=True)
class ReadSettings:
    """``part_size``: ranges are cut into parts of at most this many bytes (in one place:
    the native readers; None: per scheme, see :func:`default_part_size`);
    ``max_inflight_parts``: native threads or transfers at once (None: per scheme, see
    :func:`default_inflight`); ``page_cache_mode``: posix_fadvise hint for local files;
    ``timeout``: seconds one whole call may take (None: no limit); ``cache_fit``: with
    ``page_cache_mode="auto"``, cold files of at most this many bytes are read into the page
    cache and larger ones with O_DIRECT (None: :func:`default_cache_fit`)."""

    part_size: int | None = None
    max_inflight_parts: int | None = None
    page_cache_mode: str = "auto"
    timeout: float | None = None
    cache_fit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "part_size",
            check_int("part_size", self.part_size, MIN_PART_SIZE, MAX_PART_SIZE, optional=True),
        )
        object.__setattr__(
            self,
            "max_inflight_parts",
            check_int(
                "max_inflight_parts", self.max_inflight_parts, 1, MAX_INFLIGHT_PARTS, optional=True
            ),
        )
        check_choice("page_cache_mode", self.page_cache_mode, PAGE_CACHE_MODES)
        object.__setattr__(
            self,
            "cache_fit",
            check_int("cache_fit", self.cache_fit, 0, optional=True),
        )
        object.__setattr__(
            self,
            "timeout",
            check_number(
                "timeout",
                self.timeout,
                maximum=MAX_TIMEOUT_S,
                optional=True,
                what="a number of seconds",
            ),
        )

    def inflight_for(self, scheme: str) -> int:
        """The parts a read of ``scheme`` sources keeps in flight."""
        return self.max_inflight_parts or default_inflight(scheme)

    def inflight_for_parts(self, scheme: str, lengths: np.ndarray) -> int:
        """The parts in flight for a read of ranges ``lengths`` of ``scheme`` sources: the
        knob when set; for http(s)/s3, by the size of the parts (see network_inflight)."""
        if self.max_inflight_parts or scheme in ("file", "direct") or not len(lengths):
            return self.inflight_for(scheme)
        return network_inflight(min(self.part_size_for(scheme), int(np.median(lengths))))

    def part_size_for(self, scheme: str) -> int:
        """The part size a read of ``scheme`` sources is cut into."""
        return self.part_size or default_part_size(scheme)

    @functools.cached_property
    def cache_fit_bytes(self) -> int:
        return default_cache_fit() if self.cache_fit is None else self.cache_fit

    @functools.cached_property
    def cache_mode(self) -> CacheMode:  # looked up once: every read of the loader asks
        return CacheMode[self.page_cache_mode.upper()]

    @functools.cached_property
    def local_read_args(self) -> tuple[int, int, CacheMode, int]:
        """(part size, parts in flight, cache mode, cache fit) of a local read (file:// and
        direct:// share their defaults): worked out once, not on every small read."""
        return (
            self.part_size_for("file"),
            self.inflight_for("file"),
            self.cache_mode,
            self.cache_fit_bytes,
        )

    def replace(self, **changes: object) -> ReadSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
