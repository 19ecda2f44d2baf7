"""A one-line progress bar for the CLI: bytes, percent, rate and ETA, redrawn smoothly.

A thread redraws the line every ``interval`` seconds (0.1 s) while the transfer runs, so
the bar, the elapsed time and the ETA move even between completed chunks. The byte count
is what the caller reported done (``update``), raised to what a ``live`` callable says
has arrived so far (the network backends' native byte counters, which move as each
ranged part completes). The rate is measured over the last few seconds. Nothing is drawn
unless the stream is a terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

WIDTH = 24
RATE_WINDOW_S = 3.0


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Progress:
    """Counts bytes of a transfer of ``total``; draws on ``stream`` (stderr) when a terminal."""

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        *,
        live: Callable[[], int] | None = None,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.live = live
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.start = clock()
        self.draws = 0
        self._samples: deque[tuple[float, int]] = deque([(self.start, 0)])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.enabled = self.stream.isatty()
        if self.enabled:
            self._thread = threading.Thread(
                target=self._tick, name="fastload-progress", daemon=True
            )
            self._thread.start()

    def update(self, n: int) -> None:
        """``n`` more bytes are done."""
        self.done += n

    def current(self) -> int:
        """Bytes done so far: the larger of what was reported and what the live counter says."""
        live = 0
        if self.live is not None:
            try:
                live = int(self.live())
            except Exception:  # a counter that cannot be read only makes the bar coarser
                live = 0
        return min(max(self.done, live), self.total) if self.total else self.done

    def render(self, now: float | None = None) -> str:
        """The line as it is drawn at ``now``."""
        now = self.clock() if now is None else now
        got = self.current()
        self._samples.append((now, got))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        rate = (got - b0) / (now - t0) if now > t0 else 0.0
        frac = got / self.total if self.total else 1.0
        bar = "#" * int(frac * WIDTH)
        if got >= self.total:
            eta = f"in {_clock(now - self.start)}"
        elif rate > 0:
            eta = f"ETA {_clock((self.total - got) / rate)}"
        else:
            eta = "ETA --:--"
        speed = f"{rate / 1e6:8.1f} MB/s" if rate > 0 else "    -- MB/s"
        return (
            f"{self.label} [{bar:<{WIDTH}}] {frac:6.1%} {human_bytes(got)} / "
            f"{human_bytes(self.total)} {speed} {eta}"
        )

    def draw(self) -> None:
        with self._lock:
            line = self.render()
            self.stream.write("\r" + line + "\x1b[K")  # erase what a longer line left
            self.stream.flush()
            self.draws += 1

    def _tick(self) -> None:
        self.draw()
        while not self._stop.wait(self.interval):
            self.draw()

    def close(self) -> None:
        """Stop redrawing; the final line stays, followed by a newline."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.draw()
        self.stream.write("\n")
        self.stream.flush()
