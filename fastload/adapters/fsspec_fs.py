"""An fsspec filesystem on the range engine, for loaders that read through fsspec.

pyarrow, pandas, zarr, Hugging Face ``datasets`` and webdataset open files through fsspec;
``fastload.filesystem(**engine_options)`` gives them fastload's engine: ``cat_file``,
``cat_ranges`` (every range of every path in one engine call, neighbours coalesced),
``open`` (a random-access file whose reads go through the engine, with read-ahead),
``info``, ``ls``, ``find``, ``glob``, ``exists``. Reads only: fastload has no write path.

Paths are the engine's URIs: ``s3://bucket/key``, ``http(s)://host/path``, ``file:///abs``
or a plain local path. Under the fsspec protocol ``fastload`` (the ``fsspec.specs`` entry
point), ``fastload://s3://bucket/key`` names the same object, so
``fsspec.open("fastload://s3://b/k")`` and ``pandas.read_parquet("fastload://s3://b/k.parquet",
storage_options={"endpoint_url": ...})`` work. Listings: S3 answers as s3fs does on the same
bucket (``ls`` one level, a delimiter listing kept in ``dircache``; ``find`` one recursive
listing per call; ``info`` a HEAD, else whether the prefix holds anything; ``modified``,
``ETag`` and ``LastModified`` as s3fs gives them); local folders with ``os.scandir`` /
``os.walk``; http(s) has no listing. fsspec is imported only with this module.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import os
import re
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import fsspec
import numpy as np
from fsspec.caching import BaseCache
from fsspec.spec import AbstractBufferedFile

from fastload.adapters.column_read_ahead import ColumnChunkReadAhead, SharedReadAhead
from fastload.adapters.idle_threads import IdleThreadPool
from fastload.checks import check_int, is_int
from fastload.errors import FastloadError, ObjectNotFoundError
from fastload.storage.engine import RangeEngine
from fastload.storage.fetch_buffers import FetchBufferPool
from fastload.storage.s3_listing import tag_text
from fastload.storage.secret import SECRET_OPTIONS, RedactedOptions
from fastload.storage.uri import ParsedURI, parse_uri, redact

PROTOCOL = "fastload"
DEFAULT_BLOCK_SIZE = 4 << 20  # read-ahead of open files: one engine call fetches this much more
DEFAULT_MAX_GAP = 64 << 10  # cat_ranges reads a gap up to this size rather than split a request
# Parquet column chunks read ahead per open file (bytes in flight and held). 128 MiB keeps
# several chunks in flight at once, as pyarrow's own S3 filesystem has; see
# column_read_ahead.py for why a Python file needs it.
DEFAULT_COLUMN_READ_AHEAD = 128 << 20
# ... and per filesystem, over all its open files (pyarrow.dataset keeps many files open)
DEFAULT_COLUMN_READ_AHEAD_TOTAL = 512 << 20
COLUMN_READ_AHEAD_THREADS = 8  # pyarrow's default IO thread count
READ_AHEAD_IDLE_SECONDS = 10.0  # the read-ahead threads end when idle this long
# Idle bytes of read buffers an open file's reads reuse (see fastload.storage.fetch_buffers:
# fresh memory per read cost 0.3-1.4 s of system time per 578 MB here). 1 GiB, or an eighth
# of the machine's memory when that is less; freed after 10 s unused.
DEFAULT_FETCH_BUFFERS = min(1 << 30, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8)


def _local_info(path: str, name: str) -> dict[str, Any]:
    st = os.stat(path)
    kind = "directory" if os.path.isdir(path) else "file"
    return {
        "name": name,
        "size": st.st_size if kind == "file" else 0,
        "type": kind,
        "mtime": st.st_mtime,
    }


class SequentialReadAhead(BaseCache):
    """Read-ahead where it pays: a small read (under ``blocksize``) that continues the
    previous one fetches ``blocksize`` more bytes with it; a read elsewhere, or one of
    ``blocksize`` or more (a Parquet column chunk, a zarr chunk: a caller that knows its
    ranges), fetches just what it asks for, so neither random access nor a big read drags
    extra bytes in. The last fetch is kept: re-reads and reads inside it cost no request.

    Why big reads get none: pyarrow reading 4 of 8 columns reads c1 then c2 (adjacent, so
    "sequential") then skips to c5; a block after each such read was 64 MiB fetched and
    dropped of 608 MiB for bench_fsspec's ~1 GB file."""

    name = "fastload-sequential"

    def __init__(self, blocksize: int, fetcher: Any, size: int) -> None:
        super().__init__(blocksize, fetcher, size)
        self.held: memoryview = memoryview(b"")
        self.start = self.end = 0
        self.last_end = -1

    def _fetch(self, start: int | None, stop: int | None) -> bytes:
        return bytes(self.fetch_view(start, stop))

    def fetch_view(self, start: int | None, stop: int | None) -> memoryview:
        """The bytes [start, stop) as a view of the fetched buffer (no copy)."""
        a = 0 if start is None else start
        b = self.size if stop is None else min(stop, self.size)
        if a >= b:
            return memoryview(b"")
        ahead = a == self.last_end and b - a < self.blocksize
        self.last_end = b
        if self.start <= a and b <= self.end:
            self.hit_count += 1
            return self.held[a - self.start : b - self.start]
        self.miss_count += 1
        end = min(self.size, b + self.blocksize) if ahead else b
        self.total_requested_bytes += end - a
        self.held = self.fetcher(a, end)
        self.start, self.end = a, end
        return self.held[: b - a]


