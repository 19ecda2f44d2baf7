"""ListObjectsV2 listings of one prefix: pages read by regular expressions, the next page
asked for before one is parsed, sub-prefixes listed at once, and long numbered listings
split into stretches listed at once.

S3 pages one listing strictly in turn (each page names the next), so a listing of N
pages costs N round trips plus the parsing. Three things shorten it. The next request
is sent as soon as a page's continuation token is read, so parsing overlaps the next
round trip. A prefix with sub-prefixes (the CommonPrefixes of a ``delimiter=/`` page) is
listed as several chains of pages at once, one per sub-prefix or run of adjacent
sub-prefixes, each keeping only the keys of its own sub-prefixes; the chain over the
prefix itself keeps its direct keys. And a full page of numbered keys (``k00000`` ...
``k00999``) gives guesses of where the next pages end: the rest is listed as stretches
from after one guess (``start-after``) up to the next, at once. Each stretch keeps
exactly its own keys, so a wrong guess costs a request, never a key.

With ``concurrency`` 1 a listing is one chain of pages without a delimiter, one request
at a time. Otherwise a prefix with folders costs one request more than its pages (the
delimiter page), a page of many folders starts at most CHAINS_PER_PAGE_PER_REQUEST x
concurrency chains, and a split at most ``concurrency`` requests past the last key.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn
from urllib.parse import unquote_plus

from fastload._native.status import Status
from fastload.errors import raise_native_error

# fetch(query) -> (body, HTTP status): one signed ListObjectsV2 request of the bucket
Fetch = Callable[[dict[str, str]], tuple[bytes, int]]

# At most this many chains start from one delimiter page: a page of 1,000 tiny folders
# becomes runs of adjacent folders, not 1,000 requests.
CHAINS_PER_PAGE_PER_REQUEST = 4

_KEY = re.compile(rb"<Key>([^<]*)</Key>")
_SIZE = re.compile(rb"<Size>([^<]*)</Size>")
_ETAG = re.compile(rb"<ETag>([^<]*)</ETag>")
_MTIME = re.compile(rb"<LastModified>([^<]*)</LastModified>")
_PREFIX = re.compile(rb"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>")
_TRUNCATED = re.compile(rb"<IsTruncated>\s*(\w*)\s*</IsTruncated>")
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_ENCODING = re.compile(rb"<EncodingType>\s*([^<\s]*)\s*</EncodingType>")
# the page's last bytes: its root element closed (a body cut short loses keys silently)
_END = re.compile(rb"</(?:[\w.-]+:)?ListBucketResult>\s*\Z")
_INT64_MAX = (1 << 63) - 1
MAX_KEY_BYTES = 1024  # S3's longest key (UTF-8)


class Page(NamedTuple):
    """One page's objects (directory markers, keys ending in '/', left out), their sizes,
    ETags and Last-Modified texts (as sent: decoded on use), the sub-prefixes, and the
    directory markers (an empty folder made by a console or by s3fs's mkdir is one)."""

    keys: list[str]
    sizes: list[int]
    etags: list[bytes | str | None]
    mtimes: list[bytes | str | None]
    prefixes: list[str]
    markers: list[str]


def tag_text(raw: bytes | str | None) -> str | None:
    """An ETag or Last-Modified as a page sent it, as text (XML entities resolved)."""
    if raw is None or isinstance(raw, str):
        return raw
    text = raw.decode("utf-8", "replace")
    return html.unescape(text) if "&" in text else text


def _not_a_page(uri: str, status: int, why: str) -> NoReturn:
    raise_native_error(
        Status.HTTP, uri, http_status=status, message=f"ListObjectsV2 answer is not XML: {why}"
    )
    raise AssertionError("unreachable")


def _bad_page(uri: str, status: int, why: str) -> NoReturn:
    raise_native_error(Status.HTTP, uri, http_status=status, message=f"ListObjectsV2 {why}")
    raise AssertionError("unreachable")


def _check_body(body: bytes, uri: str, status: int) -> None:
    """What no S3 page holds: a DTD (entity declarations: a billion laughs, an external
    file), or an end cut off (the keys after the cut would be lost without a word)."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        _not_a_page(uri, status, "it declares a DTD or entities (refused, never expanded)")
    if b"ListBucketResult" in body and _END.search(body[-200:]) is None:
        _not_a_page(uri, status, "it ends before </ListBucketResult> (cut short)")


def _size(raw: bytes | str, uri: str, status: int) -> int:
    """A <Size>: a number of bytes in 0..2**63-1 (empty: 0)."""
    text = raw.strip()
    if not text:
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= _INT64_MAX:
        shown = text[:40].decode("ascii", "replace") if isinstance(text, bytes) else text[:40]
        _not_a_page(uri, status, f"an object's Size is {shown!r}, not a number of bytes")
    return n


def _encoded(body: bytes) -> bool:
    """Whether the page's keys are URL-encoded: decode them only when the server says so
    (some ignore encoding-type)."""
    m = _ENCODING.search(body)
    return m is not None and m.group(1) == b"url"


def _key_text(raw: bytes, encoded: bool) -> str:
    text = raw.decode("utf-8")
    if "&" in text:
        text = html.unescape(text)
    if encoded and ("%" in text or "+" in text):
        text = unquote_plus(text)
    return text


def next_token(
    body: bytes, uri: str, status: int, previous: str | None, seen: set[str] | None = None
) -> str | None:
    """The continuation token of a page, None on the last page; raises for a truncated
    page that names no new token (going on would loop forever, stopping would lose keys).
    ``seen``: the tokens of the chain so far (the new one is added); a token seen before
    is a loop however long its cycle."""
    _check_body(body, uri, status)
    m = _TRUNCATED.search(body)
    if m is None:
        if b"IsTruncated" not in body:
            return None
        _, truncated, token = _tree(body, uri, status)  # a namespace prefix on the tags
    else:
        truncated = m.group(1).lower() == b"true"
        t = _TOKEN.search(body)
        token = html.unescape(t.group(1).decode("utf-8", "replace")) if t else None
    if not truncated:
        return None
    _check_token(token, previous, seen, uri, status)
    if seen is not None:
        seen.add(token)  # type: ignore[arg-type]
    return token


def _check_token(
    token: str | None, previous: str | None, seen: set[str] | None, uri: str, status: int
) -> None:
    if not token or token == previous or (seen is not None and token in seen):
        _bad_page(
            uri,
            status,
            "answered IsTruncated with "
            + (
                "the same NextContinuationToken again"
                if token == previous and token
                else "a NextContinuationToken it sent before (the listing would loop)"
                if token
                else "no NextContinuationToken"
            ),
        )


def read_page(body: bytes, uri: str, status: int, root: str | None = None) -> Page:
    """The objects and sub-prefixes of a ListObjectsV2 answer; with ``root`` (the prefix
    asked for), a key or sub-prefix outside it is refused (no server lists one).

    Regular expressions over its few fixed elements (key text is escaped, so no tag
    can appear inside one); an answer they do not account for in full (namespace
    prefixes, an object without a Size) goes through an XML parser instead."""
    page = _read_page(body, uri, status)
    if root:
        outside = next((k for k in page.keys + page.prefixes if not k.startswith(root)), None)
        if outside is not None:
            shown = repr(outside[:100]) + ("..." if len(outside) > 100 else "")
            _bad_page(uri, status, f"named the key {shown}, outside the prefix {root!r}")
    return page


def _read_page(body: bytes, uri: str, status: int) -> Page:
    _check_body(body, uri, status)
    if b"<ListBucketResult" not in body:
        if b"ListBucketResult" in body:
            return _tree(body, uri, status)[0]
        _not_a_page(uri, status, "no ListBucketResult element")
    n = body.count(b"<Contents>")
    raw_keys = _KEY.findall(body)
    raw_sizes = _SIZE.findall(body)
    if len(raw_keys) != n or len(raw_sizes) != n or (n == 0 and b"Contents" in body):
        return _tree(body, uri, status)[0]
    etags = _ETAG.findall(body)
    mtimes = _MTIME.findall(body)
    if len(etags) != n or len(mtimes) != n:
        return _tree(body, uri, status)[0]
    encoded = _encoded(body)
    try:
        keys = [_key_text(k, encoded) for k in raw_keys]
        prefixes = [_key_text(p, encoded) for p in _PREFIX.findall(body)]
    except ValueError as exc:  # bad UTF-8
        _not_a_page(uri, status, str(exc))
    sizes = [_size(s, uri, status) for s in raw_sizes]
    if any(k.endswith("/") or not k for k in keys):  # directory markers are no objects
        keep = [i for i, k in enumerate(keys) if k and not k.endswith("/")]
        return Page(
            [keys[i] for i in keep],
            [sizes[i] for i in keep],
            [etags[i] for i in keep],
            [mtimes[i] for i in keep],
            prefixes,
            [k for k in keys if k.endswith("/")],
        )
    return Page(keys, sizes, list(etags), list(mtimes), prefixes, [])


def _strip_ns(tag: str) -> str:
    return tag.rpartition("}")[2]


def _tree(body: bytes, uri: str, status: int) -> tuple[Page, bool, str | None]:
    """A page by the XML parser: the page, IsTruncated and NextContinuationToken (its
    callers have refused a DTD: no entity is expanded)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        _not_a_page(uri, status, str(exc))
    encoded = any(
        _strip_ns(el.tag) == "EncodingType" and (el.text or "").strip() == "url" for el in root
    )
    page = Page([], [], [], [], [], [])
    token, truncated = None, False
    for el in root:
        tag = _strip_ns(el.tag)
        if tag == "Contents":
            fields = {_strip_ns(c.tag): (c.text or "") for c in el}
            key = unquote_plus(fields.get("Key", "")) if encoded else fields.get("Key", "")
            if key and not key.endswith("/"):
                page.keys.append(key)
                page.sizes.append(_size(fields.get("Size", ""), uri, status))
                page.etags.append(fields.get("ETag"))
                page.mtimes.append(fields.get("LastModified"))
            elif key:
                page.markers.append(key)
        elif tag == "CommonPrefixes":
            for c in el:
                if _strip_ns(c.tag) == "Prefix" and c.text:
                    page.prefixes.append(unquote_plus(c.text) if encoded else c.text)
        elif tag == "NextContinuationToken":
            token = el.text
        elif tag == "IsTruncated":
            truncated = (el.text or "").strip().lower() == "true"
    return page, truncated, token


@dataclass
class _Chain:
    """One chain of pages: its query (the token is added page by page) and which keys it
    keeps. ``folders``: a delimiter chain over ``root`` (its direct keys; its
    sub-prefixes start chains of their own). ``low``/``high``: a run of sub-prefixes of
    ``root``, keys of these only. ``upto``: a stretch of the key space split off a long
    chain (its query starts after the stretch before), keys and sub-prefixes up to this
    one (inclusive). ``splits``: the chain may split its rest into stretches."""

    query: dict[str, str]
    root: str
    folders: bool = False
    low: str | None = None
    high: str | None = None
    upto: str | None = None
    splits: bool = False
    pages: int = 0
    tokens: set[str] = field(default_factory=set)  # its continuation tokens so far

    def keeps(self, key: str) -> bool:
        if self.upto is not None and key > self.upto:
            return False
        if self.low is None or self.low == self.high:
            return True  # a chain over one prefix: every object it names is one of its own
        cut = key.find("/", len(self.root))
        if cut < 0:  # a direct key: the delimiter chain has it
            return False
        return self.low <= key[: cut + 1] <= self.high  # type: ignore[operator]

    def done_after(self, last: str) -> bool:
        """Whether no key after ``last`` (a page's last key or sub-prefix) is this chain's."""
        if self.upto is not None and last >= self.upto:
            return True
        return self.high is not None and last > self.high and not last.startswith(self.high)


_DIGITS = frozenset("0123456789")


def split_points(keys: list[str], root: str, page_size: int, n: int) -> list[str]:
    """Up to ``n`` guesses, past the last of ``keys`` (one page, in order), of where the
    next pages of a numbered listing end: a zero-padded number in the keys
    (``shard-000123``) that grows across the page is assumed to grow as fast after it.
    Any guess is safe (each stretch is listed exactly, from after one point up to the
    next); a wrong one costs a request. Keys with no such number: no guess."""
    a, b = keys[0], keys[-1]
    c = len(root)
    while c < len(a) and c < len(b) and a[c] == b[c]:
        c += 1
    if c >= len(b) or b[c] not in _DIGITS:
        return []
    start, end = c, c
    while start > len(root) and b[start - 1] in _DIGITS:
        start -= 1
    while end < len(b) and b[end] in _DIGITS:
        end += 1
    first = a[start:end]
    if len(first) != end - start or not _DIGITS.issuperset(first):
        return []
    if end < len(a) and a[end] in _DIGITS:  # a longer number in the first key
        return []
    lo, hi = int(first), int(b[start:end])
    # the numbers one page spans, from this page's density of keys per number
    stride = max(1, round((hi - lo) * page_size / max(len(keys) - 1, 1)))
    width = end - start
    points = []
    for k in range(1, n + 1):
        v = hi + k * stride
        if v >= 10**width:
            break
        points.append(b[:start] + str(v).zfill(width))
    return points


# A page of fewer keys gives a rough guess of where the next pages end; listings paged
# that finely stay one chain.
SPLIT_MIN_KEYS = 100


@dataclass
class Listing:
    """Every object under ``root`` (``Listing(...).run()``): keys, sizes, ETags and
    Last-Modified texts in no particular order, as parallel lists; and the directory
    markers (keys ending in '/') apart."""

    fetch: Fetch
    uri: str  # the prefix's URI: errors name it
    root: str
    page_size: int
    concurrency: int
    keys: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    etags: list[bytes | str | None] = field(default_factory=list)
    mtimes: list[bytes | str | None] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)

    def _query(self, prefix: str, **extra: str) -> dict[str, str]:
        # encoding-type=url: XML 1.0 cannot carry some key characters (control characters)
        return {
            "list-type": "2",
            "prefix": prefix,
            "max-keys": str(self.page_size),
            "encoding-type": "url",
            **extra,
        }

    def run(self) -> Listing:
        parallel = self.concurrency > 1
        top = _Chain(
            self._query(self.root, delimiter="/") if parallel else self._query(self.root),
            self.root,
            folders=parallel,
            splits=parallel,
        )
        body, status = self.fetch(top.query)
        token = next_token(body, self.uri, status, None, top.tokens)
        if not parallel:
            self._sequential(top, body, status, token)
            return self
        if token is None and b"CommonPrefixes" not in body:  # one page, no folders
            self._keep(top, read_page(body, self.uri, status, self.root))
            return self
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="fastload-list")
        try:
            self._parallel(pool, top, body, status, token)
        except BaseException as exc:
            # an error: the requests in flight end first (they share the connections);
            # Ctrl-C: at once, they end on their own
            pool.shutdown(wait=not isinstance(exc, KeyboardInterrupt), cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return self

    def _sequential(self, chain: _Chain, body: bytes, status: int, token: str | None) -> None:
        while True:
            self._keep(chain, read_page(body, self.uri, status, self.root))
            if token is None:
                return
            chain.query = {**chain.query, "continuation-token": token}
            body, status = self.fetch(chain.query)
            token = next_token(body, self.uri, status, token, chain.tokens)

    def _parallel(
        self, pool: ThreadPoolExecutor, top: _Chain, body: bytes, status: int, token: str | None
    ) -> None:
        pending: set[Future[tuple[_Chain, Page, Future | None]]] = set()
        if token is not None:
            pending.add(pool.submit(self._page, pool, top, token))
        page = read_page(body, self.uri, status, self.root)
        self._handle(pool, pending, top, page, token is not None)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                chain, page, nxt = f.result()
                if nxt is not None:
                    pending.add(nxt)
                self._handle(pool, pending, chain, page, nxt is not None)

    def _page(
        self, pool: ThreadPoolExecutor, chain: _Chain, token: str | None
    ) -> tuple[_Chain, Page, Future | None]:
        """One page of ``chain`` (on a pool thread). The next page is asked for before
        this one is parsed; a chain with an end asks only when this page stops short of
        it."""
        query = dict(chain.query)
        if token is not None:
            query["continuation-token"] = token
        body, status = self.fetch(query)
        nxt = next_token(body, self.uri, status, token, chain.tokens)
        if nxt is not None and chain.upto is None and chain.high is None:
            later = pool.submit(self._page, pool, chain, nxt)
            return chain, read_page(body, self.uri, status, self.root), later
        page = read_page(body, self.uri, status, self.root)
        last = max(page.keys[-1:] + page.prefixes[-1:], default=None)
        if nxt is None or (last is not None and chain.done_after(last)):
            return chain, page, None
        return chain, page, pool.submit(self._page, pool, chain, nxt)

    def _handle(
        self,
        pool: ThreadPoolExecutor,
        pending: set[Future[tuple[_Chain, Page, Future | None]]],
        chain: _Chain,
        page: Page,
        more: bool,
    ) -> None:
        """Keep a page's keys; start a chain for each run of the sub-prefixes it names,
        and split the rest of a long numbered chain into stretches listed at once.
        ``more``: the chain's next page is on its way."""
        chain.pages += 1
        self._keep(chain, page)
        if more and chain.splits and len(page.keys) >= SPLIT_MIN_KEYS:
            self._split(pool, pending, chain, page.keys)
        prefixes = page.prefixes
        if chain.upto is not None:
            prefixes = [p for p in prefixes if p <= chain.upto]
        if not (chain.folders and prefixes):
            return
        self._check_sub_prefixes(chain, prefixes)
        runs = self._runs(chain.root, prefixes)
        if len(runs) == 1 and runs[0][0] == runs[0][1] and not (more or page.keys):
            if chain.pages == 1:  # one folder and nothing else (s3://bucket, a prefix
                # without its '/'): list that folder by its own sub-prefixes
                sub = _Chain(
                    self._query(runs[0][0], delimiter="/"), runs[0][0], folders=True, splits=True
                )
                pending.add(pool.submit(self._page, pool, sub, None))
                return
        for low, high in runs:
            sub = (
                _Chain(self._query(low), chain.root, low=low, high=high, splits=True)
                if low == high
                else _Chain(
                    self._query(_common(low, high), **{"start-after": low[:-1]}),
                    chain.root,
                    low=low,
                    high=high,
                )
            )
            pending.add(pool.submit(self._page, pool, sub, None))

    def _split(
        self,
        pool: ThreadPoolExecutor,
        pending: set[Future[tuple[_Chain, Page, Future | None]]],
        chain: _Chain,
        keys: list[str],
    ) -> None:
        """The rest of ``chain`` after ``keys`` as stretches between guessed points: the
        chain's next page (on its way) starts the first. A stretch whose page comes back
        full and short of its end splits again (a wrong guess costs a request).
        The guesses hold no '/' past the chain's root when its keys are direct ones, so
        no sub-prefix straddles a point."""
        limit = chain.upto
        points = [
            p
            for p in split_points(keys, chain.query["prefix"], self.page_size, self.concurrency)
            if limit is None or p < limit
        ]
        if not points:
            return
        chain.upto = points[0]
        ends: list[str | None] = [*points[1:], limit]
        for after, upto in zip(points, ends, strict=True):
            query = {
                k: v
                for k, v in chain.query.items()
                if k not in ("continuation-token", "start-after")
            }
            sub = _Chain(
                {**query, "start-after": after},
                chain.root,
                folders=chain.folders,
                low=chain.low,
                high=chain.high,
                upto=upto,
                splits=True,
            )
            pending.add(pool.submit(self._page, pool, sub, None))

    def _check_sub_prefixes(self, chain: _Chain, prefixes: list[str]) -> None:
        """A sub-prefix that is the prefix asked for would start its own listing again,
        forever; one past S3's longest key (1,024 bytes) a descent without end."""
        asked = chain.query["prefix"]
        for p in prefixes:
            if p == asked or len(p.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                shown = repr(p[:100]) + ("..." if len(p) > 100 else "")
                why = "the prefix asked for" if p == asked else f"longer than {MAX_KEY_BYTES} bytes"
                _bad_page(
                    self.uri,
                    200,
                    f"named the sub-prefix {shown}, {why} (the listing would not end)",
                )

    def _runs(self, root: str, prefixes: list[str]) -> list[tuple[str, str]]:
        """The sub-prefixes of one page in at most CHAINS_PER_PAGE_PER_REQUEST x
        concurrency runs of adjacent ones (first, last)."""
        ps = sorted(p for p in prefixes if p.startswith(root) and p.endswith("/"))
        if not ps:
            return []
        n = -(-len(ps) // (CHAINS_PER_PAGE_PER_REQUEST * self.concurrency))
        return [(ps[i], ps[min(i + n, len(ps)) - 1]) for i in range(0, len(ps), n)]

    def _keep(self, chain: _Chain, page: Page) -> None:
        if chain.upto is None and (chain.low is None or chain.low == chain.high):
            self.keys += page.keys
            self.sizes += page.sizes
            self.etags += page.etags
            self.mtimes += page.mtimes
            self.markers += page.markers
            return
        self.markers += [m for m in page.markers if chain.keeps(m)]
        for i, key in enumerate(page.keys):
            if chain.keeps(key):
                self.keys.append(key)
                self.sizes.append(page.sizes[i])
                self.etags.append(page.etags[i])
                self.mtimes.append(page.mtimes[i])


def _common(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]
