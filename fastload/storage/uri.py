"""Parsing of the URIs fastload reads: plain paths, file://, direct://, http(s)://, s3://."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

LOCAL_SCHEMES = ("file", "direct")
NETWORK_SCHEMES = ("http", "https", "s3")
SCHEMES = LOCAL_SCHEMES + NETWORK_SCHEMES
# S3 bucket names (with the legacy upper case and '_' that some endpoints still allow)
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class ParsedURI:
    """A URI split into what the engines need.

    ``path`` is the local path for file/direct, the URL path for http(s) and
    the key for s3; ``bucket`` is set for s3 only, ``netloc`` for http(s).
    """

    uri: str
    scheme: str
    path: str
    bucket: str = ""
    netloc: str = ""

    @property
    def display(self) -> str:
        """The URI as error messages show it: no password or presigned credentials."""
        return redact(self.uri) if self.scheme in ("http", "https") else self.uri

    @property
    def is_local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES


# Query parameters that carry credentials in presigned / SAS URLs (matched as substrings)
_SECRET_PARAMS = ("signature", "credential", "token", "secret", "password", "sig")


def redact(uri: str) -> str:
    """``uri`` with a userinfo password and presigned-URL credentials replaced by ***."""
    parts = urlsplit(uri)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = (
        "&".join(
            f"{k}=***" if any(w in k.lower() for w in _SECRET_PARAMS) and sep else f"{k}{sep}{v}"
            for k, sep, v in (p.partition("=") for p in parts.query.split("&"))
        )
        if parts.query
        else ""
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_uri(uri: str | os.PathLike[str]) -> ParsedURI:
    """Parse ``uri``; raise ``ValueError`` naming it when it is malformed or unsupported."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise TypeError(f"a URI must be a str or path, not {type(uri).__name__}: {uri!r}")
    if not uri:
        raise ValueError("empty URI")
    if "://" not in uri:
        return ParsedURI(uri, "file", os.path.abspath(uri))
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"{uri}: unsupported scheme {scheme!r} (supported: {', '.join(SCHEMES)}, or a plain path)"
        )
    if scheme in LOCAL_SCHEMES:
        host, sep, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ValueError(
                f"{uri}: {scheme}:// URIs name a local path (file:///abs/path), not host {host!r}"
            )
        if not sep or not path:
            raise ValueError(f"{uri}: no path after {scheme}://")
        return ParsedURI(uri, scheme, unquote("/" + path))
    if scheme == "s3":
        # Like the AWS CLI: the key is everything after "bucket/", taken literally
        # ('%', '?' and '#' are key characters), so listed keys read back as they are.
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"{uri}: s3:// URI has no bucket (expected s3://bucket/key)")
        if not _BUCKET.match(bucket):
            raise ValueError(
                f"{uri}: {bucket!r} is not a valid S3 bucket name (letters, digits, '.', '-', '_')"
            )
        return ParsedURI(uri, "s3", key, bucket=bucket)
    bad = _BAD_URL_CHARS.search(uri)
    if bad:
        raise ValueError(
            f"{uri!r}: {scheme}:// URLs cannot hold {bad.group()!r} (percent-encode it)"
        )
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ValueError(f"{uri}: malformed URL ({exc})") from None
    if not parts.hostname:
        raise ValueError(f"{uri}: {scheme}:// URI has no host")
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in 0..65535
    except ValueError as exc:
        raise ValueError(f"{uri}: bad port ({exc})") from None
    return ParsedURI(uri, scheme, parts.path or "/", netloc=parts.netloc)
