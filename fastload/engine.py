"""The range engine: whole objects or many byte ranges into one aligned buffer.

Python decides what to read (validation, packing ranges, choosing the backend
by URI scheme); the backends' native code does the reading with the GIL
released.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastload._buffer import AlignedBuffer
from fastload.file_backend import CACHE_MODES, FileBackend
from fastload.range_table import split_by_source
from fastload.uri import ParsedURI, parse_uri

MIN_PART_SIZE = 4096
_INT64_MAX = np.iinfo(np.int64).max
DEFAULT_PART_SIZE = 8 << 20
# In-flight parts when none is asked, per kind of source. Local files: reader
# threads; 4 keep two cores' page-cache copies busy (unchanged). http(s)/s3:
# transfers, where a request's first-byte latency, not bandwidth, bounds small
# reads. DataLoader over rclone serve s3 (4,000 shuffled 64x64x3 records; 2,000
# 16-128 KiB objects; batch 256, prefetch 2; bench_loader_s3.py --sweep) behind a
# 10 ms delay: 4 -> 32 in flight took records/s 640 -> 3,700-4,200 and objects/s
# 620 -> 2,400-3,200 (64: -19% to +27% more); on bare loopback 4-32 are within
# noise and 64 lost up to 40% (client and server share two cores).
DEFAULT_MAX_INFLIGHT_PARTS = 4
NETWORK_MAX_INFLIGHT_PARTS = 32

Range = tuple[int, int]


def _backend_scheme(scheme: str) -> str:
    """file:// and direct:// share one backend."""
    return "file" if scheme == "direct" else scheme


def default_inflight(scheme: str) -> int:
    """``max_inflight_parts`` when none is set, for a source of ``scheme``."""
    return DEFAULT_MAX_INFLIGHT_PARTS if scheme in ("file", "direct") else NETWORK_MAX_INFLIGHT_PARTS


def _check_positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def writable_view(out: Any, needed: int, what: str) -> memoryview:
    """A flat writable byte view of ``out``; ValueError when it is read-only or too small."""
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(f"{what}: out must support the buffer protocol, got {type(out).__name__}") from None
    if view.readonly:
        raise ValueError(f"{what}: the destination buffer is read-only")
    if not view.contiguous:
        raise ValueError(f"{what}: the destination buffer is not contiguous")
    if view.nbytes < needed:
        raise ValueError(f"{what}: the destination buffer holds {view.nbytes} bytes, {needed} are needed")
    if view.format == "B" and view.ndim == 1:
        return view
    if view.c_contiguous and len(view.format.lstrip("@")) == 1:
        return view.cast("B")
    # memoryview.cast takes only C order and one-letter formats: numpy gives the
    # bytes of Fortran-ordered, structured or byte-swapped buffers in memory order.
    flat = np.asarray(view).reshape(-1, order="F" if not view.c_contiguous else "C")
    return flat.view(np.uint8).data


