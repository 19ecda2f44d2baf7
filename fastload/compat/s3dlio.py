"""s3dlio's Python surface for reading and loading, on fastload's engine and loader.

``import fastload.compat.s3dlio as s3dlio`` and an s3dlio script that reads and loads runs
unchanged: ``get``, ``get_many``, ``get_range``, ``list``, ``stat``, ``exists``,
``configure_s3``, ``create_dataset``, ``create_async_loader``, ``PyDataset``,
``PyVecDataset``, ``PyAsyncDataLoader``, ``PyBytesAsyncDataLoader`` and ``PyLoaderOptions``
(fastload's ``LoaderOptions``: ``from_dict`` takes s3dlio's ``to_dict()``).

Return types follow s3dlio where code depends on them: object bytes come back as
:class:`BytesView` (zero-copy, buffer protocol, ``len``, ``bytes()``, ``.memoryview()``,
``.to_bytes()``; unlike s3dlio's it also compares equal to ``bytes`` of the same content),
``get_many`` as ``[(uri, BytesView)]``, ``stat`` as a dict with ``size``,
``last_modified`` and ``etag``, loaders iterate with ``for`` and ``async for``.

Not covered, on purpose: writes (``put``, ``put_bytes``, ``put_many``, ``upload``,
``delete``, ``mkdir``, buckets, checkpoints, writers). fastload is a read path (ranged reads
into aligned buffers for training loops); it has no upload, multipart or delete code, and a
half-working write would be worse than none. Those names raise ``AttributeError`` saying so;
use s3dlio or boto3 for writes. Also not covered: s3dlio's ``az://`` and ``gs://`` schemes
(fastload reads files, ``direct://``, ``http(s)://`` and ``s3://``) and the Parquet mode of
``create_async_loader`` (use :class:`fastload.plan.parquet_dataset.ParquetDataset`).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as _dt
import difflib
import os
import re
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from fastload.checks import check_bool, check_int, fail, is_int
from fastload.errors import FastloadError
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import ObjectDataset
from fastload.plan.options import FIELD_NAMES, LoaderOptions
from fastload.plan.s3dlio_options import from_s3dlio_dict
from fastload.plan.samplers import make_sampler
from fastload.storage.engine import RangeEngine
from fastload.storage.network_options import NetworkOptions
from fastload.storage.read_many import object_sizes
from fastload.storage.read_settings import MAX_INFLIGHT_PARTS
from fastload.storage.uri import ParsedURI, parse_uri, redact

PyLoaderOptions = LoaderOptions

_engine: RangeEngine | None = None
_engine_options: dict[str, Any] = {}
_engine_lock = threading.Lock()

# s3dlio loader keys with no fastload counterpart that change nothing here: skip_head
# (fastload never HEADs an object whose size a listing gave) and max_threads (the engine's
# native threads are per call, set by max_inflight_parts).
_NO_OP_KEYS = ("skip_head", "max_threads")
WRITE_NAMES = (
    "put",
    "put_bytes",
    "put_bytes_async",
    "put_many",
    "put_many_async",
    "put_async",
    "upload",
    "download",
    "delete",
    "delete_bucket",
    "create_bucket",
    "mkdir",
    "mkdir_async",
    "save_checkpoint",
    "save_distributed_shard",
    "finalize_distributed_checkpoint",
    "create_s3_writer",
    "create_filesystem_writer",
    "create_direct_filesystem_writer",
    "create_azure_writer",
    "MultipartUploadWriter",
    "PyObjectWriter",
    "PyCheckpointWriter",
    "PyCheckpointStore",
)


def __getattr__(name: str) -> Any:
    if name in WRITE_NAMES:
        raise AttributeError(
            f"fastload.compat.s3dlio does not cover writes ({name}): fastload is a read path "
            "for training loops and has no upload or delete code; use s3dlio or boto3 to write"
        )
    raise AttributeError(f"module 'fastload.compat.s3dlio' has no attribute {name!r}")


# -- bytes -----------------------------------------------------------------------------


class BytesView(np.ndarray):
    """An object's bytes: a zero-copy uint8 view (buffer protocol, ``len``, ``bytes()``),
    equal to any bytes-like object of the same content; s3dlio's ``memoryview()`` and
    ``to_bytes()`` methods."""

    def __new__(cls, data: Any) -> BytesView:
        return np.frombuffer(data, dtype=np.uint8).view(cls)

    def memoryview(self) -> memoryview:
        return memoryview(self)  # type: ignore[arg-type]  # numpy's stubs lag the buffer protocol

    def to_bytes(self) -> bytes:
        return self.tobytes()

    def __eq__(self, other: object) -> Any:  # type: ignore[override]
        try:
            theirs = memoryview(other)  # type: ignore[arg-type]
        except TypeError:
            return NotImplemented
        mine = memoryview(self)  # type: ignore[arg-type]
        if theirs.format != "B" or theirs.ndim != 1:
            theirs = theirs.cast("B") if theirs.c_contiguous else memoryview(theirs.tobytes())
        return mine.nbytes == theirs.nbytes and mine == theirs

    def __ne__(self, other: object) -> Any:  # type: ignore[override]
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BytesView({self.nbytes} bytes)"

    __str__ = __repr__

    def __array_wrap__(self, obj: Any, context: Any = None, return_scalar: bool = False) -> Any:
        # arithmetic on the bytes gives plain arrays, not more BytesViews
        return np.asarray(obj) if not return_scalar else obj[()]


def _views(data: np.ndarray, bounds: Sequence[int]) -> builtins.list[BytesView]:
    base = data.view(BytesView)
    return [base[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]  # type: ignore[misc]


# -- the engine ------------------------------------------------------------------------


def engine() -> RangeEngine:
    """The engine every call of this module reads with (``configure_s3`` replaces it)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = RangeEngine(**_engine_options)
        return _engine


