"""The tar format, as far as finding members by byte range needs it.

A tar is a sequence of 512-byte headers, each followed by its member's data padded to
512 bytes, and ends with zero blocks. Only headers are parsed here: ustar (name + prefix),
v7, GNU long names (``L``; ``K`` long link names are skipped) and pax extended headers
(``x``, and Solaris' ``X``: ``path`` and ``size``; ``g`` global headers are skipped unless they
would rename or resize every member after them). Every header's checksum is verified, so a
member whose header lies about its size is caught at the next header. Compressed tars and
sparse members (their bytes are not one range) are refused.

Member names become (key, extension) as webdataset reads them (``split_key``), and a name
webdataset would read differently from the plain rule (``key_conflict``) is refused rather
than read one way or the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastload.errors import TarFormatError

BLOCK = 512
REGULAR = (b"0", b"\0", b"7")  # file, old-style file, contiguous file
LONG_NAME = b"L"
LONG_LINK = b"K"  # a GNU long link target: only links have one (their data is skipped)
PAX = b"x"
SOLARIS_PAX = b"X"  # Solaris' pax extended header: read as "x" (as Python's tarfile does)
PAX_GLOBAL = b"g"
GNU_SPARSE = b"S"
# hard link, symlink, char/block device, folder, fifo: no data. Python's tarfile (so
# webdataset) reads the next header right after theirs while GNU tar skips their size.
NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")
# pax records that apply to every later member when in a global header; webdataset's tarfile
# renames or resizes every member by them (reading other bytes than the header's size says)
GLOBAL_REFUSED = ("path", "size")
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_XZ = b"\xfd7zXZ"
_BZIP2 = b"BZh"
_OCTAL_DIGITS = re.compile(rb"[0-7]+")


@dataclass(frozen=True)
class Header:
    """One parsed header: member ``name``, data ``size`` and ``typeflag``."""

    name: str
    size: int
    typeflag: bytes

    @property
    def is_file(self) -> bool:
        return self.typeflag in REGULAR


def padded(size: int) -> int:
    """Bytes a member's data takes in the archive (rounded up to whole blocks)."""
    return -(-size // BLOCK) * BLOCK


def _octal(field: bytes, what: str, uri: str, offset: int) -> int:
    """A numeric field: octal digits (NUL/space padded), or GNU base-256. Only plain digits
    are accepted: Python's int() would also take "-1", "+7", "0o7" and "1_0", and a
    negative size walks the index backwards (a hang on a crafted shard)."""
    if field[:1] and field[0] & 0x80:  # GNU base-256: big-endian, top bit set
        if field[0] == 0xFF:  # the negative form: no size or checksum is negative
            raise TarFormatError(
                f"{uri}: the tar header at byte {offset} has a negative {what} field"
            )
        return int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not _OCTAL_DIGITS.fullmatch(text):
        raise TarFormatError(
            f"{uri}: the tar header at byte {offset} has a bad {what} field {text[:16]!r} "
            f"(not octal digits)"
        )
    return int(text, 8)


def pax_size(records: dict[str, str], default: int, uri: str, offset: int) -> int:
    """The ``size`` record of a pax header (decimal digits only), else ``default``."""
    text = records.get("size")
    if text is None:
        return default
    if not text.isascii() or not text.isdigit():
        raise TarFormatError(
            f"{uri}: the pax header before byte {offset} has a bad size record {text[:16]!r} "
            f"(not decimal digits)"
        )
    return int(text)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def is_zero_block(block: bytes) -> bool:
    return block.count(0) == len(block)


def refuse_compressed(head: bytes, uri: str) -> None:
    """A TarFormatError when ``head`` (the first bytes of a shard) is compressed."""
    for magic, name in ((_GZIP, "gzip"), (_ZSTD, "zstd"), (_XZ, "xz"), (_BZIP2, "bzip2")):
        if head.startswith(magic):
            raise TarFormatError(
                f"{uri}: a {name}-compressed tar; members of a compressed tar cannot be read "
                f"by range (store shards as plain .tar)"
            )


def parse_header(block: bytes, uri: str, offset: int) -> Header | None:
    """The header in the 512 bytes ``block`` read at ``offset`` of ``uri``; None for a zero
    block (the end of the archive). A checksum that does not match raises TarFormatError."""
    if len(block) < BLOCK:
        raise TarFormatError(
            f"{uri}: the shard ends inside the tar header at byte {offset} "
            f"({len(block)} of {BLOCK} bytes): truncated"
        )
    if is_zero_block(block):
        return None
    try:
        stored = _octal(block[148:156], "checksum", uri, offset)
    except TarFormatError:
        stored = -1
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:BLOCK])
    # some old writers summed signed chars
    signed = unsigned - 256 * (
        sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:BLOCK] if b > 127)
    )
    if stored not in (unsigned, signed):
        raise TarFormatError(
            f"{uri}: no valid tar header at byte {offset} (its checksum does not match)"
        )
    name = _text(block[0:100])
    if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix holds the leading directories
        prefix = _text(block[345:500])
        if prefix:
            name = f"{prefix}/{name}"
    size = _octal(block[124:136], "size", uri, offset)
    return Header(name, size, block[156:157] or b"\0")


