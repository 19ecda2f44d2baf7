"""Many whole objects in one engine call: ``read_many(engine, uris)`` -> one buffer each.

A loop of ``engine.read(uri)`` pays a size query, a table check, a buffer allocation and a
native call per object. Here every object's size is found in one pass (a stat per local
file; for s3:// the engine's listing cache, a few listing pages for keys read together,
or HEADs in parallel; HEADs in parallel for http(s)://), then ONE ``read_into`` reads all
of them into one slab with the engine's native threads and the GIL released. Each object
comes back as a writable ``memoryview`` of the slab: bytes-like, ``== bytes`` compares
the contents, ``numpy.frombuffer`` / ``torch.frombuffer`` are zero-copy.

Slabs come from a small pool kept per engine and are reused only once no view of them is
alive, so a loop that drops each call's results before the next call reads into memory
that is already mapped (a fresh slab costs page faults: see DESIGN).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from fastload.checks import check_int, check_int_table, check_plain_buffer
from fastload.storage.buffer_pool import BufferPool
from fastload.storage.read_settings import ReadSettings
from fastload.storage.uri import ParsedURI, parse_uri

__all__ = ["ALIGN", "object_sizes", "read_many", "slab_bytes"]

ALIGN = 64  # each object starts on a cache line: numpy views of any dtype are aligned
_HEAD_THREADS = 32  # parallel HEADs when sizes must be asked one by one
_LIST_MIN_KEYS = 16  # from this many unknown keys of one bucket on, list instead of HEAD
_POOL_KEEP = 2  # idle slabs kept per engine for the next call
_MAX_SIZE = np.iinfo(np.int64).max - ALIGN  # a slab offset past it would wrap

_pools: weakref.WeakKeyDictionary[Any, BufferPool] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


class _Engine(Protocol):  # what read_many needs of a RangeEngine (no import: no cycle)
    settings: ReadSettings

    def backend(self, scheme: str) -> Any: ...

    def read_into(
        self, sources: Sequence[Any], table: np.ndarray, out: Any, *, settings: Any = ...
    ) -> None: ...


def _pool(engine: _Engine) -> BufferPool:
    with _pools_lock:
        pool = _pools.get(engine)
        if pool is None:
            pool = _pools[engine] = BufferPool(keep=_POOL_KEEP)
        return pool


def _parse(uri: Any) -> ParsedURI:
    return uri if isinstance(uri, ParsedURI) else parse_uri(uri)


def _local_sizes(engine: _Engine, srcs: list[ParsedURI], idx: list[int], out: np.ndarray) -> None:
    backend = None
    for i in idx:
        try:
            out[i] = os.stat(srcs[i].path).st_size
        except (
            OSError,
            ValueError,
        ):  # ValueError: a NUL byte in the path  # the backend's error names the URI (and says not found / denied)
            backend = backend or engine.backend(srcs[i].scheme)
            out[i] = backend.size(srcs[i])
        else:
            if not os.path.isfile(srcs[i].path):
                backend = backend or engine.backend(srcs[i].scheme)
                out[i] = backend.size(srcs[i])  # a folder: the backend says what is wrong


def _s3_listed(backend: Any, srcs: list[ParsedURI], idx: list[int]) -> None:
    """Learn the sizes of many keys of one bucket from listing pages (a HEAD each is the
    fallback for what the pages did not cover)."""
    by_bucket: dict[str, list[str]] = {}
    for i in idx:
        by_bucket.setdefault(srcs[i].bucket, []).append(srcs[i].path)
    for bucket, keys in by_bucket.items():
        if len(keys) < _LIST_MIN_KEYS:
            continue
        keys.sort()
        prefix = os.path.commonprefix([keys[0], keys[-1]])
        # a strict prefix of the first key sorts just before it: the listing starts there
        start_after = keys[0][:-1]
        pages_needed = -(-len(keys) // max(int(backend.opts.list_page_size), 1))
        backend.list_pages_after(
            ParsedURI(f"s3://{bucket}/{prefix}", "s3", prefix, bucket=bucket),
            start_after,
            keys[-1],
            2 * pages_needed + 1,
        )


def _network_sizes(
    engine: _Engine, scheme: str, srcs: list[ParsedURI], idx: list[int], out: np.ndarray
) -> None:
    backend = engine.backend(scheme)
    known = getattr(backend, "known_size", None)
    if known is not None:
        if scheme == "s3":
            missing = [i for i in idx if known(srcs[i]) is None]
            if len(missing) >= _LIST_MIN_KEYS:
                _s3_listed(backend, srcs, missing)
        left = []
        for i in idx:
            n = known(srcs[i])
            if n is None:
                left.append(i)
            else:
                out[i] = n
        idx = left
    if len(idx) <= 1:
        for i in idx:
            out[i] = backend.size(srcs[i])
        return
    with ThreadPoolExecutor(min(_HEAD_THREADS, len(idx))) as pool:
        for i, n in zip(idx, pool.map(lambda j: backend.size(srcs[j]), idx), strict=True):
            out[i] = n


def object_sizes(engine: _Engine, sources: Sequence[ParsedURI]) -> np.ndarray:
    """The size of every object, int64, in one pass per scheme (see the module docstring)."""
    srcs = list(sources)
    sizes = np.zeros(len(srcs), dtype=np.int64)
    by_scheme: dict[str, list[int]] = {}
    for i, s in enumerate(srcs):
        by_scheme.setdefault(s.scheme, []).append(i)
    for scheme, idx in by_scheme.items():
        if scheme in ("file", "direct"):
            _local_sizes(engine, srcs, idx, sizes)
        else:
            _network_sizes(engine, scheme, srcs, idx, sizes)
    return sizes


def read_many(
    engine: _Engine,
    uris: Sequence[Any],
    *,
    sizes: Sequence[int] | np.ndarray | None = None,
    out: Any = None,
    settings: ReadSettings | None = None,
) -> list[memoryview]:
    """Read every object of ``uris`` whole; one writable memoryview per object, in order.

    ``sizes``: the objects' sizes when the caller knows them (no size pass); ``out``: a
    buffer to read into instead of a pooled slab (it must hold every object, each starting
    on a 64-byte boundary: ``slab_bytes(sizes)``); ``settings``: the call's ReadSettings
    (part size, parts in flight, timeout), the engine's by default. Errors name the URI
    (a missing object, a wrong size, a timeout) and leave nothing half-returned.
    """
    if isinstance(uris, (str, bytes, os.PathLike)):
        raise TypeError("read_many takes a sequence of URIs; for one object use read()")
    srcs = [_parse(u) for u in uris]
    if sizes is None:
        lengths = object_sizes(engine, srcs)
    else:
        # integers only (5.5 is a TypeError, never truncated), each small enough that its
        # 64-byte padding and the slab's total fit in int64
        lengths = check_int_table("read_many: sizes", np.asarray(sizes).reshape(-1, 1), 1)
        lengths = lengths.reshape(-1)
        if len(lengths) != len(srcs):
            raise ValueError(
                f"sizes has {len(lengths)} entries for {len(srcs)} URIs (one size per URI)"
            )
        for i, n in enumerate(lengths.tolist()):
            check_int(f"sizes[{i}] ({srcs[i].display})", n, 0, _MAX_SIZE)
        if sum(lengths.tolist()) + ALIGN * len(srcs) > _MAX_SIZE:
            raise ValueError(f"read_many: sizes add up to more than {_MAX_SIZE} bytes")
    starts = _starts(lengths)
    total = int(starts[-1]) if len(starts) else 0
    if out is None:
        pool = _pool(engine)
        slab = pool.acquire(max(total, 1))
        view = memoryview(slab)
        pool.release(slab)  # from here on only the views returned keep it busy
    else:
        view = _flat(out)
    if view.readonly:
        raise ValueError("read_many: the destination buffer (out=) is read-only")
    if view.nbytes < total:
        raise ValueError(
            f"read_many: out= holds {view.nbytes} bytes, {total} are needed "
            f"({len(srcs)} objects, each starting on a {ALIGN}-byte boundary)"
        )
    table = np.stack(
        [np.arange(len(srcs), dtype=np.int64), np.zeros(len(srcs), np.int64), lengths, starts[:-1]],
        axis=1,
    )
    table = table[lengths > 0]
    if len(table):
        engine.read_into(srcs, table, view, settings=settings or engine.settings)
    ends = starts[:-1] + lengths
    return [view[a:b] for a, b in zip(starts[:-1].tolist(), ends.tolist(), strict=True)]


def _flat(out: Any) -> memoryview:
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(
            f"read_many: out= must support the buffer protocol, got {type(out).__name__}"
        ) from None
    # before the cast below hides it: bytes written over an object array's pointers crash
    check_plain_buffer("read_many: the destination buffer (out=)", view.format)
    if view.readonly:
        raise ValueError("read_many: the destination buffer (out=) is read-only")
    if view.format == "B" and view.ndim == 1:
        return view
    if not view.c_contiguous:
        raise ValueError("read_many: the destination buffer (out=) is not C-contiguous")
    return view.cast("B")


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Slab offset of each object (64-byte aligned), then the slab's size."""
    padded = (lengths + (ALIGN - 1)) // ALIGN * ALIGN
    return np.concatenate(([0], np.cumsum(padded))).astype(np.int64)


def slab_bytes(sizes: Sequence[int] | np.ndarray) -> int:
    """Bytes an ``out=`` buffer needs for objects of ``sizes``."""
    lengths = np.asarray(sizes, dtype=np.int64).reshape(-1)
    return int(_starts(lengths)[-1])