def configure_s3(
    endpoint_url: str | None = None, region: str | None = None, ca_bundle: str | None = None
) -> None:
    """s3dlio's endpoint / region / CA bundle setting: every later call uses them (the
    other settings come from the AWS environment and profile files, as in s3dlio)."""
    global _engine
    new = {
        k: v
        for k, v in (("endpoint_url", endpoint_url), ("region", region), ("ca_bundle", ca_bundle))
        if v is not None
    }
    with _engine_lock:  # checked first: a bad value kept would break every later call
        NetworkOptions.from_kwargs(**{**_engine_options, **new})
        _engine_options.update(new)
        old, _engine = _engine, None
    if old is not None:
        old.close()


def _src(uri: str) -> ParsedURI:
    if not isinstance(uri, str):
        raise TypeError(f"a URI must be a str, not {type(uri).__name__}: {uri!r}")
    return parse_uri(uri)


def get(uri: str) -> BytesView:
    """The whole object."""
    return BytesView(engine().read(_src(uri)))


def get_range(uri: str, offset: int, length: int | None = None) -> BytesView:
    """``length`` bytes at ``offset`` (to the end when ``length`` is None)."""
    src = _src(uri)
    offset = check_int("offset", offset, 0, type_error=True)  # "5" or 1.5 would be truncated
    length = check_int("length", length, 0, optional=True, type_error=True)
    eng = engine()
    if length is None:
        length = eng.size(src) - offset
        if length < 0:
            raise ValueError(f"{src.display}: offset {offset} is past the end of the object")
    if length == 0:
        return BytesView(b"")
    return BytesView(eng.read_ranges(src, [(offset, length)]))


def get_many(uris: Iterable[str], max_in_flight: int = 64) -> builtins.list[tuple[str, BytesView]]:
    """Every object, ``[(uri, BytesView)]`` in the order given, read in one engine call
    (``max_in_flight`` transfers for http(s)/s3; local files use the engine's threads)."""
    max_in_flight = check_int("max_in_flight", max_in_flight, 1, MAX_INFLIGHT_PARTS)
    names = builtins.list(uris)
    srcs = [_src(u) for u in names]
    eng = engine()
    settings = eng.settings
    if srcs and not any(s.is_local for s in srcs):
        settings = settings.replace(max_inflight_parts=max_in_flight)
    views = eng.read_many(srcs, settings=settings)
    return [(u, BytesView(v)) for u, v in zip(names, views, strict=True)]


