"""What a listing hands a dataset: the objects under a prefix, parsed only when used.

A dataset over 100,000 listed files needs their URIs and sizes at once, but a parsed
``ParsedURI`` only for the objects a batch reads: building 100,000 of them up front
cost about as much as the listing itself. The listing knows how each URI splits (its
scheme, where the path or key starts), so parsing one later is a slice, not a parse.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from fastload.storage.uri import ParsedURI


class ListedSources(Sequence[ParsedURI]):
    """The ``ParsedURI`` of each of ``uris`` (all listed under one prefix), made on first
    use. ``uris[i][start:]`` is the path (file, direct) or key (s3) of object ``i``."""

    __slots__ = ("uris", "scheme", "start", "bucket", "_parsed")

    def __init__(self, uris: list[str], scheme: str, start: int, bucket: str = "") -> None:
        self.uris = uris
        self.scheme = scheme
        self.start = start
        self.bucket = bucket
        self._parsed: dict[int, ParsedURI] = {}

    def __len__(self) -> int:
        return len(self.uris)

    @overload
    def __getitem__(self, i: int) -> ParsedURI: ...

    @overload
    def __getitem__(self, i: slice) -> list[ParsedURI]: ...

    def __getitem__(self, i: int | slice) -> ParsedURI | list[ParsedURI]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self.uris)))]
        hit = self._parsed.get(i)
        if hit is None:
            uri = self.uris[i]  # IndexError here, as a list raises it
            hit = ParsedURI(uri, self.scheme, uri[self.start :], bucket=self.bucket)
            self._parsed[i if i >= 0 else i + len(self.uris)] = hit
        return hit

    def __iter__(self) -> Iterator[ParsedURI]:
        for i in range(len(self.uris)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListedSources):
            return self.uris == other.uris and self.scheme == other.scheme
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable cache, compared by value

    def __repr__(self) -> str:
        return f"ListedSources({len(self.uris)} objects under {self.scheme}://)"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "uris": self.uris,
            "scheme": self.scheme,
            "start": self.start,
            "bucket": self.bucket,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        self._parsed = {}
