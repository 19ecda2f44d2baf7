"""http(s):// objects for the range engine: HEAD for sizes, ranged GETs for data."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from fastload._native.status import Status
from fastload.errors import raise_native_error
from fastload.storage.network_backend import NetworkBackend
from fastload.storage.network_options import NetworkOptions
from fastload.storage.secret import RedactedList
from fastload.storage.transport import Response, Transport
from fastload.storage.uri import ParsedURI, redact
from fastload.storage.version_pins import Pin

# an object size past this is no size (it would overflow the int64 every read uses)
MAX_OBJECT_SIZE = (1 << 63) - 1


def _byte_count(text: str) -> int | None:
    n = int(text) if text.isdigit() else None
    return n if n is not None and n <= MAX_OBJECT_SIZE else None


def content_range_total(value: str) -> int | None:
    """N of ``bytes a-b/N`` (or ``bytes */N``); None when unknown (or no byte count)."""
    return _byte_count(value.rpartition("/")[2].strip())


def pin_from_headers(resp: Response, size: int | None) -> Pin:
    """The version a HEAD (or first-byte GET) answered about: reads must see the same."""
    return Pin(size, resp.headers.get("etag") or None, resp.headers.get("last-modified") or None)


def size_from_headers(resp: Any) -> int | None:
    """Object size from a HEAD (Content-Length) or ranged GET (Content-Range) answer."""
    cr = resp.headers.get("content-range")
    if cr:
        return content_range_total(cr)
    return _byte_count(resp.headers.get("content-length", "")) if resp.status == 200 else None


class HttpBackend(NetworkBackend):
    """Plain HTTP(S) servers that honour Range (or answer 200 with the whole body)."""

    def __init__(self, opts: NetworkOptions) -> None:
        super().__init__()
        self.opts = opts
        self.transport = Transport(opts, follow_redirects=opts.follow_redirects)

    def size(self, src: ParsedURI) -> int:
        name = self.name(src)
        resp = self.transport.request("HEAD", src.uri, [], name, accept=(200, 405, 501))
        n = size_from_headers(resp)
        if n is None:
            # HEAD refused or without a length: ask for the first byte and read Content-Range.
            resp = self.transport.request(
                "GET", src.uri, ["Range: bytes=0-0"], name, accept=(200, 206)
            )
            n = size_from_headers(resp)
            if n is None and resp.status == 200:
                n = len(resp.body)
        if n is None:
            raise_native_error(
                Status.HTTP,
                name,
                http_status=resp.status,
                message="the server reported no object size (no Content-Length or Content-Range "
                "with a byte count up to 2**63-1)",
            )
        self.pins.remember(self.pin_key(src), pin_from_headers(resp, n))
        return n

    def list(self, prefix: ParsedURI) -> list[str]:
        raise_native_error(
            Status.UNSUPPORTED,
            self.name(prefix),
            message="http(s):// has no standard listing; give object URLs, or use s3://",
        )

    def name(self, src: ParsedURI) -> str:
        return redact(src.uri)

    # builtins.list: the method ``list`` shadows the builtin in this class body.
    def _requests(
        self, sources: Sequence[ParsedURI]
    ) -> tuple[RedactedList[bytes], builtins.list[None]]:
        # a URL may carry a password or a presigned signature: never shown in a traceback
        return RedactedList([s.uri.encode() for s in sources]), [None] * len(sources)