def list(uri: str, recursive: bool = False, pattern: str | None = None) -> builtins.list[str]:
    """Full URIs under a prefix; ``recursive=False`` shows the next level only (deeper
    objects as their ``sub/`` folder, once); ``pattern``: a regular expression searched in
    the part after the prefix."""
    src = _src(uri)
    recursive = check_bool("recursive", recursive)
    regex = None
    if pattern is not None:
        if not isinstance(pattern, str):
            raise fail(
                "pattern", pattern, "must be a regular expression (a str) or None", TypeError
            )
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise fail("pattern", pattern, f"is not a regular expression: {exc}") from None
    prefix = uri if uri.endswith("/") or src.scheme == "s3" else uri + "/"
    listed = engine().list(src)
    out: builtins.list[str] = []
    seen: set[str] = set()
    for full in listed:
        rest = _relative(full, src, prefix)
        if not recursive and "/" in rest:
            rest = rest.split("/", 1)[0] + "/"
        name = prefix + rest
        if name in seen or (regex is not None and not regex.search(rest)):
            continue
        seen.add(name)
        out.append(name)
    return out


def _relative(full: str, src: ParsedURI, prefix: str) -> str:
    if src.is_local:
        path = parse_uri(full).path
        return os.path.relpath(path, src.path).replace(os.sep, "/")
    return full[len(prefix) :] if full.startswith(prefix) else parse_uri(full).path


def stat(uri: str) -> dict[str, Any]:
    """``{"size", "last_modified", "etag"}`` (None where the storage does not say);
    raises on any failure, a missing object included (use ``exists`` for a bool)."""
    src = _src(uri)
    eng = engine()
    if src.is_local:
        if not os.path.isfile(src.path):
            eng.size(src)  # raises the engine's error naming the URI
        st = os.stat(src.path)
        modified = _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).isoformat()
        return {"size": st.st_size, "last_modified": modified, "etag": None}
    backend = eng.backend(src.scheme)
    if src.scheme == "s3":
        info = backend.stat(src)
        return {"size": info["size"], "last_modified": info["last_modified"], "etag": info["etag"]}
    return {"size": backend.size(src), "last_modified": None, "etag": None}


def exists(uri: str) -> bool:
    """True when the object exists; False otherwise, and also when it could not be checked
    (a bad URI, credentials, the network), as s3dlio's ``exists``: use ``stat`` to see why."""
    try:
        stat(uri)
    except (FastloadError, OSError, ValueError, TypeError):
        return False
    return True


# -- datasets --------------------------------------------------------------------------


def _loader_options(opts: Any, *, bytes_loader: bool = False) -> LoaderOptions:
    """s3dlio's loader options (a dict, or a PyLoaderOptions) as fastload's."""
    if opts is None:
        return LoaderOptions()
    if isinstance(opts, LoaderOptions):
        return opts
    if not isinstance(opts, Mapping):
        raise TypeError(f"opts must be a dict or PyLoaderOptions, not {type(opts).__name__}")
    data = {k: v for k, v in opts.items() if k not in _NO_OP_KEYS}
    for key in ("format", "columns", "footer_cap", "decode"):
        if key in data:
            raise ValueError(
                f"opts[{key!r}] (s3dlio's Parquet mode) is not covered by fastload.compat.s3dlio; "
                "use fastload.plan.parquet_dataset.ParquetDataset"
            )
    if bytes_loader and "prefetch" in data and "max_inflight_parts" not in data:
        # s3dlio's prefetch here is GETs in flight; fastload's prefetch is batches ahead
        data["max_inflight_parts"] = data.pop("prefetch") or None
    data = from_s3dlio_dict(data)
    unknown = [k for k in data if k not in FIELD_NAMES]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), FIELD_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"opts: unknown s3dlio loader option {unknown[0]!r}{hint}")
    return LoaderOptions(**data)


