"""Auto-tuning of the engine's concurrency and part size from measured throughput.

A coordinate hill climb: the tuner measures bytes/s over a window of
batches, then tries one neighbour setting (``max_inflight_parts`` x2 or /2,
``part_size`` x2 or /2) for a window. A neighbour at least ``gain`` better
becomes the new setting and the same move is tried again; otherwise the
tuner goes back and tries the next move. When no move helps it settles, and
re-explores if throughput later drops by more than ``gain`` (storage
conditions change).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MIN_PART = 256 << 10
MAX_PART = 64 << 20
MAX_INFLIGHT = 64

# (knob, factor): the moves tried from a setting, most useful first.
MOVES: tuple[tuple[str, float], ...] = (
    ("max_inflight_parts", 2.0),
    ("part_size", 2.0),
    ("max_inflight_parts", 0.5),
    ("part_size", 0.5),
)


@dataclass
class Trial:
    part_size: int
    max_inflight_parts: int
    mb_per_s: float
    accepted: bool


@dataclass
class AutoTuner:
    """Chooses ``part_size`` and ``max_inflight_parts`` while the loader runs.

    ``record(nbytes)`` is called after each batch read; ``apply`` receives
    every new setting (the loader points it at its engine). ``tune_part_size``
    is False when part size does not act (reader_mode "sequential").
    """

    part_size: int
    max_inflight_parts: int
    apply: Callable[[int, int], None] = lambda part, inflight: None
    tune_part_size: bool = True
    window_batches: int = 4
    window_bytes: int = 32 << 20
    gain: float = 0.05
    history: list[Trial] = field(default_factory=list)
    settled: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._best: tuple[int, int] = (self.part_size, self.max_inflight_parts)
        self._best_rate = 0.0
        self._move = 0
        self._trying = False
        self._reset_window()

    def _reset_window(self) -> None:
        self._bytes = 0
        self._batches = 0
        self._start = time.perf_counter()

    def record(self, nbytes: int) -> None:
        """Count one batch of ``nbytes`` read; evaluate when the window is full."""
        with self._lock:
            self._bytes += int(nbytes)
            self._batches += 1
            if self._batches < self.window_batches or self._bytes < self.window_bytes:
                return
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            self.observe(self._bytes / elapsed / 1e6)
            self._reset_window()

    def observe(self, mb_per_s: float) -> None:
        """Feed the throughput measured at the current setting (one window)."""
        current = (self.part_size, self.max_inflight_parts)
        if not self._trying:
            # A measurement of the accepted setting: a baseline, or a drift check once settled.
            if self.settled and mb_per_s >= self._best_rate * (1 - self.gain):
                self._best_rate = max(self._best_rate, mb_per_s)
                return
            self._best_rate = mb_per_s
            self.settled = False
            self._move = 0
            self.history.append(Trial(*current, mb_per_s, True))
            self._next_trial()
            return
        better = mb_per_s > self._best_rate * (1 + self.gain)
        self.history.append(Trial(*current, mb_per_s, better))
        if better:
            self._best, self._best_rate = current, mb_per_s  # keep going the same way
        else:
            self._move += 1
        self._next_trial()

    def _candidate(self, move: int) -> tuple[int, int] | None:
        knob, factor = MOVES[move]
        part, inflight = self._best
        if knob == "part_size":
            if not self.tune_part_size:
                return None
            part = int(min(max(part * factor, MIN_PART), MAX_PART))
        else:
            inflight = int(min(max(inflight * factor, 1), MAX_INFLIGHT))
        return None if (part, inflight) == self._best else (part, inflight)

    def _next_trial(self) -> None:
        while self._move < len(MOVES):
            cand = self._candidate(self._move)
            if cand is not None:
                self._set(*cand)
                self._trying = True
                return
            self._move += 1
        self._set(*self._best)
        self._trying = False
        self.settled = True

    def _set(self, part: int, inflight: int) -> None:
        self.part_size, self.max_inflight_parts = part, inflight
        self.apply(part, inflight)

    def report(self) -> dict[str, object]:
        """What the tuner chose, the throughput it measured there, and every trial."""
        return {
            "part_size": self._best[0],
            "max_inflight_parts": self._best[1],
            "mb_per_s": round(self._best_rate, 1),
            "settled": self.settled,
            "trials": [vars(t).copy() for t in self.history],
        }
