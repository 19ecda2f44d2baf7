"""The network knobs of RangeEngine(**network_options), checked in one place.

Every field changes behaviour; an unknown name or a bad value is a ValueError
naming the knob before any request is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from fastload.checks import check_bool, check_choice, check_int, check_number, check_str, fail

# Where Debian/Ubuntu, RHEL/Fedora, SUSE and Alpine keep the system CA bundle.
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
CA_BUNDLE_ENV = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


@dataclass(frozen=True)
class NetworkOptions:
    """Options of the http(s):// and s3:// backends.

    S3 addressing and credentials (explicit values override the AWS
    environment and profile files):
      endpoint_url, region, access_key_id, secret_access_key, session_token,
      profile, anonymous (send unsigned requests), addressing_style
      ("auto": virtual-hosted for AWS, path-style for custom endpoints;
      "path"; "virtual"), list_page_size (keys per ListObjectsV2 page).
    TLS: ca_bundle (a PEM file; default: AWS_CA_BUNDLE, SSL_CERT_FILE,
      CURL_CA_BUNDLE, then the system bundle), verify (check certificates).
    Faults: max_retries (retries per request of a transient failure),
      retry_deadline (seconds after a request's first failure past which it
      is not retried), backoff_base / backoff_cap (seconds: first backoff,
      doubling up to the cap, with jitter; Retry-After is honoured),
      connect_timeout (seconds), low_speed_limit / low_speed_time (a
      transfer under low_speed_limit bytes/s for low_speed_time seconds is
      abandoned and retried; low_speed_time=0 turns this off),
      request_timeout (seconds one HEAD or LIST request may take, its
      retries included).
    Transport: buffer_size (bytes per recv), http2 (offer HTTP/2 over TLS),
      follow_redirects (http(s):// only), user_agent, libcurl_path (bind
      this libcurl instead of pycurl's).
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    anonymous: bool = False
    addressing_style: str = "auto"
    list_page_size: int = 1000
    ca_bundle: str | None = None
    verify: bool = True
    max_retries: int = 5
    retry_deadline: float = 60.0
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    connect_timeout: float = 10.0
    low_speed_limit: int = 1024
    low_speed_time: int = 30
    request_timeout: float = 60.0
    buffer_size: int = 1 << 20
    http2: bool = True
    follow_redirects: bool = True
    user_agent: str = "fastload"
    libcurl_path: str | None = None

    def __repr__(self) -> str:  # never print a secret
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("secret_access_key", "session_token"):
            if shown[k] is not None:
                shown[k] = "***"
        return "NetworkOptions(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

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
            "secret_access_key",
            "session_token",
            "profile",
            "ca_bundle",
            "libcurl_path",
        ):
            check_str(name, getattr(self, name), optional=True)
        for name in ("anonymous", "verify", "http2", "follow_redirects"):
            check_bool(name, getattr(self, name))
        check_choice("addressing_style", self.addressing_style, ("auto", "path", "virtual"))
        check_int("list_page_size", self.list_page_size, 1, 1000)
        check_int("max_retries", self.max_retries, 0)
        check_int("low_speed_limit", self.low_speed_limit, 1)  # bytes/s
        check_int("low_speed_time", self.low_speed_time, 0)  # seconds
        check_int("buffer_size", self.buffer_size, 1024, 10 << 20)  # libcurl's limits
        for name in (
            "retry_deadline",
            "backoff_base",
            "backoff_cap",
            "connect_timeout",
            "request_timeout",
        ):
            check_number(name, getattr(self, name), what="a number of seconds")
        check_str("user_agent", self.user_agent, empty=True)
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise fail("endpoint_url", self.endpoint_url, "must be an http:// or https:// URL")
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
