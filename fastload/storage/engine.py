"""The range engine: whole objects or many byte ranges into one aligned buffer.

Python decides what to read (validation, packing ranges, choosing the backend
by URI scheme); the backends' native code does the reading with the GIL
released.
"""

from __future__ import annotations

import builtins
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from fastload._native.buffer import AlignedBuffer
from fastload._native.range_check import check_ranges
from fastload.checks import check_int, check_int_table, check_plain_buffer
from fastload.errors import ObjectChangedError, RangeError
from fastload.storage.backends import make_backend
from fastload.storage.file_backend import DEFAULT_MAX_OPEN_FILES
from fastload.storage.listing import ListedSources
from fastload.storage.network_options import NetworkOptions
from fastload.storage.range_table import split_by_source
from fastload.storage.read_settings import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    ReadSettings,
    default_inflight,
)
from fastload.storage.secret import RedactedOptions, wrap_secret_options
from fastload.storage.uri import ParsedURI, parse_uri

__all__ = [
    "DEFAULT_PART_SIZE",
    "MIN_PART_SIZE",
    "RangeEngine",
    "ReadSettings",
    "default_inflight",
    "read",
    "read_many",
    "read_ranges",
    "writable_view",
]

_INT64_MAX = np.iinfo(np.int64).max
# read_ranges without ``out`` checks the ranges against the object's size before it
# allocates (and pre-faults) a buffer this large: a bad range must not cost seconds.
_CHECK_SIZE_BEFORE_ALLOCATING = 16 << 20
# read() starts over this many times when the object changed under it (a new version)
_READ_RESTARTS = 1

MAX_OPEN_FILES = 1 << 20  # descriptors: past any process limit
Range = tuple[int, int]
URI = str | os.PathLike[str] | ParsedURI


# URIs parsed before, by their text: parsing is ~1 us (abspath) a call, and programs read
# the same few paths over and over. Only absolute ones: a relative path follows the cwd.
_PARSED: dict[str, ParsedURI] = {}
_PARSED_MAX = 4096


def _parsed(uri: URI) -> ParsedURI:
    if type(uri) is ParsedURI:
        return uri
    if type(uri) is str:
        hit = _PARSED.get(uri)
        if hit is not None:
            return hit
        parsed = parse_uri(uri)
        if uri.startswith("/") or "://" in uri:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[uri] = parsed
        return parsed
    return uri if isinstance(uri, ParsedURI) else parse_uri(uri)


def _parsed_all(sources: Sequence[URI]) -> Sequence[ParsedURI]:
    """``sources`` parsed; a list that is all ParsedURI already (the loader's) as it is."""
    if type(sources) is list:
        for s in sources:  # a plain loop: a generator costs more than the check
            if type(s) is not ParsedURI:
                break
        else:
            return sources
    return [_parsed(s) for s in sources]


def _one_scheme(srcs: Sequence[ParsedURI]) -> str | None:
    """The scheme every source has, or None when they mix."""
    scheme = srcs[0].scheme
    for s in srcs:
        if s.scheme != scheme:
            return None
    return scheme


def writable_view(out: Any, needed: int, what: str | Callable[[], str]) -> Any:
    """A flat writable byte view of ``out``; ValueError when it is read-only or too small.

    An AlignedBuffer is one already and comes back as it is. ``what`` names the read in
    messages (a callable is called only for a message)."""
    if type(out) is AlignedBuffer and out.nbytes >= needed:
        return out
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(
            f"{_name(what)}: out must support the buffer protocol, got {type(out).__name__}"
        ) from None
    if view.readonly:
        raise ValueError(f"{_name(what)}: the destination buffer is read-only")
    if not view.contiguous:
        raise ValueError(f"{_name(what)}: the destination buffer is not contiguous")
    check_plain_buffer(_name(what), view.format)  # before the casts below hide an object array
    if view.nbytes < needed:
        raise ValueError(
            f"{_name(what)}: the destination buffer holds {view.nbytes} bytes, {needed} are needed"
        )
    if view.format == "B" and view.ndim == 1:
        return view
    if view.c_contiguous and len(view.format.lstrip("@")) == 1:
        return view.cast("B")
    # memoryview.cast takes only C order and one-letter formats: numpy gives the
    # bytes of Fortran-ordered, structured or byte-swapped buffers in memory order.
    flat = np.asarray(view).reshape(-1, order="F" if not view.c_contiguous else "C")
    return flat.view(np.uint8).data