def parse_pax(data: bytes, uri: str, offset: int) -> dict[str, str]:
    """The records ``"<len> <key>=<value>\\n"`` of a pax extended header's data."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding after the last record
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            length = -1
        end = pos + length
        if space < 0 or length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise TarFormatError(
                f"{uri}: a malformed pax record in the extended header at byte {offset}"
            )
        key, sep, value = data[space + 1 : end - 1].partition(b"=")
        if not sep:
            raise TarFormatError(
                f"{uri}: a pax record without '=' in the extended header at byte {offset}"
            )
        name = key.decode("utf-8", "surrogateescape")
        if name in ("path", "linkpath") and b"\0" in value:
            # no file name holds a NUL (and the index file separates names by it)
            raise TarFormatError(
                f"{uri}: a pax {name} record with a NUL byte in the extended header at byte "
                f"{offset}"
            )
        out[name] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


def is_meta(name: str) -> bool:
    """A webdataset metadata member (``__info__``, ``__meta__/x.json``): its first path
    component starts and ends with two underscores. webdataset skips them; so does this."""
    first, slash, _ = name.partition("/")
    if not first.startswith("__"):
        return False
    if not slash:
        first = first.removesuffix("\n")  # webdataset's pattern ends in "$": before a "\n"
        return name.endswith("__") or (len(first) >= 4 and first.endswith("__"))
    return len(first) >= 4 and first.endswith("__")


def _plain_split(name: str) -> tuple[str, str] | None:
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    if dot <= slash:  # no dot, or a name starting with one (hidden file): not a sample field
        return None
    return name[:dot], name[dot + 1 :]


def _webdataset_split(name: str) -> tuple[str, str] | None:
    """How webdataset splits ``name``: the key is a folder prefix (without a line break)
    and then a run of characters without a dot (which may hold slashes); the extension is
    everything after that dot, and holds no slash. The longest folder prefix wins."""
    starts = [i + 1 for i, ch in enumerate(name) if ch == "/"]
    nl = name.find("\n")
    for j in [s for s in reversed(starts) if nl < 0 or s <= nl] + [0]:
        dot = name.find(".", j)
        if dot > j and "/" not in name[dot + 1 :]:
            return name[:dot], name[dot + 1 :]
    return None


def key_conflict(name: str) -> str | None:
    """Why webdataset reads a (key, extension) out of ``name`` other than the plain rule
    (the key is the name up to the first dot of its last component; a name without one, or
    a hidden file, has none), or None where both agree. Only hidden files inside folders
    and line breaks in folder names can differ: webdataset keys ``d/.x.jpg`` as ``"d/"``
    and reads no key from ``"a.b\\nc/x.jpg"``."""
    slash = name.rfind("/") + 1
    hidden = slash > 0 and name.startswith(".", slash)
    if not hidden and "\n" not in name[:slash]:
        return None  # the common case: no need to work out webdataset's split
    theirs, ours = _webdataset_split(name), _plain_split(name)
    if theirs == ours:
        return None
    if ours is None:
        return (
            f"a hidden file in a folder, which webdataset reads as sample {theirs[0]!r} "
            f"(field {theirs[1]!r})"
            if theirs is not None
            else "a name webdataset and the plain rule read differently"
        )
    return (
        "a line break in a folder name holding a dot: webdataset reads no sample key "
        f"from it (the plain rule: {ours[0]!r})"
    )


def split_key(name: str) -> tuple[str, str] | None:
    """WebDataset's (key, extension) of a member name: the extension starts at the first dot
    of the last path component (``a/b/x.seg.png`` -> ``a/b/x``, ``seg.png``), lower-cased;
    None without one, for metadata (``is_meta``) and where ``key_conflict`` finds one."""
    if name.startswith("__") and is_meta(name):
        return None
    slash = name.rfind("/") + 1
    if "\n" in name or (slash and name.startswith(".", slash)):
        if key_conflict(name) is not None:
            return None
    dot = name.find(".", slash)
    if dot <= slash:  # no dot, or a name starting with one (hidden file): not a sample field
        return None
    return name[:dot], name[dot + 1 :].lower()
