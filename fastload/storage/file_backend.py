"""Local files (plain paths and file://, or direct:// with O_DIRECT) for the range engine."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastload._native import file_reader
from fastload.storage.interruptible import interruptible_slices
from fastload.storage.read_settings import ReadSettings
from fastload.storage.uri import ParsedURI


class FileBackend:
    """Reads local files with native threads (pread, or O_DIRECT when ``direct``)."""

    def __init__(self, direct: bool = False) -> None:
        self.direct = direct  # a per-open flag: direct:// and file:// have a backend each
        self._requests = 0
        self._bytes = 0
        self._lock = threading.Lock()  # the loader's reader threads share a backend

    def size(self, src: ParsedURI) -> int:
        return file_reader.file_size(src.path, src.uri)

    def list(self, prefix: ParsedURI) -> list[str]:
        root = prefix.path
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{prefix.uri}: not a directory")
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                out.append(
                    full
                    if prefix.scheme == "file" and "://" not in prefix.uri
                    else f"{prefix.scheme}://{full}"
                )
        return out

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
        parts = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        for piece in interruptible_slices(table):
            parts += file_reader.read_file_ranges(
                [s.path for s in sources],
                [s.uri for s in sources],
                piece,
                out,
                settings.part_size,
                settings.inflight_for("direct" if self.direct else "file"),
                self.direct,
                int(settings.cache_mode),
                cancel,
                0.0 if deadline is None else max(deadline - time.monotonic(), 1e-9),
            )
        with self._lock:
            self._requests += parts
            self._bytes += int(table[:, 2].sum())

    def stats(self) -> dict[str, int]:
        """Counters since creation: requests (preads of one part each) and bytes read."""
        return {"requests": self._requests, "bytes": self._bytes}

    def close(self) -> None:
        pass
