"""s3:// objects on AWS or any S3-compatible endpoint.

HEAD for sizes, ListObjectsV2 (with continuation) for prefixes, and ranged
GETs through the native driver for data, every request signed with SigV4
unless ``anonymous``.
"""

from __future__ import annotations

import builtins
import html
import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from fastload._native.status import Status
from fastload.errors import raise_native_error
from fastload.storage import sigv4
from fastload.storage.credentials import S3Config, resolve
from fastload.storage.http_backend import size_from_headers
from fastload.storage.network_backend import NetworkBackend
from fastload.storage.network_options import NetworkOptions
from fastload.storage.transport import Transport
from fastload.storage.uri import ParsedURI

# A SigV4 request is accepted up to 15 minutes from its x-amz-date; reuse a
# signed GET for at most 5 and cap the cache so long runs do not grow it.
_SIGNATURE_REUSE_S = 300.0
_SIGNATURE_CACHE_MAX = 1 << 16
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_LIST_THREADS = 8  # sub-prefixes listed at once
_CONTENTS = re.compile(rb"<Contents>(.*?)</Contents>", re.S)
_PREFIXES = re.compile(rb"<CommonPrefixes>\s*<Prefix>(.*?)</Prefix>", re.S)
_FIELD = {name: re.compile(rb"<%s>(.*?)</%s>" % (name, name), re.S) for name in (b"Key", b"Size")}
_TOP = {
    name: re.compile(rb"<%s>(.*?)</%s>" % (name, name), re.S)
    for name in (b"IsTruncated", b"NextContinuationToken", b"EncodingType")
}


@dataclass
class _Page:
    keys: builtins.list[tuple[str, int]]
    prefixes: builtins.list[str]
    token: str | None


def _text(raw: bytes, encoded: bool) -> str:
    """An element's text: XML entities resolved, then the URL encoding undone when the
    server says it applied it (some servers ignore encoding-type)."""
    text = raw.decode("utf-8")
    if "&" in text:
        text = html.unescape(text)
    if encoded and ("%" in text or "+" in text):
        text = unquote_plus(text)
    return text


def _parse_page(resp: Any, uri: str, token: str | None) -> _Page:
    """A ListObjectsV2 answer, by regular expressions over its few fixed elements (an
    XML tree cost 2x more per 1,000-key page). Raises for an answer that is not one."""
    body = resp.body
    if b"<ListBucketResult" not in body:
        raise_native_error(
            Status.HTTP,
            uri,
            http_status=resp.status,
            message="ListObjectsV2 answer is not XML (no ListBucketResult)",
        )

    def top(name: bytes) -> bytes | None:
        # no <Contents> holds these names, and key text is escaped: the first match is it
        m = _TOP[name].search(body)
        return m.group(1).strip() if m else None

    encoded = top(b"EncodingType") == b"url"
    keys = []
    for m in _CONTENTS.finditer(body):
        block = m.group(1)
        k = _FIELD[b"Key"].search(block)
        n = _FIELD[b"Size"].search(block)
        key = _text(k.group(1), encoded) if k else ""
        if key and not key.endswith("/"):
            keys.append((key, int(n.group(1)) if n and n.group(1).strip() else 0))
    prefixes = [_text(m.group(1), encoded) for m in _PREFIXES.finditer(body)]
    truncated = (top(b"IsTruncated") or b"").lower() == b"true"
    raw_next = top(b"NextContinuationToken")
    nxt = _text(raw_next, False) if raw_next else None
    if not truncated:
        return _Page(keys, prefixes, None)
    if not nxt or nxt == token:
        # going on would loop forever; stopping would lose keys
        raise_native_error(
            Status.HTTP,
            uri,
            http_status=resp.status,
            message=(
                "ListObjectsV2 answered IsTruncated with "
                + ("the same NextContinuationToken again" if nxt else "no NextContinuationToken")
            ),
        )
    return _Page(keys, prefixes, nxt)


