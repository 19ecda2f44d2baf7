"""The version of each object a network backend has seen (HEAD, a listing): the reads
that follow must see the same one.

A dataset takes its sizes (and so its record offsets) from a HEAD or a listing; a read
of an object rewritten since would otherwise return bytes of the new version laid out
by the old one. The native reader compares every response with the pin (ETag, else
Last-Modified, and the size) and fails with ObjectChangedError; the backend then
forgets the pin, so the next size() or read sees the new version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import NamedTuple

PIN_LIMIT = 1 << 16  # objects remembered per backend; the oldest go first


class Pin(NamedTuple):
    """A version (a tuple: cheap, since a loader batch pins hundreds of objects)."""

    total: int | None = None  # size in bytes
    etag: str | None = None
    last_modified: str | None = None


class VersionPins:
    """Pins by object key; thread-safe (the loader's reader threads share a backend)."""

    def __init__(self, limit: int = PIN_LIMIT) -> None:
        self._pins: dict[Hashable, Pin] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def remember(self, key: Hashable, pin: Pin) -> None:
        with self._lock:
            self._pins.pop(key, None)
            if len(self._pins) >= self._limit:
                self._pins.pop(next(iter(self._pins)))
            self._pins[key] = pin

    def get(self, key: Hashable) -> Pin | None:
        return self._pins.get(key)

    @property
    def table(self) -> dict[Hashable, Pin]:
        """The pins by key, for lookups in a tight loop (do not modify)."""
        return self._pins

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._pins.pop(key, None)

    def forget_where(self, match: Callable[[Hashable], bool]) -> None:
        """Forget every pin whose key ``match`` accepts."""
        with self._lock:
            for key in [k for k in self._pins if match(k)]:
                del self._pins[key]

    def __len__(self) -> int:
        return len(self._pins)