class FastloadFile(AbstractBufferedFile):
    """A read-only random-access file: each cache miss is one engine read (its parts read
    in parallel), with :class:`SequentialReadAhead` of ``block_size`` bytes."""

    def __init__(
        self,
        fs: FastloadFileSystem,
        path: str,
        block_size: int,
        size: int,
        column_read_ahead: int = DEFAULT_COLUMN_READ_AHEAD,
    ) -> None:
        super().__init__(fs, path, mode="rb", block_size=block_size, cache_type="none", size=size)
        # the caches call back through weak references: pyarrow drops a file without closing
        # it, and a file in no reference cycle is freed (its buffers with it) at once, not at
        # the next full garbage collection
        me = weakref.WeakMethod(self._fetch_view)
        read = weakref.WeakMethod(self._engine_read)
        self.cache = SequentialReadAhead(self.blocksize, _call(me), self.size)
        self.columns = ColumnChunkReadAhead(
            _call(read),
            self.size,
            column_read_ahead,
            fs._read_ahead_pool,
            fs._read_ahead,
            (path, self.size),
        )

    def _fetch_view(self, start: int, end: int) -> memoryview:
        view = self.columns.take(start, end)
        if view is None:
            view = self._engine_read(start, end)
        self.columns.saw(start, end, view)
        return view

    def _engine_read(self, start: int, end: int) -> memoryview:
        # one engine call: parts of the engine's part_size read in parallel (measured over
        # rclone S3: cutting pyarrow's 17 MB column chunks into 8 or 4 MiB parts was slower
        # than the default 32 MiB parts, 650 / 530-600 MB/s against 680-760)
        fs: FastloadFileSystem = self.fs
        view = fs._fetch_buffers.take(end - start)
        fs.engine.read_ranges(fs._src(self.path), [(start, end - start)], out=view)
        return view

    def __repr__(self) -> str:  # fsspec's shows the path: a URL may hold a password
        return f"<File-like object {type(self.fs).__name__}, {redact(self.path)}>"

    def seek(self, loc: int, whence: int = 0) -> int:
        if self.closed:  # as io's files: fsspec's would move a closed file
            raise ValueError("I/O operation on closed file.")
        return super().seek(loc, whence)

    def close(self) -> None:
        self.columns.close()
        super().close()

    def read_buffer(self, nbytes: int = -1) -> memoryview:
        """A read without a copy: a view of the engine's buffer. pyarrow's PythonFile calls
        this instead of ``read`` when a file has it (``read`` still returns bytes)."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        left = self.size - self.loc
        n = left if nbytes is None or nbytes < 0 else min(int(nbytes), left)
        if n <= 0:
            return memoryview(b"")
        view = self.cache.fetch_view(self.loc, self.loc + n)
        self.loc += len(view)
        return view

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        return bytes(self._fetch_view(start, end)) if end > start else b""

    def _upload_chunk(self, final: bool = False) -> bool:
        raise NotImplementedError("fastload's filesystem is read-only")

    def _initiate_upload(self) -> None:
        raise NotImplementedError("fastload's filesystem is read-only")


def _call(method: weakref.WeakMethod) -> Any:
    """A function calling ``method`` while its file lives (a closed, freed file: a read of
    it is an error)."""

    def call(start: int, end: int) -> memoryview:
        bound = method()
        if bound is None:
            raise ValueError("I/O operation on closed file.")
        return bound(start, end)

    return call


class FastloadFileSystem(fsspec.AbstractFileSystem):
    """fsspec over a :class:`~fastload.storage.engine.RangeEngine`.

    ``engine``: the engine to read with (else one is made from ``engine_options``:
    ``endpoint_url``, ``region``, credentials, ``part_size``, ``max_inflight_parts`` ...);
    ``block_size``: read-ahead of open files; ``max_gap``: gap that ``cat_ranges`` reads
    through to join two ranges into one request; ``column_read_ahead``: bytes of Parquet
    column chunks an open file reads ahead in the background once a reader reads whole
    column chunks (0: none; see :mod:`fastload.adapters.column_read_ahead`);
    ``column_read_ahead_total``: the same, over all open files of this filesystem;
    ``fetch_buffers``: idle bytes of open files' read buffers kept for the next reads to
    reuse (0: every read allocates; see :mod:`fastload.storage.fetch_buffers`).
    """

    protocol = (PROTOCOL,)
    root_marker = ""
    cachable = True

    def __init__(
        self,
        engine: RangeEngine | None = None,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_gap: int = DEFAULT_MAX_GAP,
        column_read_ahead: int = DEFAULT_COLUMN_READ_AHEAD,
        column_read_ahead_total: int = DEFAULT_COLUMN_READ_AHEAD_TOTAL,
        fetch_buffers: int = DEFAULT_FETCH_BUFFERS,
        **engine_options: Any,
    ) -> None:
        engine_options.pop("asynchronous", None)  # fsspec / zarr pass it; the engine is sync
        # fsspec's listing-cache options (its DirCache, made from the same options, keeps
        # them): not the engine's
        listing_options = {
            k: engine_options.pop(k) for k in _DIRCACHE_OPTIONS if k in engine_options
        }
        super().__init__(
            engine=engine,
            block_size=block_size,
            max_gap=max_gap,
            column_read_ahead=column_read_ahead,
            column_read_ahead_total=column_read_ahead_total,
            fetch_buffers=fetch_buffers,
            **listing_options,
            **engine_options,
        )
        self.engine = engine if engine is not None else RangeEngine(**engine_options)
        if engine is None:
            # fsspec caches instances until exit; an engine whose connections were used from
            # other threads (zarr's, pyarrow's) must close before the interpreter tears down
            weakref.finalize(self, self.engine.close)
        self.blocksize = check_int("block_size", block_size, 0)
        self.max_gap = check_int("max_gap", max_gap, 0)
        self.column_read_ahead = check_int("column_read_ahead", column_read_ahead, 0)
        self._threads = IdleThreadPool(
            COLUMN_READ_AHEAD_THREADS, "fastload-fsspec", READ_AHEAD_IDLE_SECONDS
        )
        weakref.finalize(self, self._threads.shutdown, wait=False, cancel_futures=True)
        self.column_read_ahead_total = check_int(
            "column_read_ahead_total", column_read_ahead_total, 0
        )
        self._read_ahead = SharedReadAhead(budget=self.column_read_ahead_total)
        self._fetch_buffers = FetchBufferPool(check_int("fetch_buffers", fetch_buffers, 0))

    # fsspec keeps the options (set after __init__) to pickle and rebuild the filesystem:
    # their repr (a debugger, vars(fs), a log line) must not show the secret key or token
    @property
    def storage_options(self) -> dict[str, Any]:
        return self._storage_options

    @storage_options.setter
    def storage_options(self, options: dict[str, Any]) -> None:
        self._storage_options = RedactedOptions(options)

    def to_dict(self, *, include_password: bool = True) -> dict[str, Any]:
        """fsspec's, and ``include_password=False`` leaves out the secret key and token too
        (fsspec's own leaves out ``password`` alone)."""
        out = super().to_dict(include_password=include_password)
        if not include_password:
            for name in SECRET_OPTIONS:
                out.pop(name, None)
        return out

    def column_read_ahead_stats(self) -> dict[str, int]:
        """Column chunks the open files of this filesystem read ahead, how many of those a
        reader then asked for (the rest were dropped or are still held), and the bytes
        read ahead now in flight or held (bounded by ``column_read_ahead_total``)."""
        shared = self._read_ahead
        return {
            "read_ahead": shared.started,
            "taken": shared.taken,
            "held_bytes": shared.held_bytes,
        }

    def _read_ahead_pool(self) -> IdleThreadPool:
        """The threads of open files' column read-ahead: started on first use, ended once
        idle for READ_AHEAD_IDLE_SECONDS (a later fork finds none), made anew in a child."""
        return self._threads

    # -- paths --------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, (list, tuple)):
            return [cls._strip_protocol(p) for p in path]
        path = os.fspath(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :]
        elif path.startswith(f"{PROTOCOL}::"):
            path = path[len(PROTOCOL) + 2 :]
        if path.endswith("/") and not path.endswith("://") and len(path) > 1:
            path = path.rstrip("/")
        return path

    @classmethod
    def _parent(cls, path: str) -> str:
        path = cls._strip_protocol(path)
        scheme, sep, rest = path.rpartition("://")
        head = rest.rpartition("/")[0]
        return f"{scheme}{sep}{head}" if head else f"{scheme}{sep}{rest}"

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{name}"

    def _src(self, path: str) -> ParsedURI:
        return parse_uri(_uri_of(self._strip_protocol(path))[0])

    # -- metadata -----------------------------------------------------------------------
    # S3 as s3fs sees it: ``ls`` is one level (a delimiter listing, so an empty folder
    # shows), kept in ``dircache`` (fsspec's ``use_listings_cache``,
    # ``listings_expiry_time``, ``max_paths``; ``refresh=True`` or ``invalidate_cache``
    # list again); ``find`` without ``maxdepth`` is one recursive listing, every call;
    # ``info`` HEADs an object, else asks whether the prefix holds anything. A trailing
    # '/' names the folder when a key is both an object and a prefix.
    def info(self, path: str, refresh: bool = False, **kwargs: Any) -> dict[str, Any]:
        _refuse_versions(path, kwargs)
        name, slashed = _uri_of(self._strip_protocol(path))
        return _slashed(self._info(name, _names_folder(path), refresh), slashed)

    def _info(self, name: str, folder: bool = False, refresh: bool = False) -> dict[str, Any]:
        src = parse_uri(name)
        if src.is_local:
            try:
                return _local_info(src.path, name)
            except FileNotFoundError:
                raise FileNotFoundError(name) from None
        if src.scheme == "s3":
            directory = {"name": name, "size": 0, "type": "directory"}
            if not src.path:  # a bucket is there when it can be listed (empty or not)
                self._s3().list_dir(src, max_keys=1)
                return directory
            if folder and self._s3_is_dir(src, refresh):
                return directory
            try:
                return self._s3_object(src, name)
            except ObjectNotFoundError:
                pass
            if not folder and self._s3_is_dir(src, refresh):
                return directory
            raise FileNotFoundError(name)
        return {"name": name, "size": self.engine.size(src), "type": "file"}

    def _s3(self) -> Any:
        return self.engine.backend("s3")

    def _s3_object(self, src: ParsedURI, name: str) -> dict[str, Any]:
        """An object's info from a HEAD (ObjectNotFoundError when there is none)."""
        meta = self._s3().stat(src)
        return _file_entry(name, meta["size"], meta["etag"], meta["last_modified"])

    def _s3_dir(self, src: ParsedURI, refresh: bool = False) -> list[dict[str, Any]] | None:
        """The entries one level under an S3 prefix (or bucket), from a delimiter listing
        kept in ``dircache``; None when nothing is under the prefix (no object, folder or
        directory marker: no such folder)."""
        key = src.path.rstrip("/")
        name = _s3_uri(src.bucket, key)
        if not refresh:
            hit = self.dircache.get(name)
            if hit is not None:
                return hit
        page = self._s3().list_dir(parse_uri(_s3_uri(src.bucket, key + "/")) if key else src)
        if key and not (page.keys or page.prefixes or page.markers):
            return None
        entries = [
            _file_entry(_s3_uri(src.bucket, k), n, tag_text(e), tag_text(m))
            for k, n, e, m in zip(page.keys, page.sizes, page.etags, page.mtimes, strict=True)
        ]
        entries += [
            {"name": f"s3://{src.bucket}/{p[:-1]}", "size": 0, "type": "directory"}
            for p in page.prefixes
        ]
        entries.sort(key=lambda d: d["name"])
        self.dircache[name] = entries
        return entries

    def _s3_is_dir(self, src: ParsedURI, refresh: bool = False) -> bool:
        """Whether an S3 prefix holds anything: a cached listing says so, else a one-entry
        listing of it is asked for (an object of the same name does not count)."""
        key = src.path.rstrip("/")
        name = _s3_uri(src.bucket, key)
        if not key:
            return self._s3_dir(src, refresh) is not None
        if not refresh:
            if self.dircache.get(name) is not None:
                return True
            above = self.dircache.get(self._parent(name))
            if above is not None and any(
                e["name"] == name and e["type"] == "directory" for e in above
            ):
                return True
        page = self._s3().list_dir(parse_uri(_s3_uri(src.bucket, key + "/")), max_keys=1)
        return bool(page.keys or page.prefixes or page.markers)

    def _s3_tree(self, bucket: str, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Every object whose key starts with ``prefix`` and the folders its directory
        markers name (s3:// URIs without the '/'): one recursive listing, asked for on
        every call, as s3fs's ``find`` does."""
        backend = self._s3()
        uris, sizes, markers = backend.list_tree(parse_uri(_s3_uri(bucket, prefix)))
        out = []
        for uri, size in zip(uris, sizes, strict=True):
            out.append(_file_entry(uri, size, *backend.known_tags(parse_uri(uri))))
        return out, [m[:-1] for m in markers]

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is a folder: for S3, whether its prefix holds anything (an object
        of the same name may be there too, as s3fs says)."""
        name, _ = _uri_of(self._strip_protocol(path))
        try:
            src = parse_uri(name)
            if src.scheme == "s3":
                return self._s3_is_dir(src)
            return self._info(name)["type"] == "directory"
        except (OSError, ValueError):
            return False

    def size(self, path: str) -> int:
        return int(self.info(path)["size"])

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget the listings (all of them: a change under ``path`` changes its parents'),
        so the next ``ls``/``info`` lists again, and what the engine learned of the objects
        under ``path`` (every object when None): a read of an object rewritten since
        reads the new version, as s3fs's does after invalidate_cache."""
        self.dircache.clear()
        try:
            self.engine.forget(None if path is None else self._src(path))
        except ValueError:  # not a path the engine reads: forget everything
            self.engine.forget()
        # the files' layouts may have changed; the budget stays one over all open files
        self._read_ahead.forget_layouts()
        super().invalidate_cache(path)

    def ls(self, path: str, detail: bool = True, refresh: bool = False, **kwargs: Any) -> list[Any]:
        name, slashed = _uri_of(self._strip_protocol(path))
        out = [_slashed(d, slashed) for d in self._ls(name, refresh)]
        return out if detail else [d["name"] for d in out]

    def _ls(self, name: str, refresh: bool = False) -> list[dict[str, Any]]:
        src = parse_uri(name)
        if src.is_local:
            if os.path.isfile(src.path):
                out = [_local_info(src.path, name)]
            else:
                with os.scandir(src.path) as it:
                    out = sorted(
                        (_local_info(e.path, self._join(name, e.name)) for e in it),
                        key=lambda d: d["name"],
                    )
            return out
        if src.scheme != "s3":
            self.engine.list(src)  # http(s): the backend says there is no listing
            return [self._info(name)]
        entries = self._s3_dir(src, refresh)
        if entries:
            return entries
        if not src.path:
            return []  # an empty bucket (a missing one raised)
        try:  # an object: itself; an empty folder: no such path, as s3fs says
            return [self._s3_object(src, name)]
        except ObjectNotFoundError:
            raise FileNotFoundError(name) from None

    def walk(
        self,
        path: str,
        maxdepth: int | None = None,
        topdown: bool = True,
        on_error: Any = "omit",
        **kwargs: Any,
    ) -> Iterator[tuple[str, Any, Any]]:
        """fsspec's walk as its async filesystems (s3fs) walk: a folder that cannot be
        listed (gone, or an empty folder, which ``ls`` refuses as s3fs's does) is yielded
        with nothing in it instead of being left out; ``on_error="raise"`` raises."""
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        path = self._strip_protocol(path)
        detail = kwargs.pop("detail", False)
        try:
            listing = self.ls(path, detail=True, **kwargs)
        except (FileNotFoundError, OSError) as exc:
            if on_error == "raise":
                raise
            if callable(on_error):
                on_error(exc)
            yield path, ({} if detail else []), ({} if detail else [])
            return
        full_dirs: dict[str, str] = {}
        dirs: dict[str, Any] = {}
        files: dict[str, Any] = {}
        for info in listing:
            pathname = info["name"].rstrip("/")
            name = pathname.rsplit("/", 1)[-1]
            if info["type"] == "directory" and pathname != path:
                full_dirs[name] = pathname
                dirs[name] = info
            elif pathname == path:
                files[""] = info  # an object of the name asked for
            else:
                files[name] = info
        shown = (dirs, files) if detail else (list(dirs), list(files))
        if topdown:
            yield path, *shown
        if maxdepth is None or maxdepth > 1:
            for d in shown[0]:  # a caller may prune them, as with os.walk
                yield from self.walk(
                    full_dirs[d],
                    maxdepth=None if maxdepth is None else maxdepth - 1,
                    detail=detail,
                    topdown=topdown,
                    on_error=on_error,
                    **kwargs,
                )
        if not topdown:
            yield path, *shown

    @staticmethod
    def _join(base: str, name: str) -> str:
        return f"{base.rstrip('/')}/{name}"

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        prefix: str = "",
        **kwargs: Any,
    ) -> Any:
        """Every object under ``path`` (with ``withdirs``, the folders too, ``path`` itself
        among them); ``prefix``: only names starting ``path/prefix`` (as s3fs's). S3: one
        recursive listing; with ``maxdepth``, level by level (``ls``), as s3fs."""
        name, slashed = _uri_of(self._strip_protocol(path))
        if maxdepth is not None and parse_uri(name).scheme == "s3":
            got = super().find(name, maxdepth=maxdepth, withdirs=withdirs, detail=True, **kwargs)
            found = {n: d or self._info(n) for n, d in got.items()}
        else:
            found = self._find(name, maxdepth, withdirs, prefix)
        if prefix:  # the folder itself stays (withdirs), as s3fs's
            base = name.rstrip("/")
            head = base + "/" + prefix
            found = {n: d for n, d in found.items() if n.startswith(head) or n == base}
        found = {_slash(n, slashed): _slashed(d, slashed) for n, d in found.items()}
        return found if detail else list(found)

    def _find(
        self, name: str, maxdepth: int | None, withdirs: bool, prefix: str = ""
    ) -> dict[str, dict[str, Any]]:
        src = parse_uri(name)
        found: dict[str, dict[str, Any]] = {}
        if src.is_local:
            if os.path.isfile(src.path):
                found[name] = _local_info(src.path, name)
            elif os.path.isdir(src.path):
                if withdirs:  # the folder itself, as fsspec's find (posix glob) has it
                    found[name] = _local_info(src.path, name)
                for dirpath, dirnames, filenames in os.walk(src.path):
                    rel = os.path.relpath(dirpath, src.path)
                    depth = 0 if rel == "." else rel.count(os.sep) + 1
                    here = name if rel == "." else self._join(name, rel.replace(os.sep, "/"))
                    if maxdepth is not None and depth >= maxdepth:
                        dirnames.clear()
                    for d in dirnames if withdirs else ():
                        sub = self._join(here, d)
                        found[sub] = {"name": sub, "size": 0, "type": "directory"}
                    if maxdepth is None or depth < maxdepth:
                        for f in filenames:
                            full = self._join(here, f)
                            found[full] = _local_info(os.path.join(dirpath, f), full)
        elif src.scheme == "s3":
            key = src.path.rstrip("/")
            base = _s3_uri(src.bucket, key)
            listed, folders = self._s3_tree(src.bucket, f"{key}/{prefix}" if key else prefix)
            if withdirs and key and (listed or folders):
                found[base] = {"name": base, "size": 0, "type": "directory"}
            for entry in listed:
                rest = entry["name"][len(base) + 1 :].split("/")
                if withdirs:
                    for k in range(1, len(rest)):
                        sub = base + "/" + "/".join(rest[:k])
                        found.setdefault(sub, {"name": sub, "size": 0, "type": "directory"})
                found[entry["name"]] = entry
            for folder in folders if withdirs else ():  # a marker: the folder and those above
                if len(folder) <= len(base):
                    continue  # the folder asked for (listed above)
                rest = folder[len(base) + 1 :].split("/")
                for k in range(1, len(rest) + 1):
                    sub = base + "/" + "/".join(rest[:k])
                    found.setdefault(sub, {"name": sub, "size": 0, "type": "directory"})
            if not listed and key and not prefix:  # an object, no folder: itself
                try:
                    found[name] = self._s3_object(src, name)
                except ObjectNotFoundError:
                    pass
        else:
            found[name] = self.info(name)
        return {n: found[n] for n in sorted(found)}

    def modified(self, path: str) -> _dt.datetime:
        info = self.info(path)
        if isinstance(info.get("LastModified"), _dt.datetime):
            return info["LastModified"]
        if "mtime" in info:
            return _dt.datetime.fromtimestamp(info["mtime"], _dt.timezone.utc)
        if info["type"] == "directory":  # an S3 folder has no time of its own (as s3fs says)
            raise IsADirectoryError(f"{redact(os.fspath(path))}: a folder has no modification time")
        raise NotImplementedError(f"{redact(path)}: the storage gives no modification time here")

    # -- data ---------------------------------------------------------------------------
    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        _refuse_versions(path, kwargs)
        src = self._src(path)
        if start is None and end is None:
            return bytes(self.engine.read(src))
        a, b = _absolute(start, end, self.engine.size(src), src)
        if b <= a:
            return b""
        view = self._fetch_buffers.take(b - a)  # fsspec wants bytes: the buffer is reused
        self.engine.read_ranges(src, [(a, b - a)], out=view)
        return bytes(view)

    def cat_ranges(
        self,
        paths: Sequence[str],
        starts: Sequence[int | None] | int | None,
        ends: Sequence[int | None] | int | None,
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """Byte ranges of many files, read together in ONE engine call: the ranges of each
        file are sorted and neighbours (gaps up to ``max_gap``) joined, then every request
        runs in parallel on the engine's threads or transfers."""
        paths = list(paths)
        n = len(paths)
        starts_l = list(starts) if isinstance(starts, Iterable) else [starts] * n
        ends_l = list(ends) if isinstance(ends, Iterable) else [ends] * n
        if len(starts_l) != n or len(ends_l) != n:
            raise ValueError(
                f"cat_ranges: {n} paths, {len(starts_l)} starts and {len(ends_l)} ends"
            )
        gap = self.max_gap if max_gap is None else check_int("max_gap", max_gap, 0)
        srcs: list[ParsedURI] = []
        index: dict[str, int] = {}
        rows = np.zeros((n, 3), dtype=np.int64)  # src, start, end
        results: list[Any] = [None] * n
        sizes: dict[int, int] = {}
        for i, (p, s, e) in enumerate(zip(paths, starts_l, ends_l, strict=True)):
            try:
                src = self._src(p)
                k = index.setdefault(src.uri, len(srcs))
                if k == len(srcs):
                    srcs.append(src)
                if k not in sizes:
                    sizes[k] = self.engine.size(src)
                a, b = _absolute(s, e, sizes[k], src)
                rows[i] = (k, a, max(b, a))
            except (FastloadError, OSError, ValueError) as exc:
                if on_error != "return":
                    raise
                results[i] = exc
                rows[i] = (-1, 0, 0)
        live = np.flatnonzero((rows[:, 0] >= 0) & (rows[:, 2] > rows[:, 1]))
        for empty in np.flatnonzero((rows[:, 0] >= 0) & (rows[:, 2] <= rows[:, 1])).tolist():
            results[empty] = b""
        if len(live):
            data, where = self._read_coalesced(srcs, rows[live], gap)
            for j, i in enumerate(live.tolist()):
                a, b = where[j]
                results[i] = data[a:b].tobytes()
        return results

    def _read_coalesced(
        self, srcs: list[ParsedURI], rows: np.ndarray, gap: int
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Read (src, start, end) rows as merged requests; the data and each row's place."""
        order = np.lexsort((rows[:, 1], rows[:, 0]))
        merged: list[list[int]] = []  # src, start, end
        member = np.empty(len(rows), dtype=np.int64)
        for j in order.tolist():
            s, a, b = (int(v) for v in rows[j])
            last = merged[-1] if merged else None
            if last is not None and last[0] == s and a <= last[2] + gap:
                last[2] = max(last[2], b)
            else:
                merged.append([s, a, b])
            member[j] = len(merged) - 1
        m = np.asarray(merged, dtype=np.int64)
        lengths = m[:, 2] - m[:, 1]
        dst = np.concatenate(([0], np.cumsum(lengths)))
        table = np.stack([m[:, 0], m[:, 1], lengths, dst[:-1]], axis=1)
        # the results are copied out as bytes (fsspec's type): the buffer is reused
        out = np.frombuffer(self._fetch_buffers.take(int(dst[-1])), dtype=np.uint8)
        self.engine.read_into(srcs, table, out)
        where = []
        for j in range(len(rows)):
            g = int(member[j])
            a = int(dst[g] + rows[j, 1] - m[g, 1])
            where.append((a, a + int(rows[j, 2] - rows[j, 1])))
        return out, where

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> FastloadFile:
        if "r" not in mode or any(c in mode for c in "wa+x"):
            raise NotImplementedError(
                f"{redact(path)}: fastload's filesystem is read-only (mode {mode!r})"
            )
        _refuse_versions(path, kwargs)
        name = self._strip_protocol(path)
        size = kwargs.pop("size", None)
        if size is None:
            size = self.engine.size(self._src(name))
        return FastloadFile(
            self,
            name,
            self.blocksize if block_size is None else check_int("block_size", block_size, 0),
            size,
            self.column_read_ahead,
        )

    # -- writes: not offered ------------------------------------------------------------
    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("fastload's filesystem is read-only (fastload has no write path)")

    pipe_file = put_file = rm_file = rm = mkdir = makedirs = rmdir = touch = _read_only
    cp_file = mv = _read_only


_DIRCACHE_OPTIONS = ("use_listings_cache", "listings_expiry_time", "max_paths")


def _s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def _names_folder(path: Any) -> bool:
    """Whether ``path`` ends in '/' past its scheme (``s3://b/k/``: the folder ``k``)."""
    text = os.fspath(path) if not isinstance(path, str) else path
    return text.endswith("/") and not text.endswith("://")


def _when(text: str | None) -> _dt.datetime | None:
    """A Last-Modified as a HEAD (RFC 7231) or a listing (ISO 8601) sends it, as an aware
    datetime in UTC (as s3fs gives it); None when absent or unreadable."""
    if not text:
        return None
    try:
        if text[:1].isdigit():
            when = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        else:
            when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.timezone.utc)


def _file_entry(name: str, size: int, etag: str | None, mtime: str | None) -> dict[str, Any]:
    """An S3 object's info (as s3fs has it: ETag and LastModified, a datetime, when known)."""
    out: dict[str, Any] = {"name": name, "size": size, "type": "file"}
    if etag is not None:
        out["ETag"] = etag
    when = _when(mtime)
    if when is not None:
        out["LastModified"] = when
    return out


def _refuse_versions(path: Any, kwargs: dict[str, Any]) -> None:
    """fastload reads the current version of an object: a ``version_id`` (s3fs's
    version-aware reads) is refused, never ignored (the wrong bytes would come back)."""
    version = kwargs.get("version_id")
    if version is not None:
        raise ValueError(
            f"{redact(os.fspath(path))}: version_id={version!r} is not supported (fastload "
            "reads the current version of an object; s3fs(version_aware=True) reads others)"
        )


_SLASHED = re.compile(r"(s3|https?|direct)/(?!/)")


def _uri_of(path: str) -> tuple[str, bool]:
    """(the engine's URI, whether ``path`` was in the slash form ``s3/bucket/key``).

    Loaders that take any path holding ``://`` for a URL of its own protocol (Hugging Face
    ``datasets``) need paths without it: ``fastload://s3/bucket/key`` names
    ``s3://bucket/key`` (also ``https/host/path``, ``http/...``, ``direct/abs/path``), and
    names come back in the form they were asked in."""
    if "://" not in path and _SLASHED.match(path):
        scheme, _, rest = path.partition("/")
        return f"{scheme}://{'/' if scheme == 'direct' else ''}{rest}", True
    return path, False


def _slash(name: str, slashed: bool) -> str:
    if not slashed:
        return name
    scheme, _, rest = name.partition("://")
    return f"{scheme}/{rest.lstrip('/') if scheme == 'direct' else rest}"


def _slashed(info: dict[str, Any], slashed: bool) -> dict[str, Any]:
    return {**info, "name": _slash(info["name"], True)} if slashed else info


def _absolute(start: Any, end: Any, size: int, src: ParsedURI) -> tuple[int, int]:
    """[start, end) of a read of an object of ``size`` bytes, with Python's slice rules
    (negative counts from the end, None is open, past the end is cut). ``start`` and
    ``end`` must be integers (or None): a float is refused, as a slice refuses it, not
    truncated."""
    for knob, value in (("start", start), ("end", end)):
        if value is not None and not is_int(value):
            raise TypeError(
                f"{src.display}: {knob}={value!r} must be an integer or None, "
                f"not {type(value).__name__}"
            )
    start = None if start is None else int(start)
    end = None if end is None else int(end)
    a = 0 if start is None else (max(size + start, 0) if start < 0 else min(start, size))
    b = size if end is None else (max(size + end, 0) if end < 0 else min(end, size))
    return a, b


def filesystem(engine: RangeEngine | None = None, **options: Any) -> FastloadFileSystem:
    """A fastload fsspec filesystem (``options``: engine options, ``block_size``, ``max_gap``)."""
    # no engine: none passed at all, so fsspec's storage_args stay () and to_json() works
    return (
        FastloadFileSystem(**options) if engine is None else FastloadFileSystem(engine, **options)
    )


def register() -> None:
    """Register the ``fastload`` protocol with fsspec in this process (the package's entry
    point does it for an installed fastload)."""
    fsspec.register_implementation(PROTOCOL, FastloadFileSystem, clobber=True)


__all__ = ["FastloadFile", "FastloadFileSystem", "filesystem", "register"]
