"""The network knobs of RangeEngine(**network_options), checked in one place.

Every field changes behaviour; an unknown name or a bad value is a ValueError
naming the knob before any request is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from fastload.checks import (
    check_bool,
    check_choice,
    check_header_value,
    check_int,
    check_number,
    check_str,
    fail,
)
from fastload.storage.read_settings import MAX_TIMEOUT_S
from fastload.storage.secret import SECRET_OPTIONS, Secret, reveal, shown_options
from fastload.storage.uri import redact

# Where Debian/Ubuntu, RHEL/Fedora, SUSE and Alpine keep the system CA bundle.
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
CA_BUNDLE_ENV = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
# Counts and rates past these are typos, and would overflow the C types they go to.
MAX_RETRIES = 1_000_000
MAX_LOW_SPEED_LIMIT = 1 << 40  # bytes/s
MAX_LIST_CONCURRENCY = 64  # ListObjectsV2 requests of one listing in flight
SECONDS_KNOBS = (
    "retry_deadline",
    "backoff_base",
    "backoff_cap",
    "connect_timeout",
    "request_timeout",
)
# Values that end up in a request line or header: a control character would inject one.
HEADER_KNOBS = ("endpoint_url", "region", "access_key_id", "session_token", "user_agent")


@dataclass(frozen=True)
class NetworkOptions:
    """Options of the http(s):// and s3:// backends.

    S3 addressing and credentials (explicit values override the AWS
    environment and profile files):
      endpoint_url, region, access_key_id, secret_access_key, session_token,
      profile, anonymous (send unsigned requests), addressing_style
      ("auto": virtual-hosted for AWS, path-style for custom endpoints;
      "path"; "virtual"), list_page_size (keys per ListObjectsV2 page),
      list_concurrency (ListObjectsV2 requests one listing keeps in flight: the next
      page is asked for while one is parsed and sub-prefixes are listed at once; 1:
      one chain of pages, one request at a time).
    TLS: ca_bundle (a PEM file; default: AWS_CA_BUNDLE, SSL_CERT_FILE,
      CURL_CA_BUNDLE, then the system bundle), verify (check certificates).
    Faults: the retry budget is time-based, like obstore's: a transient
      failure (5xx, 429, SlowDown, resets, short bodies) is retried for
      retry_deadline seconds (180) from a request's first failure, with
      backoff_base / backoff_cap (0.1 -> 15 s: first backoff, doubling up
      to the cap, with jitter; Retry-After is honoured); max_retries (None:
      no count limit) also caps the retries per request. The error that ends
      the retries shows the budget. pin_version (True): a read whose object
      changes under it (another ETag, Last-Modified or size than its first
      response, HEAD or listing) raises ObjectChangedError instead of
      mixing two versions (False: for servers whose ETags differ per node),
      connect_timeout (seconds), low_speed_limit / low_speed_time (a
      transfer under low_speed_limit bytes/s for low_speed_time seconds is
      abandoned and retried; low_speed_time=0 turns this off),
      request_timeout (seconds one HEAD or LIST request may take, its
      retries included).
    Transport: buffer_size (bytes per recv), http2 (offer HTTP/2 over TLS),
      follow_redirects (http(s):// only; at most 5 per request, to http(s)
      only, never from https:// down to http://; libcurl >= 7.83 sends a
      URL's credentials to no other origin; S3 requests never follow one),
      user_agent, libcurl_path (bind this libcurl instead of pycurl's).
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = None  # a str given is held as a Secret
    session_token: Secret | None = None
    profile: str | None = None
    anonymous: bool = False
    addressing_style: str = "auto"
    list_page_size: int = 1000
    list_concurrency: int = 8
    ca_bundle: str | None = None
    verify: bool = True
    pin_version: bool = True
    max_retries: int | None = None
    retry_deadline: float = 180.0
    backoff_base: float = 0.1
    backoff_cap: float = 15.0
    connect_timeout: float = 10.0
    low_speed_limit: int = 1024
    low_speed_time: int = 30
    request_timeout: float = 60.0
    buffer_size: int = 1 << 20
    http2: bool = True
    follow_redirects: bool = True
    user_agent: str = "fastload"
    libcurl_path: str | None = None

    def __post_init__(self) -> None:
        for name in SECRET_OPTIONS:  # never held in the clear, whoever built the options
            value = getattr(self, name)
            if value is not None and not isinstance(value, Secret):
                object.__setattr__(self, name, Secret(value))

    def __repr__(self) -> str:  # the dataclass's would show a password in endpoint_url
        shown = shown_options({f.name: getattr(self, f.name) for f in fields(self)})
        return f"NetworkOptions({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> NetworkOptions:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown network option(s) {unknown}; valid: {sorted(names)}")
        opts = cls(**kwargs)
        opts._check()
        return opts

    def _check(self) -> None:
        for name in (
            "endpoint_url",
            "region",
            "access_key_id",
            "profile",
            "ca_bundle",
            "libcurl_path",
        ):
            check_str(name, getattr(self, name), optional=True)
        for name in SECRET_OPTIONS:
            check_str(name, reveal(getattr(self, name)), optional=True)
        for name in HEADER_KNOBS:
            value = reveal(getattr(self, name))
            if name == "endpoint_url" and isinstance(value, str):
                value = redact(value)  # shown in the message: without its credentials
            check_header_value(name, value, secret=name in SECRET_OPTIONS)
        if self.secret_access_key is not None:  # goes into no header, but a CR is a paste error
            check_header_value("secret_access_key", self.secret_access_key.reveal(), secret=True)
        for name in ("anonymous", "verify", "http2", "follow_redirects", "pin_version"):
            check_bool(name, getattr(self, name))
        check_choice("addressing_style", self.addressing_style, ("auto", "path", "virtual"))
        check_int("list_page_size", self.list_page_size, 1, 1000)
        check_int("list_concurrency", self.list_concurrency, 1, MAX_LIST_CONCURRENCY)
        check_int("max_retries", self.max_retries, 0, MAX_RETRIES, optional=True)
        check_int("low_speed_limit", self.low_speed_limit, 1, MAX_LOW_SPEED_LIMIT)  # bytes/s
        check_int("low_speed_time", self.low_speed_time, 0, int(MAX_TIMEOUT_S))  # seconds
        check_int("buffer_size", self.buffer_size, 1024, 10 << 20)  # libcurl's limits
        for name in SECONDS_KNOBS:
            check_number(
                name, getattr(self, name), maximum=MAX_TIMEOUT_S, what="a number of seconds"
            )
        check_str("user_agent", self.user_agent, empty=True)
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise fail(
                "endpoint_url", redact(self.endpoint_url), "must be an http:// or https:// URL"
            )
        if self.endpoint_url is not None:
            _check_endpoint(self.endpoint_url)
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise ValueError(f"ca_bundle: no such file {self.ca_bundle!r}")
        if self.anonymous and (self.access_key_id or self.secret_access_key):
            raise ValueError("anonymous=True conflicts with access_key_id/secret_access_key")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together")

    def resolved_ca_bundle(self) -> str | None:
        """The CA file to verify with: explicit, then the environment, then the system's.

        The libcurl in the pycurl wheel looks at a RHEL path by default, so
        fastload always names a bundle when one exists.
        """
        if self.ca_bundle:
            return self.ca_bundle
        for var in CA_BUNDLE_ENV:
            path = os.environ.get(var)
            if path:
                if not os.path.isfile(path):
                    raise ValueError(f"{var}={path!r}: no such CA bundle file")
                return path
        return next((p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), None)


def _check_endpoint(url: str) -> None:
    """A host and a number for a port. urllib's own messages quote the "port", often a
    password whose "@" was forgotten: neither is repeated, nor kept as __context__."""
    from urllib.parse import urlsplit

    problem = None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number in 0..65535
        if not parts.hostname:
            problem = "has no host"
    except ValueError:
        problem = "has a bad port or host (a port must be a number in 0..65535)"
    if problem is not None:
        raise fail("endpoint_url", redact(url), problem)
