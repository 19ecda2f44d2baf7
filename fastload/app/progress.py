"""A one-line progress bar for the CLI: tqdm when installed, else a plain one on a TTY."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Counts bytes; draws only when ``stream`` is a terminal."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._tqdm: Any = None
        self.enabled = self.stream.isatty()
        if self.enabled:
            try:
                from tqdm import tqdm  # optional extra

                self._tqdm = tqdm(
                    total=total, unit="B", unit_scale=True, desc=label, file=self.stream
                )
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(n)
            return
        now = time.perf_counter()
        if now - self._last_draw >= 0.1 or self.done >= self.total:
            self._last_draw = now
            frac = self.done / self.total if self.total else 1.0
            rate = self.done / max(now - self.start, 1e-9) / 1e6
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {frac:6.1%} {rate:8.1f} MB/s")
            self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            self.stream.write("\n")
            self.stream.flush()
