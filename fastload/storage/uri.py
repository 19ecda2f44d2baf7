"""Parsing of the URIs fastload reads: plain paths, file://, direct://, http(s)://, s3://."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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
        return redact(self.uri) if self.scheme in NETWORK_SCHEMES else self.uri

    @property
    def is_local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES

    def __repr__(self) -> str:  # a traceback's captured locals show it: no credentials
        return f"ParsedURI({self.display!r}, scheme={self.scheme!r})"


# Query parameters that carry credentials in presigned / SAS / API-key URLs (substrings)
_SECRET_PARAMS = ("signature", "credential", "token", "secret", "password", "sig", "key", "auth")


def _redact_query(query: str) -> str:
    return "&".join(
        f"{k}=***" if sep and any(w in k.lower() for w in _SECRET_PARAMS) else f"{k}{sep}{v}"
        for k, sep, v in (p.partition("=") for p in query.split("&"))
    )


def redact(uri: str) -> str:
    """``uri`` with its credentials replaced by ***: a userinfo password (``user:***@``), a
    user name alone (``***@``: often a token) and presigned-URL parameters.

    Plain string work, no URL parser: it never raises, so a malformed URL (a bad port, a
    space, a broken IPv6 host) is redacted as well as a good one.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:***" if colon else "***"
    # a "port" that is no number is often a password whose "@" was forgotten (user:pw/x)
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if colon and port and not port.isdigit():
        host = f"{name}:***"
    authority = f"{userinfo}{at}{host}"
    if scheme.lower() in ("http", "https"):
        tail, hash_sep, fragment = tail.partition("#")
        path, q_sep, query = tail.partition("?")
        tail = path + q_sep + (_redact_query(query) if q_sep else "") + hash_sep + fragment
    return f"{scheme}{sep}{authority}{tail}"


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
    shown = redact(uri)  # every message below names the URI without its credentials
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"{shown}: unsupported scheme {scheme!r} (supported: {', '.join(SCHEMES)}, or a plain path)"
        )
    if scheme in LOCAL_SCHEMES:
        host, sep, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ValueError(
                f"{shown}: {scheme}:// URIs name a local path (file:///abs/path), not host "
                f"{redact('x://' + host)[4:]!r}"
            )
        if not sep or not path:
            raise ValueError(f"{shown}: no path after {scheme}://")
        return ParsedURI(uri, scheme, unquote("/" + path))
    if scheme == "s3":
        # Like the AWS CLI: the key is everything after "bucket/", taken literally
        # ('%', '?' and '#' are key characters), so listed keys read back as they are.
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"{shown}: s3:// URI has no bucket (expected s3://bucket/key)")
        if not _BUCKET.match(bucket):
            raise ValueError(
                f"{shown}: {redact('s3://' + bucket)[5:]!r} is not a valid S3 bucket name "
                "(letters, digits, '.', '-', '_')"
            )
        return ParsedURI(uri, "s3", key, bucket=bucket)
    bad = _BAD_URL_CHARS.search(uri)
    if bad:
        raise ValueError(
            f"{shown!r}: {scheme}:// URLs cannot hold {bad.group()!r} (percent-encode it)"
        )
    # urllib's messages can quote a part of the URL (a "port" that is really a password,
    # a netloc): none is repeated, and none is kept as __context__ either
    problem = None
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 -- raises on a port that is not a number in 0..65535
    except ValueError as exc:
        text = str(exc).lower()
        problem = (
            "bad port (not a number in 0..65535)"
            if "port" in text
            else "malformed URL (broken IPv6 host)"
            if "ipv6" in text
            else "malformed URL"
        )
    if problem is not None:
        raise ValueError(f"{shown}: {problem}")
    if not parts.hostname:
        raise ValueError(f"{shown}: {scheme}:// URI has no host")
    return ParsedURI(uri, scheme, parts.path or "/", netloc=parts.netloc)
