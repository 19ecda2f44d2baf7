"""Which version of an object is there: its size and a tag that changes when it is rewritten.

The tag is the ETag when the store gives a real one, else the modification time (rclone
with ``--etag-hash ''`` answers ``""``; local files have no ETag). Indexes and cache
entries record (size, tag) and compare it with the object's current version, so a shard
rewritten after it was indexed or cached is noticed instead of read at stale offsets.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os

from fastload.storage.uri import ParsedURI

Version = tuple[int, str | None]


def _seconds(last_modified: str) -> int | None:
    """Whole seconds since the epoch of an HTTP date or an ISO 8601 time (listings)."""
    text = last_modified.strip()
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp())


def version_tag(etag: str | None, last_modified: str | None) -> str | None:
    """``etag:<ETag>`` when there is a real ETag, else ``mtime:<seconds>``, else None."""
    e = (etag or "").strip().strip('"')
    if e:
        return f"etag:{e}"
    if last_modified:
        s = _seconds(last_modified)
        if s is not None:
            return f"mtime:{s}"
    return None


def local_version(path: str) -> Version:
    st = os.stat(path)
    return int(st.st_size), f"mtime_ns:{st.st_mtime_ns}"


def object_version(engine: object, src: ParsedURI, *, fresh: bool = True) -> Version:
    """(size, tag) of ``src`` now. ``fresh=False`` may answer from an earlier listing
    (no request); a backend that knows no tag (plain HTTP) gives tag None.

    ``engine`` is a RangeEngine (typed loosely: this module sits below the engine)."""
    if src.is_local:
        return local_version(src.path)
    backend = engine.backend(src.scheme)  # type: ignore[attr-defined]
    if not fresh:
        known = getattr(backend, "known_version", None)
        hit = known(src) if known is not None else None
        if hit is not None:
            return hit
    stat = getattr(backend, "stat", None)
    if stat is None:
        return int(backend.size(src)), None
    info = stat(src)
    return int(info["size"]), version_tag(info.get("etag"), info.get("last_modified"))
