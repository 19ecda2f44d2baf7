"""What the http(s):// and s3:// backends share: a Transport and the read path.

Every read is pinned to the versions the backend saw (HEAD, listing: see
``version_pins``); a server that ignores Range is remembered per host, so each of its
objects is then read with one streamed GET (and the user is warned once).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from fastload.errors import ObjectChangedError, RangeIgnoredWarning, ReadTimeoutError
from fastload.storage.read_settings import ReadSettings
from fastload.storage.transport import Transport
from fastload.storage.uri import ParsedURI, redact
from fastload.storage.version_pins import Pin, VersionPins


class NetworkBackend:
    """Subclasses say how to address (and sign) each source; the rest is common."""

    transport: Transport
    pins: VersionPins

    def __init__(self) -> None:
        self.pins = VersionPins()
        self._range_ignoring_hosts: set[str] = set()
        self._hosts_lock = threading.Lock()

    def size(self, src: ParsedURI) -> int:
        raise NotImplementedError

    def adopt_versions(self, other: NetworkBackend) -> None:
        """Take what ``other`` (a backend of the same options) has seen: the versions its
        HEADs pinned and the servers that ignore Range."""
        for key, pin in list(other.pins.table.items()):
            self.pins.remember(key, pin)
        with self._hosts_lock:
            self._range_ignoring_hosts |= set(other._range_ignoring_hosts)

    def _requests(self, sources: Sequence[ParsedURI]) -> tuple[Sequence[bytes], Sequence[Any]]:
        """Per source: the URL, and None or the '\\n'-joined headers every GET carries."""
        raise NotImplementedError

    def name(self, src: ParsedURI) -> str:
        """How errors name ``src`` (no password or presigned credentials)."""
        return src.display

    def pin_key(self, src: ParsedURI) -> Hashable:
        """The key of ``src`` in ``pins``."""
        return src.uri

    def host(self, src: ParsedURI) -> str:
        """The server of ``src`` (whether it honours Range is remembered per server)."""
        return src.netloc.rpartition("@")[2]

    def ignores_range(self, src: ParsedURI) -> bool:
        """Whether the server of ``src`` is known to ignore Range (then every read of one of
        its objects is one streamed GET from byte 0: read an object in one call, not in
        chunks, or each chunk streams the object again from its start)."""
        return self.host(src) in self._range_ignoring_hosts

    def pin_of(self, src: ParsedURI) -> Pin | None:
        """The version reads of ``src`` must see, when one is known."""
        return self.pins.get(self.pin_key(src))

    def forget_version(self, src: ParsedURI) -> None:
        self.pins.forget(self.pin_key(src))

    def _native_pins(self, sources: Sequence[ParsedURI]) -> list[Any] | None:
        """Per source None or (total, etag, last_modified, range_ignored) for the native
        reader; None when nothing is known (the common case of a first read)."""
        hosts = self._range_ignoring_hosts
        out: list[Any] = []
        known = False
        for s in sources:  # a loader batch has hundreds of sources: kept lean
            pin = self.pin_of(s)
            ignored = bool(hosts) and self.host(s) in hosts
            if pin is None and not ignored:
                out.append(None)
            else:
                known = True
                out.append((*(pin or Pin()), ignored))
        return out if known else None

    def read_into(
        self,
        sources: Sequence[ParsedURI],
        table: np.ndarray,
        out: Any,
        *,
        settings: ReadSettings,
        cancel: Any = None,
        timeout: float | None = None,
    ) -> None:
        """Rows (src, offset, length, dst) of ``table`` into ``out``."""
        urls, headers = self._requests(sources)
        names = [self.name(s) for s in sources]
        try:
            ignored = self.transport.read(
                urls,
                headers,
                names,
                table,
                out,
                settings.part_size_for(sources[0].scheme),
                settings.inflight_for_parts(sources[0].scheme, table[:, 2]),
                timeout,
                cancel,
                size_of=lambda i: self.size(sources[i]),
                pins=self._native_pins(sources),
            )
        except ObjectChangedError as exc:
            # the pinned version is gone: the next size() or read sees the new one
            for s, n in zip(sources, names, strict=True):
                if n == exc.uri:
                    self.forget_version(s)
            raise
        except ReadTimeoutError as exc:
            if settings.timeout is not None:  # the knob, not only the time that was left
                exc.args = (f"{exc.args[0]} (timeout={settings.timeout:g}s)",)
            raise
        if ignored:
            self._note_range_ignored([sources[i] for i in ignored])

    def _note_range_ignored(self, sources: Sequence[ParsedURI]) -> None:
        for s in sources:
            host = self.host(s)
            with self._hosts_lock:
                new = host not in self._range_ignoring_hosts
                self._range_ignoring_hosts.add(host)
            if new:
                warnings.warn(
                    f"{self.name(s)}: the server {redact('x://' + host)[4:]} ignores Range (it "
                    "answered a ranged GET with the whole object); fastload reads each of its "
                    "objects with one streamed GET from now on",
                    RangeIgnoredWarning,
                    stacklevel=2,
                )

    def stats(self) -> dict[str, int]:
        """Data-plane counters: requests, retries, connects (new connections), bytes, writes
        (callbacks), streams (objects read whole because the server ignored Range)."""
        return self.transport.stats()

    def close(self) -> None:
        self.transport.close()
