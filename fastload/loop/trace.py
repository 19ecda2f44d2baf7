"""A Chrome / Perfetto trace of the loader: one span per stage per batch, per thread.

``loader.trace(path)`` starts recording; the file is written when the returned recorder is
stopped (``with loader.trace(path): ...`` or ``.stop()``) or the loader closes. Open it in
https://ui.perfetto.dev or ``chrome://tracing``: each reader thread is a track with the
``plan`` / ``read`` / ``transform`` / ``collate`` / ``output`` spans of its batches, and the
consumer's thread shows ``wait`` (blocked in ``next()``) and ``step`` spans.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any


class TraceRecorder:
    """Collects trace events (complete events, ``"ph": "X"``) and writes them as JSON."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.events: list[dict[str, Any]] = []
        self.threads: dict[int, str] = {}
        self.origin = time.perf_counter()
        self.pid = os.getpid()
        self.active = True
        self._lock = threading.Lock()

    def span(self, name: str, start: float, end: float, tid: int, **args: Any) -> None:
        """One span from ``start`` to ``end`` (perf_counter seconds) on thread ``tid``."""
        if not self.active:
            return
        event = {
            "name": name,
            "cat": "fastload",
            "ph": "X",
            "ts": (start - self.origin) * 1e6,
            "dur": max(end - start, 0.0) * 1e6,
            "pid": self.pid,
            "tid": tid,
            "args": args,
        }
        with self._lock:
            self.events.append(event)
            if tid not in self.threads:
                self.threads[tid] = _thread_name(tid)

    def stop(self) -> str:
        """Stop recording and write the file; returns its path. Idempotent."""
        with self._lock:
            if not self.active:
                return self.path
            self.active = False
            meta = [
                {
                    "name": "thread_name",
                    "ph": "M",
                    "pid": self.pid,
                    "tid": tid,
                    "args": {"name": name},
                }
                for tid, name in self.threads.items()
            ]
            doc = {"traceEvents": meta + self.events, "displayTimeUnit": "ms"}
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, self.path)  # a reader never sees half a file
        return self.path

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _thread_name(tid: int) -> str:
    for t in threading.enumerate():
        if t.ident == tid:
            return t.name
    return f"thread {tid}"