def _name(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


class RangeEngine:
    """Reads objects and byte ranges from any supported URI into aligned buffers.

    ``part_size``, ``max_inflight_parts``, ``page_cache_mode``, ``timeout`` and
    ``cache_fit`` are this engine's default :class:`ReadSettings` (see there); a call may pass its own
    ``settings`` instead (the loader does), so an engine is never re-configured under
    the readers sharing it. ``part_size`` and ``max_inflight_parts`` None (the defaults)
    pick per scheme: 8 MiB x 4 for local files, 32 MiB x 32 for http(s):// and s3://
    (measured: ``fastload.storage.read_settings``). ``timeout`` bounds one whole call
    (network reads and their HEAD / LIST; local reads check it between parts).
    ``max_open_files``: local files kept open between reads (per file:// and direct://
    backend; 0 opens and closes a file on every read). Threads and open files stay until
    :meth:`close`. Other keyword arguments are the network options
    (``fastload.storage.network_options``).
    """

    def __init__(
        self,
        *,
        part_size: int | None = None,
        max_inflight_parts: int | None = None,
        page_cache_mode: str = "auto",
        timeout: float | None = None,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
        cache_fit: int | None = None,
        **network_options: Any,
    ) -> None:
        network_options = wrap_secret_options(network_options)  # first: no secret in the clear
        self.settings = ReadSettings(
            part_size, max_inflight_parts, page_cache_mode, timeout, cache_fit
        )
        NetworkOptions.from_kwargs(**network_options)  # refused here, not at the first read
        self.max_open_files = check_int("max_open_files", max_open_files, 0, MAX_OPEN_FILES)
        # read-only, and its secrets are Secret objects: repr() never shows them
        # (and an endpoint_url's password neither)
        self.network_options = MappingProxyType(RedactedOptions(network_options))
        self._backends: dict[str, Any] = {}
        self._backends_lock = threading.Lock()  # loader reader threads share one engine

    # The default settings, read-only: pass settings= to a call to read otherwise.
    @property
    def part_size(self) -> int | None:
        return self.settings.part_size

    @property
    def max_inflight_parts(self) -> int | None:
        return self.settings.max_inflight_parts

    @property
    def page_cache_mode(self) -> str:
        return self.settings.page_cache_mode

    @property
    def timeout(self) -> float | None:
        return self.settings.timeout

    def inflight_for(self, scheme: str) -> int:
        """The parts a read of ``scheme`` sources keeps in flight by default."""
        return self.settings.inflight_for(scheme)

    def part_size_for(self, scheme: str) -> int:
        """The part size a read of ``scheme`` sources is cut into by default."""
        return self.settings.part_size_for(scheme)

    # -- backends -------------------------------------------------------------
    def backend(self, scheme: str) -> Any:
        """The backend of ``scheme`` (one per scheme: file and direct differ in O_DIRECT)."""
        b = self._backends.get(scheme)
        if b is None:
            with self._backends_lock:
                b = self._backends.get(scheme)
                if b is None:
                    options = dict(self.network_options)
                    if self.timeout is not None and "request_timeout" not in options:
                        options["request_timeout"] = (
                            self.timeout
                        )  # HEAD and LIST obey the read timeout too
                    b = self._backends[scheme] = make_backend(
                        scheme, options, max_open_files=self.max_open_files
                    )
        return b

    def derive(self, *, timeout: float | None) -> RangeEngine:
        """A new engine with this one's network options (endpoint, credentials, TLS ...),
        open-file limit and the object versions it has pinned, and its own ``timeout``.

        A loader given no engine makes its own from its dataset's this way: it reaches the
        store the dataset was listed from, and its reads must see the versions the
        dataset's sizes and offsets came from (else ObjectChangedError), as the dataset's
        engine would."""
        eng = RangeEngine(
            timeout=timeout, max_open_files=self.max_open_files, **dict(self.network_options)
        )
        for scheme, b in list(self._backends.items()):
            if hasattr(b, "adopt_versions"):  # network backends (local files pin nothing)
                eng.backend(scheme).adopt_versions(b)
        return eng

    def forget(self, prefix: URI | None = None) -> None:
        """Forget what the backends learned of the objects under ``prefix`` (every object
        when None): sizes from listings and HEADs, and the versions reads are pinned to
        (see ``fastload.storage.version_pins``), so the next size() or read of an object
        rewritten since sees the new version instead of raising ObjectChangedError."""
        src = None if prefix is None else _parsed(prefix)
        for scheme, b in list(self._backends.items()):
            if hasattr(b, "forget_under") and (src is None or src.scheme == scheme):
                b.forget_under(src)

    def stats(self) -> dict[str, int]:
        """Counters summed over this engine's backends: requests, bytes, and for http(s)/s3
        retries, connects and write callbacks."""
        total: dict[str, int] = dict(getattr(self, "_retired", {}))
        for b in list(self._backends.values()):
            for k, v in b.stats().items():
                total[k] = total.get(k, 0) + v
        return total

    def close(self) -> None:
        # what the closed backends counted stays in stats(): counters never go down
        # (not the gauges: nothing is open or running once closed)
        self._retired = {
            k: v for k, v in self.stats().items() if k not in ("open_files", "threads")
        }
        for b in self._backends.values():
            b.close()
        self._backends.clear()

    def __enter__(self) -> RangeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries --------------------------------------------------------------
    def size(self, uri: URI) -> int:
        """Size of the object in bytes."""
        src = _parsed(uri)
        return int(self.backend(src.scheme).size(src))

    def list(self, prefix: URI) -> list[str]:
        """Every object under a prefix (a local folder, s3://bucket/prefix/), sorted."""
        src = _parsed(prefix)
        return list(self.backend(src.scheme).list(src))

    def list_sizes(self, prefix: URI) -> tuple[builtins.list[str], builtins.list[int]]:
        """:meth:`list` and the size of each object, from the listing itself (one stat per
        local file, the sizes ListObjectsV2 reports on S3): no request per object."""
        src = _parsed(prefix)
        backend = self.backend(src.scheme)
        if hasattr(backend, "list_sizes"):
            names, sizes = backend.list_sizes(src)
            return list(names), list(sizes)
        names = list(backend.list(src))
        return names, [int(backend.size(_parsed(n))) for n in names]

    def list_sources(self, prefix: URI) -> tuple[Sequence[ParsedURI], np.ndarray]:
        """The objects under a prefix, parsed (each when first used), and their sizes as
        int64: what a dataset over a prefix needs, at the cost of the listing alone."""
        src = _parsed(prefix)
        names, sizes = self.list_sizes(src)
        start = _path_start(src, names)
        sources: Sequence[ParsedURI] = (
            ListedSources(names, src.scheme, start, bucket=src.bucket)
            if start is not None
            else [_parsed(n) for n in names]
        )
        return sources, np.asarray(sizes, dtype=np.int64).reshape(len(names))

    # -- reads ----------------------------------------------------------------
    def read(
        self, uri: URI, out: Any = None, *, pin: bool = False, settings: ReadSettings | None = None
    ) -> Any:
        """Read a whole object into ``out`` (or a new AlignedBuffer of its size).

        ``timeout`` bounds the size query and the read together.
        """
        settings = settings or self.settings
        deadline = _deadline(settings)
        src = _parsed(uri)
        for restart in range(_READ_RESTARTS + 1):
            size = self.size(src)
            ranges = np.array([[0, size]] if size else [], dtype=np.int64).reshape(-1, 2)
            try:
                return self._read_ranges(src, ranges, out, pin, settings, deadline, size)
            except ObjectChangedError:
                # a new version between the size and the read (or during it): the backend
                # forgot the old one, so a fresh size() reads the new version whole
                if restart == _READ_RESTARTS:
                    raise
        raise AssertionError("unreachable")

    def read_ranges(
        self,
        uri: URI,
        ranges: Iterable[Range] | np.ndarray,
        out: Any = None,
        *,
        pin: bool = False,
        settings: ReadSettings | None = None,
    ) -> Any:
        """Read byte ranges ``(offset, length)`` of one object, packed one after another.

        Returns ``out`` or, when it is None, a new AlignedBuffer of the total length.
        """
        src = _parsed(uri)
        arr = check_int_table(f"{src.display}: ranges", ranges, 2)  # (offset, length) pairs
        settings = settings or self.settings
        return self._read_ranges(src, arr, out, pin, settings, _deadline(settings), 0)

    def _read_ranges(
        self,
        src: ParsedURI,
        arr: np.ndarray,
        out: Any,
        pin: bool,
        settings: ReadSettings,
        deadline: float | None,
        size: int,
    ) -> Any:
        table = np.zeros((len(arr), 4), dtype=np.int64)
        table[:, 1:3] = arr
        lengths = arr[:, 1]
        table[:, 3] = np.cumsum(lengths) - lengths
        srcs = [src]
        end = _check_table(srcs, table)  # before allocating: a bad range must not cost a buffer
        if out is None:
            if end >= _CHECK_SIZE_BEFORE_ALLOCATING and not size:
                self._check_ends(src, arr)
            try:
                out = AlignedBuffer(end if len(arr) else size, pin=pin)
            except MemoryError as exc:  # a size a server claimed: say whose
                raise MemoryError(f"{src.display}: {exc}") from None
        self._read_checked(srcs, table, out, settings, None, deadline, end)
        return out

    def read_many(self, uris: Sequence[URI], **kwargs: Any) -> builtins.list[memoryview]:
        """Whole objects in one call, one memoryview each (``fastload.storage.read_many``)."""
        from fastload.storage.read_many import read_many

        return read_many(self, uris, **kwargs)

    def _check_ends(self, src: ParsedURI, arr: np.ndarray) -> None:
        """RangeError when a range ends past the object (asked before a big allocation)."""
        ends = arr[:, 0] + arr[:, 1]
        i = int(ends.argmax())
        size = self.size(src)
        if int(ends[i]) > size:
            err = RangeError(
                f"{src.display} bytes {int(arr[i, 0])}-{int(ends[i]) - 1}: range ends past the "
                f"end of the object; object size is {size} bytes"
            )
            err.uri, err.offset, err.length = src.display, int(arr[i, 0]), int(arr[i, 1])
            err.object_size = size
            raise err

    def read_into(
        self,
        sources: Sequence[URI],
        table: np.ndarray,
        out: Any,
        *,
        settings: ReadSettings | None = None,
        cancel: Any = None,
    ) -> None:
        """The general form: rows ``(src, offset, length, dst)`` of an int64 table.

        Reads ``length`` bytes at ``offset`` of ``sources[src]`` to ``out[dst:]``.
        Sources of several schemes may be mixed; each scheme's rows go to its backend,
        and ``settings.timeout`` bounds the whole call.
        """
        settings = settings or self.settings
        srcs = _parsed_all(sources)
        try:  # a C-contiguous int64 array (the loader's) goes straight to the C check
            bad, _, end, _ = check_ranges(table, len(srcs)) if type(table) is np.ndarray else _NO
        except (ValueError, TypeError, BufferError):  # another dtype, shape or layout
            bad = end = -2
        if bad != -1 or end == 0:  # converted, or refused by name; end 0: no rows
            table, end = _checked_table(srcs, table)
            if end < 0:
                return
        scheme = srcs[0].scheme if len(srcs) == 1 else _one_scheme(srcs)
        if scheme is None:
            self._read_checked(srcs, table, out, settings, cancel, _deadline(settings), end)
            return
        # One backend (the common case): straight to it, with the whole timeout (the
        # checks above take a microsecond; a small read's fixed cost is what counts here).
        if type(out) is not AlignedBuffer or out.nbytes < end:  # else out is the view itself
            out = writable_view(out, end, lambda: _end_name(srcs, table))
        backend = self._backends.get(scheme) or self.backend(scheme)
        backend.read_into(
            srcs, table, out, settings=settings, cancel=cancel, timeout=settings.timeout
        )

    def _read_checked(
        self,
        srcs: Sequence[ParsedURI],
        table: np.ndarray,
        out: Any,
        settings: ReadSettings,
        cancel: Any,
        deadline: float | None,
        end: int,
    ) -> None:
        """``table`` was checked against ``srcs`` (its rows end by ``end``): split it by
        scheme, once, and read."""
        if len(table) == 0:
            return
        view = writable_view(out, end, lambda: _end_name(srcs, table))
        scheme = _one_scheme(srcs)
        if scheme is not None:  # one backend: no split (the common case)
            parts: Iterable[tuple[Any, Sequence[ParsedURI], np.ndarray]] = ((scheme, srcs, table),)
        else:
            parts = split_by_source(srcs, table, lambda s: s.scheme)
        for sub_scheme, sub_srcs, sub_table in parts:
            self.backend(str(sub_scheme)).read_into(
                sub_srcs,
                sub_table,
                view,
                settings=settings,
                cancel=cancel,
                timeout=None if deadline is None else max(deadline - time.monotonic(), 1e-9),
            )


def _path_start(prefix: ParsedURI, names: list[str]) -> int | None:
    """Where the path (or key) starts in each URI a listing of ``prefix`` made, or None
    when the listing's URIs must be parsed one by one."""
    if prefix.scheme == "s3":
        return len(f"s3://{prefix.bucket}/")
    if prefix.scheme in ("file", "direct"):
        if not names or "://" not in names[0]:
            return 0  # plain absolute paths
        return len(prefix.scheme) + 3
    return None


def _deadline(settings: ReadSettings) -> float | None:
    """When a call starting now must end (monotonic clock), or None without a timeout."""
    return None if settings.timeout is None else time.monotonic() + settings.timeout


def _end_name(srcs: Sequence[ParsedURI], table: np.ndarray) -> str:
    """The read whose range ends last in the destination, for a message about it."""
    last = int((table[:, 3] + table[:, 2]).argmax())
    return f"{srcs[int(table[last, 0])].display} (range #{last})"


# what check_ranges would say of a table that is not an ndarray: "convert it first"
_NO = (-2, 0, -2, 0)


def _checked_table(srcs: Sequence[ParsedURI], table: Any) -> tuple[np.ndarray, int]:
    """``table`` as an int64 table of rows (src, offset, length, dst), checked against
    ``srcs`` (:func:`_check_table`; errors name the knob), and the end of the destination
    its rows write (-1: no rows)."""
    table = check_int_table("table", table, 4)
    return table, _check_table(srcs, table) if len(table) else -1


def _check_table(srcs: Sequence[ParsedURI], table: np.ndarray) -> int:
    """Every row names a source and a non-empty range whose ends fit in int64 (one C pass
    over the table); returns the end of the destination the rows write."""
    i, _, end, _ = check_ranges(table, len(srcs))
    if i >= 0:
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
    return int(end)


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


def read_many(uris: Sequence[URI], **kwargs: Any) -> list[memoryview]:
    """Whole objects in one call with the default engine (see RangeEngine.read_many)."""
    return default_engine().read_many(uris, **kwargs)


def read_ranges(
    uri: str | os.PathLike[str], ranges: Iterable[Range], out: Any = None, **options: Any
) -> Any:
    """Read byte ranges of one object, packed one after another."""
    if not options:
        return default_engine().read_ranges(uri, ranges, out)
    pin = options.pop("pin", False)
    with RangeEngine(**options) as eng:
        return eng.read_ranges(uri, ranges, out, pin=pin)
