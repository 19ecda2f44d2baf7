"""What the range engine asks of a storage backend (file, http(s), s3): one Protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from fastload.storage.read_settings import ReadSettings
from fastload.storage.uri import ParsedURI


class Backend(Protocol):
    """One kind of storage. ``read_into`` gets rows ``(src, offset, length, dst)`` of an
    int64 table already checked against ``sources`` (all of this backend's scheme) and a
    flat writable byte view that holds every destination."""

    def size(self, src: ParsedURI) -> int: ...

    def list(self, prefix: ParsedURI) -> list[str]: ...

    def read_into(
        self,
        sources: Sequence[ParsedURI],
        table: np.ndarray,
        out: Any,
        *,
        settings: ReadSettings,
        cancel: Any = None,
        timeout: float | None = None,
    ) -> None: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...
