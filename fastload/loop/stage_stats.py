"""Where a batch's time goes: per-stage clocks, per-epoch totals and percentiles.

Always on, so it must stay cheap: a batch costs a handful of ``perf_counter`` calls and
one short list stored per batch (``asv_bench/benchmarks/bench_observability.py``
measures the cost against the fastest loader path). Stages, in the order a batch meets them:

- ``plan``: sample indices -> byte ranges (the planner)
- ``read``: the engine's reads (retries and their backoff waits included)
- ``decode``: image decoding, where the dataset has it
- ``transform``: the dataset's transform (in this process or in worker processes)
- ``collate``: the collate kernel into the batch buffer
- ``output``: the output stage (tensors, the host-to-device copy)
- ``wait``: how long the consumer's ``next()`` blocked on the batch, and ``step``: how long the
  consumer spent between two ``next()`` calls (its training step).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

BATCH_STAGES = ("plan", "read", "decode", "transform", "collate", "output")
CONSUMER_STAGES = ("wait", "step")
STAGES = BATCH_STAGES + CONSUMER_STAGES
PLAN, READ, DECODE, TRANSFORM, COLLATE, OUTPUT = range(len(BATCH_STAGES))
_now = time.perf_counter


class StageClock:
    """One batch's stage durations: ``lap(stage)`` charges the time since the last lap.

    ``row`` holds seconds per BATCH_STAGES; ``spans``, kept only while a trace records
    (``traced``), the (stage, start, end) of each lap."""

    __slots__ = ("last", "row", "spans")

    def __init__(self, traced: bool = False) -> None:
        self.last = _now()
        self.row = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # one per BATCH_STAGES
        self.spans: list[tuple[str, float, float]] | None = [] if traced else None

    def lap(self, stage: int) -> float:
        """Charge the time since the last lap to ``stage`` (PLAN, READ ...: an index into
        BATCH_STAGES); returns those seconds."""
        now = _now()
        seconds = now - self.last
        self.row[stage] += seconds
        if self.spans is not None:
            self.spans.append((BATCH_STAGES[stage], self.last, now))
        self.last = now
        return seconds

    def skip(self) -> None:
        """Start the next stage now (time since the last lap belongs to no stage)."""
        self.last = _now()


class EpochStats:
    """Per-batch stage seconds of one epoch, with bytes and samples, and what the consumer
    waited; summarised by :meth:`summary` (totals, p50/p99 per batch). Rows are plain lists
    while the epoch runs (cheaper per batch than numpy) and become arrays in ``summary``."""

    def __init__(self, epoch: int, batches: int) -> None:
        self.epoch = epoch
        self.planned = batches
        # batch -> (seconds per BATCH_STAGES, bytes, samples); a dict store is atomic, so the
        # reader threads record without a lock
        self.made: dict[int, tuple[list[float], int, int]] = {}
        self.taken: dict[int, tuple[float, float]] = {}  # batch -> (wait, step): consumer only
        self.start = time.perf_counter()
        self.end: float | None = None
        self.counters: dict[str, int] = {}
        self._waited = self._stepped = 0.0  # running sums, for the progress bar
        self._lock = threading.Lock()  # reader threads record, the consumer reads

    @property
    def batches(self) -> int:
        return len(self.made)

    def record_batch(self, k: int, clock: StageClock, nbytes: int, samples: int) -> None:
        self.made[k] = (clock.row, nbytes, samples)  # one dict store: no lock needed

    def record_consumer(self, k: int, wait: float, step: float) -> None:
        """From the consumer's thread only."""
        self.taken[k] = (wait, step)
        self._waited += wait
        self._stepped += step

    def summary_fast(self) -> tuple[float, float]:
        """(samples/s so far, wait fraction so far): cheap enough for a progress bar."""
        wall = time.perf_counter() - self.start
        samples = sum(m[2] for m in list(self.made.values()))
        busy = self._waited + self._stepped
        return (samples / wall if wall > 0 else 0.0, self._waited / busy if busy > 0 else 0.0)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def finish(self) -> None:
        if self.end is None:
            self.end = time.perf_counter()

    def summary(self) -> dict[str, Any]:
        """Totals and per-batch p50/p99 seconds per stage, throughput and the wait fraction."""
        made_rows = list(self.made.values())
        made = np.array([m[0] for m in made_rows], dtype=np.float64).reshape(-1, len(BATCH_STAGES))
        taken = np.array(list(self.taken.values()), dtype=np.float64).reshape(-1, 2)
        wall = (self.end or time.perf_counter()) - self.start
        nbytes = sum(m[1] for m in made_rows)
        samples = sum(m[2] for m in made_rows)
        batches = len(made_rows)
        with self._lock:
            counters = dict(self.counters)
        columns = {s: made[:, i] for i, s in enumerate(BATCH_STAGES)}
        columns.update(wait=taken[:, 0], step=taken[:, 1])
        stages = {}
        for s in STAGES:
            col = columns[s] if len(columns[s]) else np.zeros(1)
            stages[s] = {
                "total_s": float(col.sum()),
                "p50_s": float(np.percentile(col, 50)),
                "p99_s": float(np.percentile(col, 99)),
            }
        wait = stages["wait"]["total_s"]
        step = stages["step"]["total_s"]
        return {
            "epoch": self.epoch,
            "batches": batches,
            "samples": samples,
            "bytes": nbytes,
            "wall_s": wall,
            "samples_per_s": samples / wall if wall > 0 else 0.0,
            "mb_per_s": nbytes / wall / 1e6 if wall > 0 else 0.0,
            # of the consumer's time (its steps plus its waits), the share spent waiting
            "wait_fraction": wait / (wait + step) if wait + step > 0 else 0.0,
            "stages": stages,
            **counters,
        }