class PyDataset:
    """Objects under a prefix (or one object), or a URI list with :meth:`from_uris`;
    ``keys()``, ``uris()``, ``len()`` and ``await get_item(i)``."""

    def __init__(self, uri: str, opts: Any = None) -> None:
        src = _src(uri)
        _loader_options(opts, bytes_loader=True)  # a typo fails here, not at the loader
        self._opts = opts
        eng = engine()
        if uri.endswith("/") or (src.is_local and os.path.isdir(src.path)):
            prefix = uri if uri.endswith("/") else uri + "/"
            self._uris = eng.list(src)
            self._keys = [_relative(u, src, prefix) for u in self._uris]
            if not self._uris:
                raise ValueError(f"PyDataset: no objects under {src.display}")
        else:
            self._uris, self._keys = [uri], [src.path.rsplit("/", 1)[-1]]
        self._objects: ObjectDataset | None = None

    @classmethod
    def from_uris(cls, uris: Iterable[str], opts: Any = None) -> PyDataset:
        names = [str(u) for u in uris]
        if not names:
            raise ValueError("PyDataset.from_uris: the list of URIs is empty")
        for u in names:
            _src(u)
        _loader_options(opts, bytes_loader=True)
        ds = cls.__new__(cls)
        ds._opts = opts
        ds._uris = names
        ds._keys = [parse_uri(u).path.rsplit("/", 1)[-1] for u in names]
        ds._objects = None
        return ds

    def __len__(self) -> int:
        return len(self._uris)

    def keys(self) -> builtins.list[str]:
        return builtins.list(self._keys)

    def uris(self) -> builtins.list[str]:
        return builtins.list(self._uris)

    def objects(self) -> ObjectDataset:
        """The fastload dataset of these objects (sizes found once, in one pass)."""
        if self._objects is None:
            eng = engine()
            srcs = [parse_uri(u) for u in self._uris]
            self._objects = ObjectDataset(
                [s.uri for s in srcs], sizes=object_sizes(eng, srcs), engine=eng
            )
        return self._objects

    async def get_item(self, index: int) -> BytesView:
        if not is_int(index):  # True is no index, nor "0"
            raise fail("index", index, "must be an integer", TypeError)
        n = len(self._uris)
        if not -n <= index < n:
            raise IndexError(f"PyDataset index {index} out of range for {n} objects")
        return await asyncio.get_running_loop().run_in_executor(None, get, self._uris[index])


def create_dataset(uri: str, opts: Any = None) -> PyDataset:
    return PyDataset(uri, opts)


class PyVecDataset:
    """An in-memory list of items (s3dlio's test dataset)."""

    def __init__(self, obj: Iterable[Any]) -> None:
        self._items = builtins.list(obj)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        return self._items[index]


# -- loaders ---------------------------------------------------------------------------


