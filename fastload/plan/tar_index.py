"""The member index of tar shards: where each member's data lies, built from headers only.

A shard is walked header by header: the header at ``pos`` says how far the next one is.
Each walk step reads a window at the next header: 4 KiB, doubled (up to 1 MiB) while the
members between headers are small (< 64 KiB: a round trip costs more than their bytes),
back to 4 KiB after a large member, which is jumped over unread. Every step of every shard
still walking goes into one engine call, so N shards cost one round trip per step, not N. Small members (labels) that
fall inside a window are kept, so labels need no second read.

The index is kept in a sidecar file (``save_index`` / ``load_index``; the CLI's
``fastload index``) with each shard's size and version tag, so a later run reuses it
and notices a shard that changed.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastload.errors import ObjectNotFoundError, TarFormatError
from fastload.plan.shard_uris import resolve_shards
from fastload.plan.tar_format import (
    BLOCK,
    LONG_NAME,
    PAX,
    PAX_GLOBAL,
    padded,
    parse_header,
    parse_pax,
    pax_size,
    refuse_compressed,
)
from fastload.storage.engine import RangeEngine
from fastload.storage.object_version import object_version
from fastload.storage.uri import ParsedURI, redact

MIN_WINDOW = 4096
MAX_WINDOW = 1 << 20
JUMP = 64 << 10  # members at least this large are jumped over, smaller ones read through
INLINE_MAX = 1024  # members up to this size are kept in the index (labels, metadata)
MAX_META = 1 << 20  # a long name or pax header larger than this is not a tar we accept
RECORD = 20 * BLOCK  # tar writers pad the end of an archive to whole 10 KiB records
FORMAT = "fastload.tar-index"
VERSION = 1


@dataclass
class ShardIndex:
    """Members of one shard: names, data offsets and sizes (int64), small contents inline."""

    uri: str
    size: int
    tag: str | None
    names: list[str] = field(default_factory=list)
    offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    sizes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    inline: dict[int, bytes] = field(default_factory=dict)
    problem: str | None = None  # on_error="skip": why the walk stopped before the end

    def __len__(self) -> int:
        return len(self.names)


class _Walk:
    """The walk of one shard: which window to read next, and what its bytes hold."""

    def __init__(self, src: ParsedURI, size: int, tag: str | None, on_error: str) -> None:
        self.src, self.size, self.on_error = src, size, on_error
        self.result = ShardIndex(src.uri, size, tag)
        self.pos = 0
        self.window = MIN_WINDOW
        self.done = size == 0
        self.long_name: str | None = None
        self.pax: dict[str, str] = {}
        self._names: list[str] = []
        self._offsets: list[int] = []
        self._sizes: list[int] = []

    def request(self) -> tuple[int, int]:
        return self.pos, min(self.window, self.size - self.pos)

    def feed(self, data: bytes) -> None:
        try:
            self._feed(data)
        except TarFormatError as exc:
            if self.on_error == "raise":
                raise
            if self._names and "no valid tar header" in str(exc):
                # the member before a broken header may be the one whose size lied
                for lst in (self._names, self._offsets, self._sizes):
                    lst.pop()
                self.result.inline.pop(len(self._names), None)
            self.result.problem = str(exc)
            self.done = True

    def _feed(self, data: bytes) -> None:
        uri, base = self.src.display, self.pos
        if base == 0:
            refuse_compressed(data[:8], uri)
        parsed, grow_to = 0, 0
        while not self.done:
            rel = self.pos - base
            if self.pos == self.size:  # no end-of-archive blocks: accepted, as tar does
                self.done = True
                break
            if self.pos + BLOCK > self.size:
                raise TarFormatError(
                    f"{uri}: the shard ends inside the tar header at byte {self.pos} "
                    f"({self.size - self.pos} of {BLOCK} bytes): truncated"
                )
            if rel + BLOCK > len(data):
                break  # the next header is in the next window
            try:
                header = parse_header(data[rel : rel + BLOCK], uri, self.pos)
            except TarFormatError as exc:
                if not self._names:
                    raise
                raise TarFormatError(
                    f"{exc}; the member before it, {self._names[-1]!r} ({self._sizes[-1]} "
                    f"bytes at byte {self._offsets[-1]}), may lie about its size"
                ) from None
            if header is None:
                self._end_of_archive()
                break
            start = self.pos + BLOCK
            size = header.size
            if header.typeflag in (LONG_NAME, PAX) or header.is_file:
                size = pax_size(self.pax, size, uri, self.pos) if header.is_file else size
            if start + size > self.size:
                raise TarFormatError(
                    f"{uri}: member {self.long_name or self.pax.get('path') or header.name!r} "
                    f"({size} bytes at byte {start}) runs past the end of the shard "
                    f"({self.size} bytes): the shard is truncated or the header lies about "
                    f"the size"
                )
            if header.typeflag in (LONG_NAME, PAX, PAX_GLOBAL):
                if size > MAX_META:
                    raise TarFormatError(
                        f"{uri}: a {size}-byte extended header at byte {self.pos} (at most "
                        f"{MAX_META} accepted)"
                    )
                if rel + BLOCK + size > len(data):
                    grow_to = BLOCK + padded(size) + BLOCK
                    break  # read again from this header with a window that holds its data
                body = data[rel + BLOCK : rel + BLOCK + size]
                if header.typeflag == LONG_NAME:
                    self.long_name = body.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                elif header.typeflag == PAX:
                    self.pax = parse_pax(body, uri, self.pos)
            else:
                if header.is_file and size <= INLINE_MAX and rel + BLOCK + size > len(data):
                    break  # a small member cut by the window: the next window starts here
                if header.is_file:
                    name = self.long_name or self.pax.get("path") or header.name
                    k = len(self._names)
                    self._names.append(name)
                    self._offsets.append(start)
                    self._sizes.append(size)
                    if size <= INLINE_MAX:
                        self.result.inline[k] = bytes(data[rel + BLOCK : rel + BLOCK + size])
                self.long_name, self.pax = None, {}
            self.pos = start + padded(size)
            parsed += 1
        # dense small members: widen the window; a large member: back to a small one
        # Members smaller than JUMP between headers: a round trip costs more than reading
        # through them, so the window widens; a large member is jumped over (headers only).
        overshoot = self.pos - (base + len(data))
        if grow_to:
            self.window = max(self.window, grow_to)
        elif overshoot < JUMP:
            self.window = min(self.window * 2, MAX_WINDOW)
        else:
            self.window = MIN_WINDOW

    def _end_of_archive(self) -> None:
        rest = self.size - self.pos
        if rest > 2 * RECORD:
            raise TarFormatError(
                f"{self.src.display}: a zero block (end of archive) at byte {self.pos}, but "
                f"{rest} bytes follow: the member before it may lie about its size"
            )
        self.done = True

    def finish(self) -> ShardIndex:
        r = self.result
        r.names = self._names
        r.offsets = np.asarray(self._offsets, dtype=np.int64)
        r.sizes = np.asarray(self._sizes, dtype=np.int64)
        return r


def index_shards(
    engine: RangeEngine,
    sources: Sequence[ParsedURI],
    sizes: Sequence[int],
    tags: Sequence[str | None],
    *,
    on_error: str = "raise",
) -> list[ShardIndex]:
    """Walk the headers of every shard in ``sources``, all shards in parallel."""
    walks = [_Walk(s, int(n), t, on_error) for s, n, t in zip(sources, sizes, tags, strict=True)]
    while True:
        active = [w for w in walks if not w.done]
        if not active:
            break
        reqs = [w.request() for w in active]
        lengths = np.array([n for _, n in reqs], dtype=np.int64)
        dst = np.concatenate(([0], np.cumsum(lengths)))
        table = np.stack(
            [np.arange(len(active)), [o for o, _ in reqs], lengths, dst[:-1]], axis=1
        ).astype(np.int64)
        buf = np.empty(int(dst[-1]), dtype=np.uint8)
        engine.read_into([w.src for w in active], table, buf)
        for k, w in enumerate(active):
            w.feed(buf[dst[k] : dst[k + 1]].tobytes())
    return [w.finish() for w in walks]


# -- the sidecar file --------------------------------------------------------------------


def encode_index(shards: Sequence[ShardIndex]) -> bytes:
    """The sidecar bytes of ``shards`` (an .npz of plain arrays: no pickles)."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "shards": [
            {"uri": s.uri, "size": s.size, "tag": s.tag, "members": len(s), "problem": s.problem}
            for s in shards
        ],
    }
    names = "\0".join(n for s in shards for n in s.names).encode("utf-8", "surrogateescape")
    first = np.cumsum([0] + [len(s) for s in shards])
    inline = [(int(first[i]) + k, v) for i, s in enumerate(shards) for k, v in s.inline.items()]
    blob = b"".join(v for _, v in inline)
    bounds = np.cumsum([0] + [len(v) for _, v in inline])
    out = io.BytesIO()
    np.savez(
        out,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        names=np.frombuffer(names, dtype=np.uint8),
        offsets=np.concatenate([s.offsets for s in shards] or [np.empty(0, np.int64)]),
        sizes=np.concatenate([s.sizes for s in shards] or [np.empty(0, np.int64)]),
        inline_member=np.array([k for k, _ in inline], dtype=np.int64),
        inline_bounds=np.asarray(bounds, dtype=np.int64),
        inline_blob=np.frombuffer(blob, dtype=np.uint8),
    )
    return out.getvalue()


