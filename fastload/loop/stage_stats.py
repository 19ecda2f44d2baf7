"""Where a batch's time goes: per-stage clocks, per-epoch totals and percentiles.

Always on, so it must stay cheap: the clock and the per-batch rows are native
(``fastload._native.stage_table``), a batch costs a few calls into them
(``asv_bench/benchmarks/bench_observability.py`` measures the cost against the fastest loader
path). Stages, in the order a batch meets them:

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

from fastload._native.stage_table import BATCH_STAGES, CONSUMER_STAGES, StageClock, StageTable

STAGES = BATCH_STAGES + CONSUMER_STAGES
PLAN, READ, DECODE, TRANSFORM, COLLATE, OUTPUT = range(len(BATCH_STAGES))

__all__ = ["BATCH_STAGES", "CONSUMER_STAGES", "STAGES", "EpochStats", "StageClock"]


class EpochStats:
    """Per-batch stage seconds of one epoch, with bytes and samples, and what the consumer
    waited; summarised by :meth:`summary` (totals, p50/p99 per batch). The rows live in a
    native :class:`~fastload._native.stage_table.StageTable` (``table``): recording a batch
    is one call, and the totals grow as rows come."""

    def __init__(self, epoch: int, batches: int) -> None:
        self.epoch = epoch
        self.planned = batches
        self.table = StageTable(max(batches, 1))
        self.start = time.perf_counter()
        self.end: float | None = None
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()  # counters come from several threads

    @property
    def batches(self) -> int:
        return int(self.table.batches)

    def record_batch(self, k: int, clock: StageClock, nbytes: int, samples: int) -> None:
        self.table.made(k, clock, nbytes, samples)

    def record_consumer(self, k: int, asked: float, got: float) -> None:
        """From the consumer's thread only: it asked for batch ``k`` at ``asked`` and got it
        at ``got`` (perf_counter seconds)."""
        self.table.taken(k, asked, got)

    def summary_fast(self) -> tuple[float, float]:
        """(samples/s so far, wait fraction so far): cheap enough for a progress bar."""
        wall = time.perf_counter() - self.start
        totals = self.table.totals()
        busy = totals["wait"] + totals["step"]
        samples = self.table.samples
        return (samples / wall if wall > 0 else 0.0, totals["wait"] / busy if busy > 0 else 0.0)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def finish(self) -> None:
        if self.end is None:
            self.end = time.perf_counter()

    def summary(self) -> dict[str, Any]:
        """Totals and per-batch p50/p99 seconds per stage, throughput and the wait fraction."""
        wall = (self.end or time.perf_counter()) - self.start
        table = self.table
        totals = table.totals()
        cuts = table.percentiles()
        with self._lock:
            counters = dict(self.counters)
        stages = {
            s: {"total_s": totals[s], "p50_s": cuts[s][0], "p99_s": cuts[s][1]} for s in STAGES
        }
        wait, step = totals["wait"], totals["step"]
        samples, nbytes = table.samples, table.nbytes
        return {
            "epoch": self.epoch,
            "batches": table.batches,
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
