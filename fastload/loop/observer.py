"""What the loader tells about itself: per-epoch stage stats, logs, a progress bar, a trace.

The loader owns one :class:`LoaderObserver` and calls it at four points: an epoch starts, a
batch is made (its :class:`~fastload.loop.stage_stats.StageClock`), the consumer takes a
batch (how long it waited, how long its step took), an epoch ends. Everything else (the
``fastload`` logger's lines, the bar, the Chrome trace) hangs off those calls.

Logging is through the standard ``logging`` module under the ``fastload`` logger and silent
by default (the package installs a ``NullHandler``): INFO, one line per epoch; WARNING when
retries pass ``RETRY_WARN_FRACTION`` of the epoch's requests or samples were skipped; DEBUG,
one line per batch read (URIs shown redacted, as in errors).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from fastload.loop.epoch_bar import EpochBar
from fastload.loop.stage_stats import EpochStats, StageClock
from fastload.loop.trace import TraceRecorder
from fastload.loop.verdict import render, verdict

log = logging.getLogger("fastload")

RETRY_WARN_FRACTION = 0.01  # past 1% of requests retried, storage is struggling: say so
_HISTORY = 1000  # epochs whose summaries stats() keeps
# Counters that say how things stand now, not how much happened: an epoch's growth of them
# means nothing (and goes negative when files close), so epochs do not report them.
_GAUGES = frozenset({"open_files", "threads", "cache_stored_bytes"})
# Engine counters whose names the epoch's own keys already hold: renamed, never overwriting.
_RENAMED = {"bytes": "storage_bytes"}


def epoch_counters(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """An epoch's counters: the growth of each cumulative counter from ``before`` to
    ``after`` (never negative: a backend closed mid-epoch restarts none of them), the engine's
    ``bytes`` as ``storage_bytes`` (the bytes every backend read, block over-read and the
    node cache's local reads included; the epoch's ``bytes`` are its samples' bytes), and
    ``skipped``: the reads the node cache could not serve and read around plus the samples
    the image decoder could not decode and replaced (``image_skipped``; on_error="skip")."""
    out: dict[str, int] = {}
    for name, value in after.items():
        if name in _GAUGES:
            continue
        out[_RENAMED.get(name, name)] = max(0, int(value) - int(before.get(name, 0)))
    if "cache_skipped" in out or "image_skipped" in out:
        out["skipped"] = out.get("cache_skipped", 0) + out.get("image_skipped", 0)
    return out


class LoaderObserver:
    def __init__(
        self, source: str, progress: bool, counters: Callable[[], dict[str, int]] | None = None
    ) -> None:
        self.source = source  # how the verdict and logs name the data (redacted URI)
        self.progress = progress
        self.current: EpochStats | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        self.tracer: TraceRecorder | None = None
        self._bar: EpochBar | None = None
        self._engine_before: dict[str, int] = {}
        self._counters = counters  # the engine's and cache's counters now (for a live epoch)
        self._lock = threading.Lock()
        # The hot path's switches, plain attributes (read per batch): ``clock()`` makes the
        # next batch's clock, the bare native one unless a trace records; ``watching``: a
        # trace or a bar wants each batch (else the loop records straight into the table);
        # ``debug_reads``: one DEBUG line per batch read (the level as the epoch began:
        # asking the logger per batch cost more than the rest of a batch's timing).
        self.clock: Callable[..., StageClock] = StageClock
        self.watching = False
        self.debug_reads = False

    def _watch(self) -> None:
        tracing = self.tracer is not None and self.tracer.active
        self.clock = _traced_clock if tracing else StageClock
        self.watching = tracing or self._bar is not None
        self.debug_reads = log.isEnabledFor(logging.DEBUG)

    # -- the loader's calls -------------------------------------------------------------
    def begin_epoch(self, epoch: int, batches: int, engine_counters: dict[str, int]) -> EpochStats:
        stats = EpochStats(epoch, batches)
        with self._lock:
            self.current = stats
            self._engine_before = engine_counters
        if self.progress:
            self._bar = EpochBar(epoch, batches)
        self._watch()  # a trace stopped since the last epoch: back to the bare clock
        return stats

    def batch_made(
        self, stats: EpochStats, k: int, clock: StageClock, nbytes: int, samples: int
    ) -> None:
        """On the thread that made batch ``k``. (The loop records ``stats.table.made(...)``
        itself and calls this only for a clock with spans: the hot path stays native.)"""
        stats.table.made(k, clock, nbytes, samples)
        if clock.spans is not None and self.tracer is not None:
            tid = threading.get_ident()
            for stage, t0, t1 in clock.spans:
                self.tracer.span(stage, t0, t1, tid, batch=k, epoch=stats.epoch)

    def batch_taken(self, stats: EpochStats, k: int, asked: float, got: float) -> None:
        """The consumer asked for batch ``k`` at ``asked`` and got it at ``got``. (The loop
        records ``stats.table.taken(...)`` itself unless ``watching``.)"""
        table = stats.table
        if self.tracer is not None:
            tid = threading.get_ident()
            if table.last_return >= 0:  # the step starts when next() returns
                self.tracer.span("step", table.last_return, asked, tid, epoch=stats.epoch)
            self.tracer.span("wait", asked, got, tid, batch=k, epoch=stats.epoch)
        table.taken(k, asked, got)  # EpochStats.record_consumer, inlined: hot
        if self._bar is not None:
            self._bar.update(stats)

    def end_epoch(self, failed: bool, engine_counters: dict[str, int]) -> dict[str, Any] | None:
        with self._lock:
            stats, self.current = self.current, None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._watch()
        if stats is None:
            return None
        stats.finish()
        for name, value in epoch_counters(self._engine_before, engine_counters).items():
            stats.count(name, value)
        summary = stats.summary()
        summary["failed"] = failed
        summary["verdict"] = verdict(summary, self.source)
        self.history.append(summary)
        self._log_epoch(summary)
        return summary

    # -- what users read ----------------------------------------------------------
    def epochs(self) -> list[dict[str, Any]]:
        """Summaries of the finished epochs and, last, the one running (if any)."""
        out = list(self.history)
        with self._lock:
            cur, before = self.current, self._engine_before
        if cur is not None:
            live = cur.summary()
            if self._counters is not None:  # what the epoch has read so far
                live.update(epoch_counters(before, self._counters()))
            live["running"] = True
            live["verdict"] = verdict(live, self.source)
            out.append(live)
        return out

    def render(self) -> str:
        epochs = self.epochs()
        return render(epochs[-1], self.source) if epochs else "no epoch has run yet"

    def trace(self, path: Any) -> TraceRecorder:
        if self.tracer is not None and self.tracer.active:
            self.tracer.stop()
        self.tracer = TraceRecorder(path)
        self._watch()
        return self.tracer

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.tracer is not None:
            self.tracer.stop()

    # -- logging ---------------------------------------------------------------------
    def _log_epoch(self, s: dict[str, Any]) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "epoch %d%s: %d batches, %.0f samples/s, %.1f MB/s, waited %.0f%% of the step "
                "time (%s)",
                s["epoch"],
                " (failed)" if s["failed"] else "",
                s["batches"],
                s["samples_per_s"],
                s["mb_per_s"],
                100 * s["wait_fraction"],
                s["verdict"],
            )
        retries, requests = s.get("retries", 0), s.get("requests", 0)
        if retries and retries > RETRY_WARN_FRACTION * max(requests, 1):
            log.warning(
                "epoch %d: %d of %d requests to %s were retries: the storage is failing or "
                "throttling (see retry budget options)",
                s["epoch"],
                retries,
                requests,
                self.source,
            )
        if s.get("skipped"):
            log.warning(
                "epoch %d: %d samples were skipped (on_error='skip')", s["epoch"], s["skipped"]
            )


def debug_read(plan: Any, seconds: float, describe: Any) -> None:
    """One DEBUG line per batch read (``describe(plan)`` names the sources redacted; the
    loop calls this only when ``debug_reads`` was on as the epoch began)."""
    log.debug("read %s in %.2f ms", describe(plan), seconds * 1e3)


def _traced_clock(start: float = -1.0, lap: int = -1) -> StageClock:
    return StageClock(start, lap, True)