class _Loader:
    """``for`` and ``async for`` over the batches of ``_batches()`` (one epoch per iter)."""

    def _batches(self) -> Iterator[builtins.list[Any]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def __aiter__(self) -> AsyncIterator[builtins.list[Any]]:
        return _AsyncBatches(self._batches())


class _AsyncBatches:
    """Each ``__anext__`` waits for the next batch on a thread, so the event loop runs on."""

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it

    def __aiter__(self) -> _AsyncBatches:
        return self

    async def __anext__(self) -> Any:
        done = object()
        item = await asyncio.get_running_loop().run_in_executor(None, next, self._it, done)
        if item is done:
            raise StopAsyncIteration
        return item


class PyAsyncDataLoader(_Loader):
    """Batches (lists) of a dataset's items in the sampler's order: ``batch_size``,
    ``drop_last``, ``shuffle``/``seed`` and the sampler knobs act as in fastload's loader.
    A :class:`PyDataset` gives lists of :class:`BytesView`."""

    def __init__(self, dataset: PyVecDataset | PyDataset, opts: Any = None) -> None:
        if not isinstance(dataset, (PyVecDataset, PyDataset)):
            raise TypeError(
                f"PyAsyncDataLoader needs a PyVecDataset or PyDataset, not {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.options = _loader_options(opts)
        self._epoch = 0

    def _batches(self) -> Iterator[builtins.list[Any]]:
        if isinstance(self.dataset, PyDataset):
            yield from _object_batches(self.dataset, self.options)
            return
        cfg = self.options.config
        order = make_sampler(cfg, len(self.dataset)).indices(self._epoch)
        self._epoch += 1
        items = self.dataset._items
        step = cfg.batch_size
        stop = len(order) - len(order) % step if cfg.drop_last else len(order)
        for a in range(0, stop, step):
            yield [items[i] for i in order[a : a + step].tolist()]


def _object_batches(dataset: PyDataset, options: LoaderOptions) -> Iterator[builtins.list[Any]]:
    with DataLoader(dataset.objects(), options, engine=engine()) as dl:
        for batch in dl:
            yield _views(batch.data, batch.offsets.tolist())


class ObjectItem:
    """One object of :meth:`PyBytesAsyncDataLoader.items`: ``uri``, ``byte_count``,
    ``len()``, ``bytes()`` and the buffer as ``data`` (a :class:`BytesView`)."""

    __slots__ = ("data", "uri")

    def __init__(self, uri: str, data: BytesView) -> None:
        self.uri = uri
        self.data = data

    @property
    def byte_count(self) -> int:
        return int(self.data.nbytes)

    def __len__(self) -> int:
        return int(self.data.nbytes)

    def __bytes__(self) -> bytes:
        return self.data.tobytes()

    def __repr__(self) -> str:
        return f"ObjectItem({redact(self.uri)!r}, {self.byte_count} bytes)"


class ObjectItems:
    """The iterator of :meth:`PyBytesAsyncDataLoader.items`, with ``collect_batch(n)``."""

    def __init__(self, it: Iterator[ObjectItem]) -> None:
        self._it = it

    def __iter__(self) -> ObjectItems:
        return self

    def __next__(self) -> ObjectItem:
        return next(self._it)

    def collect_batch(self, n: int) -> builtins.list[ObjectItem]:
        """Up to ``n`` next items; an empty list at the end of the epoch."""
        n = check_int("n", n, 1, type_error=True)
        out = []
        for item in self._it:
            out.append(item)
            if len(out) >= n:
                break
        return out


class PyBytesAsyncDataLoader(_Loader):
    """Objects of a :class:`PyDataset` through fastload's loader. ``for view in loader``
    gives one :class:`BytesView` per object, ``async for batch in loader`` lists of
    ``batch_size`` of them, ``items()`` :class:`ObjectItem` s with their URI. ``prefetch``
    is s3dlio's: GETs in flight (fastload's ``max_inflight_parts``)."""

    def __init__(self, dataset: PyDataset, opts: Any = None) -> None:
        if not isinstance(dataset, PyDataset):
            raise TypeError(
                f"PyBytesAsyncDataLoader needs a PyDataset, not {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.options = _loader_options(opts, bytes_loader=True)

    def _batches(self) -> Iterator[builtins.list[Any]]:
        return _object_batches(self.dataset, self.options)

    def __iter__(self) -> Iterator[Any]:
        return (view for batch in self._batches() for view in batch)

    def items(self) -> ObjectItems:
        uris = self.dataset.uris()
        ds = self.dataset.objects()

        def gen() -> Iterator[ObjectItem]:
            with DataLoader(ds, self.options, engine=engine()) as dl:
                order = dl.sampler.indices(dl.epoch).tolist()  # the epoch iter() runs
                done = 0
                for batch in dl:
                    views = _views(batch.data, batch.offsets.tolist())
                    for i, view in zip(order[done : done + len(views)], views, strict=True):
                        yield ObjectItem(uris[i], view)
                    done += len(views)

        return ObjectItems(gen())


def create_async_loader(uri: str, opts: Any = None) -> PyBytesAsyncDataLoader:
    """A bytes loader over the objects at ``uri`` (s3dlio's convenience function)."""
    return PyBytesAsyncDataLoader(PyDataset(uri, opts), opts)


__all__ = [
    "BytesView",
    "ObjectItem",
    "PyAsyncDataLoader",
    "PyBytesAsyncDataLoader",
    "PyDataset",
    "PyLoaderOptions",
    "PyVecDataset",
    "configure_s3",
    "create_async_loader",
    "create_dataset",
    "engine",
    "exists",
    "get",
    "get_many",
    "get_range",
    "list",
    "stat",
]
