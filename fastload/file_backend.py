"""Local files (plain paths, file://, direct://) for the range engine."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from fastload import _file_engine
from fastload.range_table import split_by_source
from fastload.uri import ParsedURI

CACHE_MODES = {"auto": 0, "sequential": 1, "random": 2, "dont_need": 3, "normal": 4}


class FileBackend:
    """Reads local files with native threads (pread, or O_DIRECT for direct://)."""

    def size(self, src: ParsedURI) -> int:
        return _file_engine.file_size(src.path, src.uri)

    def list(self, prefix: ParsedURI) -> list[str]:
        root = prefix.path
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{prefix.uri}: not a directory")
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                out.append(full if prefix.scheme == "file" and "://" not in prefix.uri
                           else f"{prefix.scheme}://{full}")
        return out

    def read_into(
        self,
        sources: Sequence[ParsedURI],
        table: np.ndarray,
        out: object,
        *,
        part_size: int,
        max_inflight_parts: int,
        page_cache_mode: str,
        timeout: float | None = None,
        cancel: _file_engine.CancelToken | None = None,
    ) -> None:
        # timeout bounds the whole call; the C reader checks it between parts
        # (a pread once started is not cut short).
        deadline = None if timeout is None else time.monotonic() + timeout
        # O_DIRECT is a per-open flag: direct:// and file:// sources go in separate calls.
        for direct, sub, subtable in split_by_source(sources, table, lambda s: s.scheme == "direct"):
            left = 0.0 if deadline is None else max(deadline - time.monotonic(), 1e-9)
            _file_engine.read_file_ranges(
                [s.path for s in sub], [s.uri for s in sub], subtable, out,
                part_size, max_inflight_parts, bool(direct), CACHE_MODES[page_cache_mode], cancel,
                left,
            )