class S3Backend(NetworkBackend):
    def __init__(self, opts: NetworkOptions) -> None:
        self.opts = opts
        self.config: S3Config = resolve(
            access_key_id=opts.access_key_id,
            secret_access_key=opts.secret_access_key,
            session_token=opts.session_token,
            profile=opts.profile,
            region=opts.region,
            endpoint_url=opts.endpoint_url,
            anonymous=opts.anonymous,
        )
        self.transport = Transport(
            opts, follow_redirects=False
        )  # a redirect would void the signature
        self._sizes: dict[tuple[str, str], int] = {}
        self._signed: dict[tuple[str, str], tuple[float, bytes, bytes | None]] = {}
        ep = self.config.endpoint_url
        if ep is not None:
            parts = urlsplit(ep)
            host = parts.hostname or ""
            port = parts.port
            if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
                host = f"{host}:{port}"
            self._scheme, self._host, self._base_path = parts.scheme, host, parts.path.rstrip("/")
            if opts.addressing_style == "virtual" and _is_ip(parts.hostname or ""):
                # bucket.<ip> names no host: say so rather than fail later on DNS
                raise ValueError(
                    f"addressing_style='virtual' needs a DNS name in endpoint_url, "
                    f"not the IP address {parts.hostname} (use 'path' or 'auto')"
                )
        else:
            self._scheme, self._host, self._base_path = (
                "https",
                f"s3.{self.config.region}.amazonaws.com",
                "",
            )

    # -- addressing ------------------------------------------------------------
    def _virtual(self, bucket: str) -> bool:
        style = self.opts.addressing_style
        if style == "auto":
            return self.config.endpoint_url is None and "." not in bucket
        return style == "virtual"

    def _location(self, bucket: str, key: str) -> tuple[str, str, str]:
        """(url without query, host, canonical path) of an object (or the bucket when key is '')."""
        enc_key = sigv4.uri_encode(key, keep_slash=True)
        if self._virtual(bucket):
            host, path = f"{bucket}.{self._host}", f"{self._base_path}/{enc_key}"
        else:
            host, path = (
                self._host,
                f"{self._base_path}/{bucket}/{enc_key}" if key else f"{self._base_path}/{bucket}",
            )
        return f"{self._scheme}://{host}{path}", host, path

    def _auth_headers(
        self, method: str, host: str, path: str, query: str, uri: str
    ) -> dict[str, str]:
        creds = self.config.credentials
        if self.opts.anonymous:
            return {}
        if creds is None:
            raise_native_error(
                Status.PERMISSION,
                uri,
                message=(
                    "no AWS credentials found (pass access_key_id/secret_access_key, set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or use anonymous=True)"
                ),
            )
        return sigv4.sign(
            method,
            host,
            path,
            query,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.session_token,
            region=self.config.region,
        )

    def _request(
        self,
        method: str,
        bucket: str,
        key: str,
        params: dict[str, str],
        uri: str,
        accept: tuple[int, ...] = (200,),
    ) -> Any:
        url, host, path = self._location(bucket, key)
        query = sigv4.canonical_query(params)
        headers = self._auth_headers(method, host, path, query, uri)
        return self.transport.request(
            method,
            f"{url}?{query}" if query else url,
            [f"{k}: {v}" for k, v in headers.items()],
            uri,
            accept=accept,
        )

    # -- queries ---------------------------------------------------------------
    def size(self, src: ParsedURI) -> int:
        """Object size: from an earlier list() of its prefix, else a HEAD."""
        self._check_key(src)
        known = self._sizes.get((src.bucket, src.path))
        return known if known is not None else self.stat(src)["size"]

    def stat(self, src: ParsedURI) -> dict[str, Any]:
        """HEAD the object: {"size": bytes, "etag": the ETag or None}."""
        self._check_key(src)
        resp = self._request("HEAD", src.bucket, src.path, {}, src.uri)
        n = size_from_headers(resp)
        if n is None:
            raise_native_error(
                Status.HTTP,
                src.uri,
                http_status=resp.status,
                message="HEAD answered without Content-Length",
            )
        self._sizes[(src.bucket, src.path)] = n
        return {"size": n, "etag": resp.headers.get("etag")}

    def list(self, prefix: ParsedURI) -> list[str]:
        """Every key under the prefix, as s3:// URIs, sorted; sizes are kept for size()."""
        return self.list_sizes(prefix)[0]

    def list_sizes(self, prefix: ParsedURI) -> tuple[builtins.list[str], builtins.list[int]]:
        """Every key under the prefix (s3:// URIs, sorted) and its size, from the listing.

        A listing of more than one page also asks for the prefix's sub-prefixes
        (``delimiter=/``, beside its second page); when it has several, each is listed
        on its own thread. Within one chain of pages the next page is fetched while
        this one is parsed."""
        first = self._list_page(prefix, prefix.path, None, None)
        keys = first.keys if first.token is None else self._list_rest(prefix, first)
        keys.sort()
        for key, size in keys:
            self._sizes[(prefix.bucket, key)] = size
        return [f"s3://{prefix.bucket}/{k}" for k, _ in keys], [n for _, n in keys]

    def _list_rest(self, prefix: ParsedURI, first: _Page) -> builtins.list[tuple[str, int]]:
        """Every key of a listing whose first page was truncated: by sub-prefix in
        parallel when the prefix has several (the first page is then superseded), else
        page by page after it."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(_LIST_THREADS) as pool:
            shape = pool.submit(self._list_page, prefix, prefix.path, None, "/")
            second = pool.submit(self._list_page, prefix, prefix.path, first.token, None)
            top = shape.result()
            if len(top.prefixes) < 2:
                return first.keys + self._list_chain(prefix, prefix.path, second.result(), pool)
            second.cancel()
            keys = list(top.keys)
            if top.token is not None:  # more top-level keys and sub-prefixes
                rest = self._list_chain(
                    prefix,
                    prefix.path,
                    self._list_page(prefix, prefix.path, top.token, "/"),
                    pool,
                    delimiter="/",
                )
                keys += [k for k in rest if not k[0].endswith("/")]
                top.prefixes += [k for k, _ in rest if k.endswith("/")]
            chains = [pool.submit(self._list_all, prefix, sub) for sub in sorted(set(top.prefixes))]
            for c in chains:
                keys += c.result()
            return keys

    def _list_all(self, prefix: ParsedURI, path: str) -> builtins.list[tuple[str, int]]:
        return self._list_chain(prefix, path, self._list_page(prefix, path, None, None), None)

    def _list_chain(
        self,
        prefix: ParsedURI,
        path: str,
        page: _Page,
        pool: Any,
        delimiter: str | None = None,
    ) -> builtins.list[tuple[str, int]]:
        """``page`` and every page after it; the next is requested before this is kept.
        With a delimiter, sub-prefixes come back as keys ending in '/' (size 0)."""
        from concurrent.futures import ThreadPoolExecutor

        own = pool is None
        pool = pool or ThreadPoolExecutor(1)
        keys: builtins.list[tuple[str, int]] = []
        try:
            while True:
                nxt = (
                    pool.submit(self._list_page, prefix, path, page.token, delimiter)
                    if page.token is not None
                    else None
                )
                keys += page.keys
                keys += [(p, 0) for p in page.prefixes]
                if nxt is None:
                    return keys
                page = nxt.result()
        finally:
            if own:
                pool.shutdown()

    def _list_page(
        self, prefix: ParsedURI, path: str, token: str | None, delimiter: str | None
    ) -> _Page:
        """One ListObjectsV2 page of ``path``: its keys with sizes, sub-prefixes (with a
        delimiter) and the continuation token (None on the last page)."""
        # encoding-type=url: XML 1.0 cannot carry some key characters (control characters)
        params = {
            "list-type": "2",
            "prefix": path,
            "max-keys": str(self.opts.list_page_size),
            "encoding-type": "url",
        }
        if delimiter:
            params["delimiter"] = delimiter
        if token is not None:
            params["continuation-token"] = token
        resp = self._request("GET", prefix.bucket, "", params, prefix.uri)
        return _parse_page(resp, prefix.uri, token)

    # -- data ------------------------------------------------------------------
    def _signed_get(self, src: ParsedURI, now: float) -> tuple[bytes, bytes | None]:
        """URL and signed headers of a GET of ``src``, reused for a few minutes."""
        cache_key = (src.bucket, src.path)
        hit = self._signed.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        url, host, path = self._location(src.bucket, src.path)
        headers = self._auth_headers("GET", host, path, "", src.uri)
        blob = "\n".join(f"{k}: {v}" for k, v in headers.items()).encode() if headers else None
        if len(self._signed) >= _SIGNATURE_CACHE_MAX:
            self._signed.clear()
        self._signed[cache_key] = (now + _SIGNATURE_REUSE_S, url.encode(), blob)
        return url.encode(), blob

    @staticmethod
    def _check_key(src: ParsedURI) -> None:
        if not src.path or src.path.endswith("/"):
            raise ValueError(
                f"{src.uri}: names a bucket or prefix, not an object (s3://bucket/key)"
            )

    # builtins.list: the method ``list`` shadows the builtin in this class body.
    def _requests(
        self, sources: Sequence[ParsedURI]
    ) -> tuple[builtins.list[bytes], builtins.list[bytes | None]]:
        now = time.monotonic()
        urls, headers = [], []
        for s in sources:
            self._check_key(s)
            url, blob = self._signed_get(s, now)
            urls.append(url)
            headers.append(blob)
        return urls, headers