def decode_index(data: bytes, where: str) -> list[ShardIndex]:
    """Shards of a sidecar's bytes; ValueError naming ``where`` when it is not one, or a
    damaged one (a sidecar is a file anyone can overwrite: nothing in it is trusted, and
    what it says must describe a tar before a dataset reads by its offsets)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if not isinstance(meta, dict):
                raise ValueError("its metadata is no JSON object")
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
            arrays = {k: z[k] for k in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where}: not a fastload tar index ({exc})") from None
    try:
        return _shards_of(meta, arrays)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeError) as exc:
        raise ValueError(f"{where}: a damaged fastload tar index ({exc})") from None


_ARRAYS = ("names", "offsets", "sizes", "inline_member", "inline_bounds", "inline_blob")


def _int_array(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{name} is not a flat integer array")
    return a.astype(np.int64)


def _shards_of(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[ShardIndex]:
    names_blob = arrays["names"].tobytes().decode("utf-8", "surrogateescape")
    offsets, sizes = _int_array(arrays["offsets"], "offsets"), _int_array(arrays["sizes"], "sizes")
    inline_member = _int_array(arrays["inline_member"], "inline_member")
    bounds = _int_array(arrays["inline_bounds"], "inline_bounds")
    blob = arrays["inline_blob"]
    shards = meta["shards"]
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise ValueError("its shard list is malformed")
    counts = [int(s["members"]) for s in shards]
    names = names_blob.split("\0") if names_blob or len(offsets) else []
    if min(counts, default=0) < 0 or not (len(names) == len(offsets) == len(sizes) == sum(counts)):
        raise ValueError("member counts disagree")
    if len(bounds) != len(inline_member) + 1 or np.any(np.diff(bounds) < 0):
        raise ValueError("inline bounds disagree with the inline members")
    if len(bounds) and (bounds[0] != 0 or bounds[-1] != len(blob)):
        raise ValueError("inline bounds disagree with the inline bytes")
    inline_all = {
        int(m): blob[bounds[i] : bounds[i + 1]].tobytes() for i, m in enumerate(inline_member)
    }
    out, first = [], 0
    for s, n in zip(shards, counts, strict=True):
        uri, size, tag, problem = s["uri"], int(s["size"]), s["tag"], s.get("problem")
        if not isinstance(uri, str) or not isinstance(tag, (str, type(None))):
            raise ValueError("a shard entry without a URI or with a bad tag")
        off, length = offsets[first : first + n], sizes[first : first + n]
        # what a walk of a tar gives: data after a header, in order, inside the shard
        if n and (
            off[0] < BLOCK
            or np.any(off % BLOCK)
            or np.any(length < 0)
            or np.any(off[1:] < off[:-1] + length[:-1] + BLOCK)
            or int(off[-1] + length[-1]) > size
        ):
            raise ValueError(f"the members of {redact(uri)} do not describe a tar of {size} bytes")
        inline = {m - first: v for m, v in inline_all.items() if first <= m < first + n}
        if any(len(v) != length[m] for m, v in inline.items()):
            raise ValueError(f"inline members of {redact(uri)} disagree with their sizes")
        out.append(
            ShardIndex(uri, size, tag, names[first : first + n], off, length, inline, problem)
        )
        first += n
    if len(inline_all) and (min(inline_all) < 0 or max(inline_all) >= first):
        raise ValueError("an inline member past the members")
    return out


def save_index(path: str | os.PathLike[str], shards: Sequence[ShardIndex]) -> None:
    """Write the sidecar atomically (a temporary name, fsync, rename)."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(encode_index(shards))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_index(engine: RangeEngine, uri: str) -> list[ShardIndex] | None:
    """The sidecar at ``uri`` (a path or any URI the engine reads), or None when absent."""
    try:
        data = engine.read(uri)
    except (FileNotFoundError, ObjectNotFoundError):
        return None
    return decode_index(bytes(memoryview(data)), redact(uri))  # messages: no credentials


def write_index(
    engine: RangeEngine, shards: Sequence[str], path: str | os.PathLike[str]
) -> list[ShardIndex]:
    """Index ``shards`` (URIs, prefixes or brace patterns) and write the sidecar at ``path``."""
    sources = resolve_shards(shards, engine, "fastload index")
    versions = [object_version(engine, s, fresh=False) for s in sources]
    result = index_shards(engine, sources, [v[0] for v in versions], [v[1] for v in versions])
    save_index(path, result)
    return result
