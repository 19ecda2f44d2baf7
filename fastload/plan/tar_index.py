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
    GLOBAL_REFUSED,
    GNU_SPARSE,
    LONG_LINK,
    LONG_NAME,
    NO_DATA,
    PAX,
    PAX_GLOBAL,
    SOLARIS_PAX,
    is_zero_block,
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
MAX_TAIL = 8 << 20  # zero padding after the end blocks checked as such (tar -b 16384)
META = (LONG_NAME, LONG_LINK, PAX, SOLARIS_PAX, PAX_GLOBAL)  # headers about the next member
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
        self.done = False
        self.tail: int | None = None  # where the end blocks start, while checking the rest
        self.long_name: str | None = None
        self.pax: dict[str, str] = {}
        self._names: list[str] = []
        self._offsets: list[int] = []
        self._sizes: list[int] = []
        if size == 0:  # as webdataset (tarfile's "empty file") and GNU tar: no tar
            self._fail(
                TarFormatError(f"{src.display}: an empty object (0 bytes) is not a tar shard")
            )

    def request(self) -> tuple[int, int]:
        return self.pos, min(self.window, self.size - self.pos)

    def feed(self, data: bytes) -> None:
        try:
            if self.tail is not None:
                self._check_tail(data, 0)
            else:
                self._feed(data)
        except TarFormatError as exc:
            self._fail(exc)

    def _fail(self, exc: TarFormatError) -> None:
        if self.on_error == "raise":
            raise exc
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
                rest = self.size - self.pos
                if rel + rest > len(data):
                    break  # the rest is in the next window
                if is_zero_block(data[rel : rel + rest]):
                    self.done = True  # end blocks cut short: no member is lost
                    break
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
                self._end_of_archive(data, rel)
                break
            start = self.pos + BLOCK
            size = header.size
            if header.is_file:
                size = pax_size(self.pax, size, uri, self.pos)
            if start + size > self.size:
                raise TarFormatError(
                    f"{uri}: member {self._member_name(header.name)!r} "
                    f"({size} bytes at byte {start}) runs past the end of the shard "
                    f"({self.size} bytes): the shard is truncated or the header lies about "
                    f"the size"
                )
            if header.typeflag in META:
                if size > MAX_META:
                    raise TarFormatError(
                        f"{uri}: a {size}-byte extended header at byte {self.pos} (at most "
                        f"{MAX_META} accepted)"
                    )
                if rel + BLOCK + size > len(data):
                    grow_to = BLOCK + padded(size) + BLOCK
                    break  # read again from this header with a window that holds its data
                self._meta(header.typeflag, data[rel + BLOCK : rel + BLOCK + size])
            else:
                if header.is_file and size <= INLINE_MAX and rel + BLOCK + size > len(data):
                    break  # a small member cut by the window: the next window starts here
                name = self._member_name(header.name)
                if header.typeflag == GNU_SPARSE or any(
                    k.startswith("GNU.sparse.") for k in self.pax
                ):
                    raise TarFormatError(
                        f"{uri}: member {self.pax.get('GNU.sparse.name', name)!r} (header at "
                        f"byte {self.pos}) is a GNU sparse "
                        f"file: its bytes are not one range of the shard (write the shard "
                        f"without --sparse)"
                    )
                if header.typeflag in NO_DATA and header.size:
                    raise TarFormatError(
                        f"{uri}: member {name!r} (header at byte {self.pos}, type "
                        f"{header.typeflag.decode('latin-1')!r}: a link, device, folder or "
                        f"fifo) claims {header.size} bytes of data: tar readers disagree on "
                        f"where the next header is"
                    )
                if header.is_file:
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

    def _meta(self, typeflag: bytes, body: bytes) -> None:
        """An extended header's data: the next member's long name or pax records."""
        uri = self.src.display
        if typeflag == LONG_NAME:
            name = body.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            self._set_name(name, "GNU long name")
            self.long_name = name
        elif typeflag in (PAX, SOLARIS_PAX):
            records = parse_pax(body, uri, self.pos)
            old = self.pax.get("size")
            if old is not None and records.get("size", old) != old:  # tar readers disagree
                raise TarFormatError(
                    f"{uri}: two pax headers before the member at byte {self.pos} give it "
                    f"the sizes {old!r} and {records['size']!r}"
                )
            if "path" in records:
                self._set_name(records["path"], "pax path")
            self.pax = {**self.pax, **records}
        elif typeflag == PAX_GLOBAL:
            records = parse_pax(body, uri, self.pos)
            refused = [k for k in records if k in GLOBAL_REFUSED or k.startswith("GNU.sparse.")]
            if refused:
                raise TarFormatError(
                    f"{uri}: the pax global header at byte {self.pos} sets "
                    f"{', '.join(repr(k) for k in refused)} for every member after it "
                    f"(webdataset would rename or resize them all): not a shard"
                )
        # LONG_LINK: the target of a link, and links are skipped

    def _set_name(self, name: str, what: str) -> None:
        uri = self.src.display
        if not name:
            raise TarFormatError(f"{uri}: an empty {what} in the header at byte {self.pos}")
        earlier = self.long_name if self.long_name is not None else self.pax.get("path")
        if earlier is not None and earlier != name:
            # Python's tarfile (webdataset) keeps the first, GNU tar the last
            raise TarFormatError(
                f"{uri}: the {what} at byte {self.pos} names the next member {name!r}, but an "
                f"extended header before it named it {earlier!r}"
            )

    def _member_name(self, plain: str) -> str:
        if self.long_name is not None:
            return self.long_name
        return self.pax.get("path", plain)

    def _end_of_archive(self, data: bytes, rel: int) -> None:
        rest = self.size - self.pos
        if rest <= 2 * RECORD:  # what writers pad with (tar ignores whatever it holds)
            self.done = True
            return
        if rest > MAX_TAIL:
            raise TarFormatError(
                f"{self.src.display}: a zero block (end of archive) at byte {self.pos}, but "
                f"{rest} bytes follow: the member before it may lie about its size"
            )
        # a larger blocking factor (tar -b 2048) pads with more zeros: check they are zeros
        self.tail = self.pos
        self._check_tail(data, rel)

    def _check_tail(self, data: bytes, rel: int) -> None:
        chunk = data[rel:]
        if not is_zero_block(chunk):
            at = self.pos + next(i for i, b in enumerate(chunk) if b)
            raise TarFormatError(
                f"{self.src.display}: a zero block (end of archive) at byte {self.tail}, but "
                f"non-zero bytes at byte {at} follow: the member before it may lie about its "
                f"size"
            )
        self.pos += len(chunk)
        self.window = MAX_WINDOW
        self.done = self.pos >= self.size

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
