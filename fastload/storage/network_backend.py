"""What the http(s):// and s3:// backends share: a Transport and the read path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastload.storage.read_settings import ReadSettings
from fastload.storage.transport import Transport
from fastload.storage.uri import ParsedURI


class NetworkBackend:
    """Subclasses say how to address (and sign) each source; the rest is common."""

    transport: Transport

    def size(self, src: ParsedURI) -> int:
        raise NotImplementedError

    def _requests(self, sources: Sequence[ParsedURI]) -> tuple[list[bytes], list[bytes | None]]:
        """Per source: the URL, and None or the '\\n'-joined headers every GET carries."""
        raise NotImplementedError

    def name(self, src: ParsedURI) -> str:
        """How errors name ``src``."""
        return src.uri

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
        self.transport.read(
            urls,
            headers,
            [self.name(s) for s in sources],
            table,
            out,
            settings.part_size_for(sources[0].scheme),
            settings.inflight_for_parts(sources[0].scheme, table[:, 2]),
            timeout,
            cancel,
            size_of=lambda i: self.size(sources[i]),
        )

    def stats(self) -> dict[str, int]:
        """Data-plane counters: requests, retries, connects (new connections), bytes, writes (callbacks)."""
        return self.transport.stats()

    def close(self) -> None:
        self.transport.close()