class RangeEngine:
    """Reads objects and byte ranges from any supported URI into aligned buffers.

    ``part_size``: ranges are cut into parts of at most this many bytes;
    ``max_inflight_parts``: native threads (or transfers) in flight at once;
    None (the default) picks per scheme: 4 for local files, 32 for http(s)://
    and s3:// (see ``default_inflight``);
    ``page_cache_mode``: posix_fadvise hint for local files (auto, sequential,
    random, dont_need, normal); ``timeout``: seconds one whole read may
    take (network reads and their HEAD / LIST; local reads check it between parts).
    """

    def __init__(
        self,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        max_inflight_parts: int | None = None,
        page_cache_mode: str = "auto",
        timeout: float | None = None,
        **network_options: Any,
    ) -> None:
        self.part_size = _check_positive_int("part_size", part_size, MIN_PART_SIZE)
        self.max_inflight_parts = None if max_inflight_parts is None else \
            _check_positive_int("max_inflight_parts", max_inflight_parts, 1)
        if page_cache_mode not in CACHE_MODES:
            raise ValueError(
                f"page_cache_mode must be one of {sorted(CACHE_MODES)}, got {page_cache_mode!r}"
            )
        self.page_cache_mode = page_cache_mode
        if timeout is not None and not (timeout > 0):
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.timeout = timeout
        self.network_options = network_options
        self._backends: dict[str, Any] = {}
        self._backends_lock = threading.Lock()  # loader reader threads share one engine

    def inflight_for(self, scheme: str) -> int:
        """The parts a read of ``scheme`` sources keeps in flight."""
        return self.max_inflight_parts or default_inflight(scheme)

    # -- backends -------------------------------------------------------------
    def backend(self, scheme: str) -> Any:
        scheme = _backend_scheme(scheme)
        b = self._backends.get(scheme)
        if b is None:
            with self._backends_lock:
                b = self._backends.get(scheme)
                if b is None:
                    b = self._backends[scheme] = self._make_backend(scheme)
        return b

    def _make_backend(self, scheme: str) -> Any:
        if scheme == "file":
            return FileBackend()
        from fastload.network import make_backend  # network code loads only when used

        options = dict(self.network_options)
        if self.timeout is not None and "request_timeout" not in options:
            options["request_timeout"] = self.timeout  # HEAD and LIST obey the read timeout too
        return make_backend(scheme, **options)

    def close(self) -> None:
        for b in self._backends.values():
            close = getattr(b, "close", None)
            if close is not None:
                close()
        self._backends.clear()

    def __enter__(self) -> RangeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries --------------------------------------------------------------
    def size(self, uri: str | os.PathLike[str]) -> int:
        """Size of the object in bytes."""
        src = parse_uri(uri)
        return int(self.backend(src.scheme).size(src))

    def list(self, prefix: str | os.PathLike[str]) -> list[str]:
        """Every object under a prefix (a local folder, s3://bucket/prefix/), sorted."""
        src = parse_uri(prefix)
        return list(self.backend(src.scheme).list(src))

    # -- reads ----------------------------------------------------------------
    def read(self, uri: str | os.PathLike[str], out: Any = None, *, pin: bool = False) -> Any:
        """Read a whole object into ``out`` (or a new AlignedBuffer of its size).

        ``timeout`` bounds the size query and the read together.
        """
        deadline = self._deadline()
        size = self.size(uri)
        return self.read_ranges(uri, [(0, size)] if size else [], out, pin=pin, _size=size,
                                _deadline=deadline)

    def read_ranges(
        self,
        uri: str | os.PathLike[str],
        ranges: Iterable[Range] | np.ndarray,
        out: Any = None,
        *,
        pin: bool = False,
        _size: int | None = None,
        _deadline: float | None = None,
    ) -> Any:
        """Read byte ranges ``(offset, length)`` of one object, packed one after another.

        Returns ``out`` or, when it is None, a new AlignedBuffer of the total length.
        """
        src = parse_uri(uri)
        arr = np.asarray(list(ranges) if not isinstance(ranges, np.ndarray) else ranges, dtype=np.int64)
        if arr.size == 0:
            arr = arr.reshape(0, 2)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"{src.display}: ranges must be (offset, length) pairs, got shape {arr.shape}")
        table = np.zeros((len(arr), 4), dtype=np.int64)
        table[:, 1:3] = arr
        lengths = arr[:, 1]
        table[:, 3] = np.cumsum(lengths) - lengths
        self._check_table([src], table)
        total = int(lengths.sum()) if len(arr) else (_size or 0)
        if out is None:
            out = AlignedBuffer(total, pin=pin)
        self.read_into([src], table, out, _deadline=_deadline)
        return out

    def read_into(
        self,
        sources: Sequence[str | os.PathLike[str] | ParsedURI],
        table: np.ndarray,
        out: Any,
        *,
        cancel: Any = None,
        _deadline: float | None = None,
    ) -> None:
        """The general form: rows ``(src, offset, length, dst)`` of an int64 table.

        Reads ``length`` bytes at ``offset`` of ``sources[src]`` to ``out[dst:]``.
        Sources of several schemes may be mixed; each scheme's rows go to its backend,
        and ``timeout`` bounds the whole call.
        """
        deadline = self._deadline() if _deadline is None else _deadline
        srcs = [s if isinstance(s, ParsedURI) else parse_uri(s) for s in sources]
        table = np.ascontiguousarray(table, dtype=np.int64)
        if table.ndim != 2 or table.shape[1] != 4:
            raise ValueError(f"the range table must have 4 columns (src, offset, length, dst), got {table.shape}")
        if len(table) == 0:
            return
        self._check_table(srcs, table)
        ends = table[:, 3] + table[:, 2]  # cannot wrap: _check_table bounds each row
        last = int(ends.argmax())
        view = writable_view(out, int(ends[last]), f"{srcs[int(table[last, 0])].display} (range #{last})")
        for scheme, sub_srcs, sub_table in split_by_source(srcs, table, lambda s: _backend_scheme(s.scheme)):
            self.backend(str(scheme)).read_into(
                sub_srcs, sub_table, view,
                part_size=self.part_size, max_inflight_parts=self.inflight_for(str(scheme)),
                page_cache_mode=self.page_cache_mode, cancel=cancel,
                timeout=None if deadline is None else max(deadline - time.monotonic(), 1e-9),
            )

    def _deadline(self) -> float | None:
        """When a read starting now must end (monotonic clock), or None without a timeout."""
        return None if self.timeout is None else time.monotonic() + self.timeout

    @staticmethod
    def _check_table(srcs: Sequence[ParsedURI], table: np.ndarray) -> None:
        src, off, length, dst = table.T
        bad = (src < 0) | (src >= len(srcs)) | (off < 0) | (length <= 0) | (dst < 0)
        # offset + length and dst + length must not wrap int64 (checked without adding)
        bad |= (length > _INT64_MAX - np.maximum(off, 0)) | (length > _INT64_MAX - np.maximum(dst, 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            s, o, n, d = (int(v) for v in table[i])
            name = srcs[s].display if 0 <= s < len(srcs) else "range table"
            if not 0 <= s < len(srcs):
                what = f"source index {s} is not one of the {len(srcs)} sources"
            elif o < 0:
                what = "negative offset"
            elif n <= 0:
                what = "empty or negative length"
            elif d < 0:
                what = f"negative destination offset {d}"
            else:
                what = "the end of the range does not fit in 64 bits"
            raise ValueError(f"{name}: invalid range #{i} (offset={o}, length={n}, dst={d}): {what}")


_default_engine: RangeEngine | None = None


def default_engine() -> RangeEngine:
    global _default_engine
    if _default_engine is None:
        _default_engine = RangeEngine()
    return _default_engine


def read(uri: str | os.PathLike[str], out: Any = None, **options: Any) -> Any:
    """Read a whole object. Keyword options build a RangeEngine for this call."""
    if not options:
        return default_engine().read(uri, out)
    pin = options.pop("pin", False)
    with RangeEngine(**options) as eng:
        return eng.read(uri, out, pin=pin)


def read_ranges(uri: str | os.PathLike[str], ranges: Iterable[Range], out: Any = None, **options: Any) -> Any:
    """Read byte ranges of one object, packed one after another."""
    if not options:
        return default_engine().read_ranges(uri, ranges, out)
    pin = options.pop("pin", False)
    with RangeEngine(**options) as eng:
        return eng.read_ranges(uri, ranges, out, pin=pin)
