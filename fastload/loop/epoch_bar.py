"""``DataLoader(..., progress=True)``: a per-epoch bar with samples/s and the wait fraction.

tqdm draws it when installed, a one-line bar otherwise; nothing is drawn when the stream is
not a terminal (logs and CI stay clean).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

_REDRAW_S = 0.1


class EpochBar:
    def __init__(self, epoch: int, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.done = 0
        self.label = f"epoch {epoch}"
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._tqdm: Any = None
        self._last = 0.0
        self.start = time.perf_counter()
        if self.enabled:
            try:
                from tqdm import tqdm  # optional
            except ImportError:
                pass
            else:

                class _Bar(tqdm):  # type: ignore[misc,type-arg]
                    # tqdm's monitor thread outlives the bar: a thread alive when fork-context
                    # workers start can deadlock them, so our bars start none.
                    monitor_interval = 0

                self._tqdm = _Bar(total=total, desc=self.label, unit="batch", file=self.stream)

    def update(self, stats: Any) -> None:
        """One more batch taken; ``stats`` (an EpochStats) gives the rates when redrawing."""
        self.done += 1
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < _REDRAW_S and self.done < self.total:
            if self._tqdm is not None:
                self._tqdm.update(1)
            return
        self._last = now
        samples_per_s, wait_fraction = stats.summary_fast()
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(
                f"{samples_per_s:,.0f} samples/s, waited {wait_fraction:.0%}", refresh=False
            )
            self._tqdm.update(1)
            return
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {self.done}/{self.total} "
            f"{samples_per_s:10,.0f} samples/s  waited {wait_fraction:4.0%}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False
