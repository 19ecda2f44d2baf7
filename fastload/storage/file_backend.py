"""Local files (plain paths and file://, or direct:// with O_DIRECT) for the range engine."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastload._native import file_reader
from fastload.storage.interruptible import interruptible_slices, one_slice
from fastload.storage.read_settings import ReadSettings
from fastload.storage.uri import ParsedURI

# Descriptors a backend keeps open between reads unless told otherwise: enough for every
# shard of a typical record dataset, far below the usual 1024-descriptor soft limit.
DEFAULT_MAX_OPEN_FILES = 256


class _Uris(Sequence[str]):
    """The URIs of a call's sources, made only when an error names one."""

    __slots__ = ("_sources",)

    def __init__(self, sources: Sequence[ParsedURI]) -> None:
        self._sources = sources

    def __len__(self) -> int:
        return len(self._sources)

    def __getitem__(self, i: Any) -> Any:
        return self._sources[i].uri


class FileBackend:
    """Reads local files with native threads (pread, or O_DIRECT when ``direct``).

    The threads and up to ``max_open_files`` open descriptors stay between reads
    (``close()`` ends them; a later read makes them again), so a small read costs about
    one ``stat`` and one ``pread``: a cached descriptor is used only while its path still
    names the same file (device, inode, size and mtime).
    """

    def __init__(self, direct: bool = False, max_open_files: int = DEFAULT_MAX_OPEN_FILES) -> None:
        self.direct = direct  # a per-open flag: direct:// and file:// have a backend each
        self.scheme = "direct" if direct else "file"
        self._reader = file_reader.FileReader(max_open_files)

    @property
    def max_open_files(self) -> int:
        return int(self._reader.max_open_files)

    def size(self, src: ParsedURI) -> int:
        return file_reader.file_size(src.path, src.uri)

    def list(self, prefix: ParsedURI) -> list[str]:
        """Every file under a local folder, sorted by path (symlinked folders not followed)."""
        names: list[str] = []
        _scan(self._root(prefix), _lead(prefix), names, None)
        return names

    def list_sizes(self, prefix: ParsedURI) -> tuple[builtins.list[str], builtins.list[int]]:
        """:meth:`list` and each file's size, from one ``os.scandir`` pass (the size
        comes from the one ``stat`` of each file)."""
        names: builtins.list[str] = []
        sizes: builtins.list[int] = []
        _scan(self._root(prefix), _lead(prefix), names, sizes)
        return names, sizes

    @staticmethod
    def _root(prefix: ParsedURI) -> str:
        if not os.path.isdir(prefix.path):
            raise FileNotFoundError(f"{prefix.uri}: not a directory")
        return prefix.path

    def read_into(
        self,
        sources: Sequence[ParsedURI],
        table: np.ndarray,
        out: Any,
        *,
        settings: ReadSettings,
        cancel: Any = None,
        timeout: float | None = None,
    ) -> None:
        # timeout bounds the whole call; the C reader checks it between parts
        # (a pread once started is not cut short). On the main thread a big read is
        # several calls, so Ctrl-C is seen between them.
        if not one_slice(table):
            self._read_slices(sources, table, out, settings, cancel, timeout)
            return
        part_size, inflight, cache_mode, cache_fit = settings.local_read_args
        file_reader.read_file_ranges(
            [s.path for s in sources],
            _Uris(sources),
            table,
            out,
            part_size,
            inflight,
            self.direct,
            cache_mode,
            cancel,
            0.0 if timeout is None else max(timeout, 1e-9),  # 0: none; past the deadline: fail
            self._reader,
            cache_fit,
        )

    def _read_slices(
        self,
        sources: Sequence[ParsedURI],
        table: np.ndarray,
        out: Any,
        settings: ReadSettings,
        cancel: Any,
        timeout: float | None,
    ) -> None:
        """A big read on the main thread: one call per slice (each is one_slice), each with
        the time left of ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for piece in interruptible_slices(table):
            left = None if deadline is None else deadline - time.monotonic()
            self.read_into(sources, piece, out, settings=settings, cancel=cancel, timeout=left)

    def stats(self) -> dict[str, int]:
        """Counters since creation: requests (preads of one part each), bytes read, and
        the native reader's own (``reads``, ``inline_reads``, ``inline_starts``: reads whose
        parts started on the calling thread alone, ``opens``, ``reopens``, ``hits``, and now:
        ``open_files``, ``threads``)."""
        st = self._reader.stats()
        return {"requests": st["parts"], **st}

    def close(self) -> None:
        """Join the reader threads and close the cached descriptors."""
        self._reader.close()


def _lead(prefix: ParsedURI) -> str:
    """What goes before a listed path: nothing for a plain-path prefix, else the scheme."""
    return "" if prefix.scheme == "file" and "://" not in prefix.uri else f"{prefix.scheme}://"


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _scan(folder: str, lead: str, names: list[str], sizes: list[int] | None) -> None:
    """Files under ``folder`` in path order: a folder's files (names sorted), then its
    sub-folders, each the same way (the order of os.walk with sorted names). A symlink
    to a folder is neither listed nor followed; a broken symlink is listed, and asking
    its size raises FileNotFoundError naming it."""
    with os.scandir(folder) as it:
        entries = sorted(it, key=_name)
    subdirs = []
    for e in entries:
        if e.is_dir():
            if not e.is_symlink():
                subdirs.append(e.path)
            continue
        names.append(lead + e.path if lead else e.path)
        if sizes is not None:
            try:
                sizes.append(e.stat().st_size)
            except FileNotFoundError:
                raise FileNotFoundError(f"{lead + e.path}: cannot stat (a broken link?)") from None
    for d in subdirs:
        _scan(d, lead, names, sizes)
