"""s3:// objects on AWS or any S3-compatible endpoint.

HEAD for sizes, ListObjectsV2 (with continuation) for prefixes, and ranged
GETs through the native driver for data, every request signed with SigV4
unless ``anonymous``.
"""

from __future__ import annotations

import builtins
import ipaddress
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any
from urllib.parse import urlsplit

from fastload._native.status import Status
from fastload.checks import check_header_value
from fastload.errors import raise_native_error
from fastload.storage import sigv4
from fastload.storage.credentials import S3Config, resolve
from fastload.storage.http_backend import pin_from_headers, size_from_headers
from fastload.storage.network_backend import NetworkBackend
from fastload.storage.network_options import NetworkOptions
from fastload.storage.object_version import Version, version_tag
from fastload.storage.s3_listing import Listing, Page, next_token, read_page, tag_text
from fastload.storage.secret import RedactedList, Secret, reveal
from fastload.storage.transport import Transport
from fastload.storage.uri import ParsedURI, redact
from fastload.storage.version_pins import Pin

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


class S3Backend(NetworkBackend):
    def __init__(self, opts: NetworkOptions) -> None:
        super().__init__()
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
        _check_resolved(self.config)
        self.transport = Transport(
            opts, follow_redirects=False
        )  # a redirect would void the signature
        self._sizes: dict[tuple[str, str], int] = {}
        # (ETag, Last-Modified) as listings sent them: the version tag is made on use
        self._tags: dict[tuple[str, str], tuple[bytes | str | None, bytes | str | None]] = {}
        # signed GET headers (a signature, a session token): Secret, so vars(backend) or a
        # captured local never shows them
        self._signed: dict[tuple[str, str], tuple[float, bytes, Secret]] = {}
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
    ) -> RedactedList[str]:
        """The signing header lines ("name: value"): never shown (a token, a signature)."""
        creds = self.config.credentials
        if self.opts.anonymous:
            return RedactedList([])
        if creds is None:
            raise_native_error(
                Status.PERMISSION,
                uri,
                message=(
                    "no AWS credentials found (pass access_key_id/secret_access_key, set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or use anonymous=True)"
                ),
            )
        return RedactedList(
            [
                f"{k}: {v}"
                for k, v in sigv4.sign(
                    method,
                    host,
                    path,
                    query,
                    access_key=creds.access_key,
                    secret_key=creds.secret_key,
                    session_token=creds.session_token,
                    region=self.config.region,
                ).items()
            ]
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
        return self.transport.request(
            method,
            f"{url}?{query}" if query else url,
            self._auth_headers(method, host, path, query, uri),
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
        """HEAD the object: {"size": bytes, "etag", "last_modified": the headers or None}."""
        self._check_key(src)
        resp = self._request("HEAD", src.bucket, src.path, {}, src.uri)
        n = size_from_headers(resp)
        if n is None:
            raise_native_error(
                Status.HTTP,
                src.uri,
                http_status=resp.status,
                message="HEAD answered without a Content-Length (a byte count up to 2**63-1)",
            )
        self._sizes[(src.bucket, src.path)] = n
        self.pins.remember((src.bucket, src.path), pin_from_headers(resp, n))
        return {
            "size": n,
            "etag": resp.headers.get("etag"),
            "last_modified": resp.headers.get("last-modified"),
        }

    def known_version(self, src: ParsedURI) -> Version | None:
        """(size, version tag) from an earlier list() of the object's prefix, or None."""
        key = (src.bucket, src.path)
        if key not in self._sizes or key not in self._tags:
            return None
        etag, mtime = self._tags[key]
        return self._sizes[key], version_tag(tag_text(etag), tag_text(mtime))

    def list(self, prefix: ParsedURI) -> list[str]:
        """Every key under the prefix, as s3:// URIs, sorted; sizes are kept for size()."""
        return self.list_sizes(prefix)[0]

    def adopt_versions(self, other: NetworkBackend) -> None:
        """As the base class, and the sizes and version tags ``other``'s listings kept."""
        super().adopt_versions(other)
        if isinstance(other, S3Backend):
            self._sizes.update(list(other._sizes.items()))
            self._tags.update(list(other._tags.items()))

    def known_size(self, src: ParsedURI) -> int | None:
        """The size an earlier list() or HEAD found for ``src``, or None (no request)."""
        return self._sizes.get((src.bucket, src.path))

    def list_sizes(self, prefix: ParsedURI) -> tuple[builtins.list[str], builtins.list[int]]:
        """Every key under the prefix (s3:// URIs, sorted) and its size, from the listing
        (``fastload.storage.s3_listing``: sub-prefixes listed at once, up to
        ``list_concurrency`` requests in flight); sizes and version tags are kept."""
        return self.list_tree(prefix)[:2]

    def list_tree(
        self, prefix: ParsedURI
    ) -> tuple[builtins.list[str], builtins.list[int], builtins.list[str]]:
        """As :meth:`list_sizes`, and the directory markers under the prefix (keys ending
        in '/', as s3:// URIs, sorted): folders with or without objects in them."""
        found = Listing(
            self._list_fetch(prefix),
            prefix.uri,
            prefix.path,
            self.opts.list_page_size,
            self.opts.list_concurrency,
        ).run()
        self._remember_listed(prefix.bucket, found.keys, found.sizes, found.etags, found.mtimes)
        pairs = sorted(zip(found.keys, found.sizes, strict=True))
        head = f"s3://{prefix.bucket}/"
        markers = [head + m for m in sorted(set(found.markers))]
        return [head + k for k, _ in pairs], [n for _, n in pairs], markers

    def list_pages_after(
        self, prefix: ParsedURI, start_after: str, last: str, max_pages: int
    ) -> int:
        """List keys under ``prefix`` after ``start_after`` up to ``last`` (at most
        ``max_pages`` pages), keeping their sizes for size(); returns the pages read.

        A batched read of many keys learns their sizes from a few listing pages instead of
        one HEAD per key; ``max_pages`` bounds the cost when the keys are sparse."""
        fetch = self._list_fetch(prefix)
        query = {
            "list-type": "2",
            "prefix": prefix.path,
            "max-keys": str(self.opts.list_page_size),
            "encoding-type": "url",
        }
        if start_after:
            query["start-after"] = start_after
        pages, token, seen = 0, None, set[str]()
        while True:
            body, status = fetch(query)
            pages += 1
            token = next_token(body, prefix.uri, status, token, seen)
            page = read_page(body, prefix.uri, status, prefix.path)
            self._remember_listed(prefix.bucket, page.keys, page.sizes, page.etags, page.mtimes)
            if token is None or pages >= max_pages or not page.keys or page.keys[-1] >= last:
                return pages
            query = {**query, "continuation-token": token}

    def list_dir(self, prefix: ParsedURI, max_keys: int | None = None) -> Page:
        """One level under ``prefix`` (a ``delimiter=/`` listing, as ``aws s3 ls`` and
        s3fs's ``ls`` ask): its objects with sizes, ETags and Last-Modified texts, its
        sub-prefixes (an empty folder too: a server lists one as a CommonPrefix) and its
        directory markers. Every page, or one page of at most ``max_keys`` entries (a
        probe of whether the prefix holds anything). Sizes and version tags are kept."""
        fetch = self._list_fetch(prefix)
        query = {
            "list-type": "2",
            "prefix": prefix.path,
            "delimiter": "/",
            "max-keys": str(max_keys or self.opts.list_page_size),
            "encoding-type": "url",
        }
        out = Page([], [], [], [], [], [])
        token, seen = None, set[str]()
        while True:
            body, status = fetch(query)
            # a token loop or a key outside the prefix is refused, as in every listing
            token = next_token(body, prefix.uri, status, token, seen)
            page = read_page(body, prefix.uri, status, prefix.path)
            self._remember_listed(prefix.bucket, page.keys, page.sizes, page.etags, page.mtimes)
            for mine, theirs in zip(out, page, strict=True):
                mine.extend(theirs)  # type: ignore[attr-defined]
            if token is None or max_keys is not None:
                return out
            query = {**query, "continuation-token": token}

    def known_tags(self, src: ParsedURI) -> tuple[str | None, str | None]:
        """(ETag, Last-Modified) as an earlier listing sent them, as text; Nones if unknown."""
        etag, mtime = self._tags.get((src.bucket, src.path), (None, None))
        return tag_text(etag), tag_text(mtime)

    def _list_fetch(self, prefix: ParsedURI) -> Callable[[dict[str, str]], tuple[bytes, int]]:
        def fetch(query: dict[str, str]) -> tuple[bytes, int]:
            resp = self._request("GET", prefix.bucket, "", query, prefix.uri)
            return resp.body, resp.status

        return fetch

    def _remember_listed(
        self,
        bucket: str,
        keys: builtins.list[str],
        sizes: builtins.list[int],
        etags: builtins.list[bytes | str | None],
        mtimes: builtins.list[bytes | str | None],
    ) -> None:
        """Sizes for size(); ETag and Last-Modified as sent, made a version tag on use."""
        names = [(bucket, k) for k in keys]
        self._sizes.update(zip(names, sizes, strict=True))
        self._tags.update(zip(names, zip(etags, mtimes, strict=True), strict=True))

    # -- versions --------------------------------------------------------------
    def pin_key(self, src: ParsedURI) -> Hashable:
        return (src.bucket, src.path)

    def pin_of(self, src: ParsedURI) -> Pin | None:
        """A listing's size and ETag (list() keeps them) or a HEAD's ETag and
        Last-Modified (a listing's Last-Modified is written otherwise than a GET's)."""
        key = (src.bucket, src.path)
        size, head = self._sizes.get(key), self.pins.get(key)
        if head is None:
            return None if size is None else Pin(size, self._listed_etag(key))
        return head if size is None else head._replace(total=size)

    def _listed_etag(self, key: tuple[str, str]) -> str | None:
        tags = self._tags.get(key)
        return tag_text(tags[0]) if tags is not None else None

    def _native_pins(self, sources: Sequence[ParsedURI]) -> builtins.list[Any] | None:
        """As the base class, in one lean pass (one endpoint, two dicts to look in)."""
        sizes, heads = self._sizes, self.pins.table
        ignored = self._host in self._range_ignoring_hosts
        out: builtins.list[Any] = []
        known = ignored
        for s in sources:
            key = (s.bucket, s.path)
            head, size = heads.get(key), sizes.get(key)
            if head is not None:
                out.append((head[0] if size is None else size, head[1], head[2], ignored))
                known = True
            elif size is not None or ignored:
                # the listing's ETag: a GET of another version of the same size fails
                # (ObjectChangedError) instead of passing for the listed one
                etag = self._listed_etag(key) if size is not None else None
                out.append((size, etag, None, ignored))
                known = True
            else:
                out.append(None)
        return out if known else None

    def forget_version(self, src: ParsedURI) -> None:
        super().forget_version(src)
        self._sizes.pop((src.bucket, src.path), None)

    def forget_under(self, prefix: ParsedURI | None = None) -> None:
        """Forget the sizes and versions learned (listings, HEADs) of the objects under
        ``prefix`` (the key itself and keys below it as a folder; every object when
        None): the next size() or read asks the server again."""
        bucket = None if prefix is None else prefix.bucket
        path = "" if prefix is None else prefix.path.rstrip("/")

        def match(key: Any) -> bool:
            if bucket is None:
                return True
            return key[0] == bucket and (
                not path or key[1] == path or key[1].startswith(path + "/")
            )

        for table in (self._sizes, self._tags):
            for key in [k for k in list(table) if match(k)]:
                table.pop(key, None)
        self.pins.forget_where(match)

    def host(self, src: ParsedURI) -> str:
        return self._host

    # -- data ------------------------------------------------------------------
    def _signed_get(self, src: ParsedURI, now: float) -> tuple[bytes, bytes | None]:
        """URL and signed headers of a GET of ``src``, reused for a few minutes."""
        cache_key = (src.bucket, src.path)
        hit = self._signed.get(cache_key)
        if hit is None or hit[0] <= now:
            url, host, path = self._location(src.bucket, src.path)
            lines = self._auth_headers("GET", host, path, "", src.uri)
            if len(self._signed) >= _SIGNATURE_CACHE_MAX:
                self._signed.clear()
            hit = self._signed[cache_key] = (
                now + _SIGNATURE_REUSE_S,
                url.encode(),
                Secret("\n".join(lines).encode() if lines else None),
            )
        return hit[1], hit[2].reveal()

    @staticmethod
    def _check_key(src: ParsedURI) -> None:
        if not src.path or src.path.endswith("/"):
            raise ValueError(
                f"{src.display}: names a bucket or prefix, not an object (s3://bucket/key)"
            )

    # builtins.list: the method ``list`` shadows the builtin in this class body.
    def _requests(
        self, sources: Sequence[ParsedURI]
    ) -> tuple[builtins.list[bytes], RedactedList[bytes | None]]:
        now = time.monotonic()
        for s in sources:
            self._check_key(s)
        signed = [self._signed_get(s, now) for s in sources]
        # the signed headers (a signature, a session token) are never shown in a traceback
        return [url for url, _ in signed], RedactedList([blob for _, blob in signed])


def _check_resolved(config: S3Config) -> None:
    """What the environment or a profile file gave goes into headers too: no CR or LF."""
    check_header_value("region", config.region)
    check_header_value("endpoint_url", redact(config.endpoint_url or ""))
    if config.credentials is not None:
        check_header_value("access_key_id", config.credentials.access_key)
        check_header_value("session_token", reveal(config.credentials.session_token), secret=True)
