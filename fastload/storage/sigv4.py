"""AWS Signature Version 4 (header form) for S3 requests.

A GET is signed over host, x-amz-content-sha256 and x-amz-date only: Range is
left unsigned, so one signature serves every part of an object.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
from functools import lru_cache
from urllib.parse import quote

from fastload.storage.secret import Secret, reveal

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@lru_cache(maxsize=64)
def signing_key(secret: Secret | str, date: str, region: str, service: str) -> bytes:
    """The derived key for one day, region and service (cached: four HMACs saved per request)."""
    k = _hmac(("AWS4" + reveal(secret)).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def uri_encode(text: str, *, keep_slash: bool) -> str:
    """RFC 3986 encoding as SigV4 wants it: unreserved characters stay, the rest %XX."""
    return quote(text, safe="/-_.~" if keep_slash else "-_.~")


def canonical_query(params: dict[str, str]) -> str:
    return "&".join(
        f"{uri_encode(k, keep_slash=False)}={uri_encode(v, keep_slash=False)}"
        for k, v in sorted(params.items())
    )


def amz_date(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def sign(
    method: str,
    host: str,
    path: str,
    query: str,
    *,
    access_key: str,
    secret_key: Secret | str,
    region: str,
    session_token: Secret | str | None = None,
    payload_hash: str = EMPTY_SHA256,
    timestamp: str | None = None,
    service: str = "s3",
) -> dict[str, str]:
    """Headers to add to the request: Authorization, x-amz-date, x-amz-content-sha256
    (and x-amz-security-token). ``path`` is already URI-encoded; ``query`` is canonical.
    """
    ts = timestamp or amz_date()
    date = ts[:8]
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": ts}
    if session_token:
        headers["x-amz-security-token"] = reveal(session_token)
    names = sorted(headers)
    signed = ";".join(names)
    canonical = "\n".join(
        [
            method,
            path,
            query,
            "".join(f"{n}:{headers[n].strip()}\n" for n in names),
            signed,
            payload_hash,
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", ts, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    sig = hmac.new(
        signing_key(secret_key, date, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    out = {k: v for k, v in headers.items() if k != "host"}
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={sig}"
    )
    return out
