"""The cost of the always-on stage timing, on the loader's fastest path.

The fastest local path is a batch of 256 records of 16 bytes (no conversion): any fixed cost
per batch shows there first. Measured in the same run, interleaved:
- ``loader``: one epoch of fastload's DataLoader, per batch;
- ``timing``: exactly the timing work the loader does per batch, replayed alone (the
  consumer's clock read, a StageClock carried by the batch's plan, the laps of this path, one
  native record of the batch and the consumer's wait: this path's batches are made inside
  ``next()``), the epoch's summary included.
Goal: timing <= 1% of the loader's time per batch (``track_timing_cost_percent``).
"""

from __future__ import annotations

import os

import numpy as np

import fastload
from fastload._native.stage_table import now
from fastload.loop.observer import LoaderObserver
from fastload.loop.stage_stats import OUTPUT, PLAN, READ
from fastload.plan.planner import plan_batch

from .common import data_dir, interleaved_best

RECORDS = 256 * 2000
BATCH = 256


def _records() -> str:
    path = os.path.join(data_dir(), "records-16B.bin")
    if not os.path.exists(path) or os.path.getsize(path) != RECORDS * 16:
        np.random.default_rng(0).integers(0, 256, RECORDS * 16, dtype=np.uint8).tofile(path)
    return path


class TimingCost:
    timeout = 300

    def setup(self) -> None:
        self.loader = fastload.DataLoader(
            fastload.RecordDataset(_records(), (16,)), batch_size=BATCH
        )
        self.batches = len(self.loader)
        self.observer = LoaderObserver("bench", progress=False)
        # a batch's plan carries its clock to the steps that lap it
        self.plan = plan_batch(self.loader.dataset, np.arange(BATCH))

    def _epoch(self) -> None:
        for _ in self.loader:
            pass

    def _timing(self) -> None:
        obs = self.observer
        plan = self.plan
        stats = obs.begin_epoch(0, self.batches, {})
        table = stats.table
        for k in range(self.batches):
            # as Epoch.next() and DataLoader.produce() time a batch next() makes itself
            # (this path's batches are made inline): the consumer's ask, the plan's clock,
            # its laps, and one record of both sides
            asked = now()
            clock = plan.clock = obs.clock()
            clock.lap(PLAN)
            plan.clock.lap(READ)
            if clock.spans is None:
                table.made(k, clock, 4096, BATCH, OUTPUT, asked)
        obs.end_epoch(False, {})

    def time_loader_epoch(self) -> None:
        self._epoch()

    def time_timing_alone(self) -> None:
        self._timing()

    def track_timing_cost_percent(self) -> float:
        best = interleaved_best({"loader": self._epoch, "timing": self._timing}, repeat=7)
        return 100.0 * best["timing"] / best["loader"]

    track_timing_cost_percent.unit = "%"  # type: ignore[attr-defined]

    def track_loader_us_per_batch(self) -> float:
        best = interleaved_best({"loader": self._epoch}, repeat=5)
        return 1e6 * best["loader"] / self.batches

    track_loader_us_per_batch.unit = "us/batch"  # type: ignore[attr-defined]
