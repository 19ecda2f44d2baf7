"""The cost of the always-on stage timing, on the loader's fastest path.

The fastest local path is a batch of 256 records of 16 bytes (no conversion): any fixed cost
per batch shows there first. Its batches are made inside ``next()`` (issue 11's inline
batches). Measured in the same run, interleaved:
- ``loader``: one epoch of fastload's DataLoader, per batch;
- ``timing``: exactly what that path does per batch for its timing and for the inline
  policy, replayed alone: ``next()``'s clock read, the epoch's inline StageClock restarted
  at it and carried by the plan, the plan and read laps, the DEBUG-read switch, and one
  native record of the output lap, the row and the consumer's wait, whose time ends the
  call; then the epoch's summary;
- ``policy``: what the same path would still do with no timing at all: the inline policy
  times each batch it makes from two clock reads (``fastload/loop/inline_batches.py``).
The timing's cost is ``timing - policy`` (``track_timing_cost_percent``, goal <= 1% of the
loader's time per batch); ``track_timing_replay_percent`` gives ``timing`` alone, clock reads
included, for comparison.
"""

from __future__ import annotations

import os

import numpy as np

import fastload
from fastload._native.stage_table import StageClock, now
from fastload.loop.observer import LoaderObserver
from fastload.loop.stage_stats import READ, EpochStats
from fastload.plan.planner import plan_batch

from .common import data_dir, interleaved_best

RECORDS = 256 * 2000
BATCH = 256


def _inline_made(seconds: float) -> bool:  # the policy's test of one inline batch
    return seconds >= 1e-3


class _Epoch:  # what an Epoch holds for the timing of its inline batches
    __slots__ = ("stats", "inline_clock", "debug_reads")

    def __init__(self, stats: EpochStats, debug_reads: bool) -> None:
        self.stats = stats
        self.inline_clock = StageClock()
        self.debug_reads = debug_reads


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
        plan = self.plan
        ep = _Epoch(self.observer.begin_epoch(0, self.batches, {}), self.observer.debug_reads)
        for k in range(self.batches):
            # as Epoch.next(), Epoch._make_inline(), DataLoader.produce() and
            # DataLoader._read() time a batch next() makes itself, attribute for attribute
            asked = now()
            clock = ep.inline_clock.restart(asked)  # after the plan: its first lap
            plan.clock = clock
            seconds = plan.clock.lap(READ)
            if ep.debug_reads:
                raise AssertionError(f"the benchmark runs with DEBUG off ({seconds})")
            if asked >= 0:
                ep.stats.table.made_and_taken(k, clock, plan.nbytes, len(plan.indices))
            got = ep.inline_clock.last
            _inline_made(got - asked)
        self.observer.end_epoch(False, {})

    def _policy(self) -> None:
        for _ in range(self.batches):
            asked = now()
            got = now()
            _inline_made(got - asked)

    def _times(self) -> dict[str, float]:
        runs = {"loader": self._epoch, "timing": self._timing, "policy": self._policy}
        return interleaved_best(runs, repeat=9)

    def time_loader_epoch(self) -> None:
        self._epoch()

    def time_timing_alone(self) -> None:
        self._timing()

    def track_timing_cost_percent(self) -> float:
        best = self._times()
        return 100.0 * (best["timing"] - best["policy"]) / best["loader"]

    track_timing_cost_percent.unit = "%"  # type: ignore[attr-defined]

    def track_timing_replay_percent(self) -> float:
        best = self._times()
        return 100.0 * best["timing"] / best["loader"]

    track_timing_replay_percent.unit = "%"  # type: ignore[attr-defined]

    def track_loader_us_per_batch(self) -> float:
        best = interleaved_best({"loader": self._epoch}, repeat=5)
        return 1e6 * best["loader"] / self.batches

    track_loader_us_per_batch.unit = "us/batch"  # type: ignore[attr-defined]
