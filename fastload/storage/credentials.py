"""AWS credentials, region and endpoint, found the way the AWS tools find them.

Order: explicit arguments, then the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), then the profile (explicit, else
AWS_PROFILE, else "default") in ~/.aws/credentials and ~/.aws/config
(AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE move them).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from typing import Any

from fastload.storage.secret import Secret
from fastload.storage.uri import redact

DEFAULT_REGION = "us-east-1"
# Profile-file keys whose values are secrets: held as Secret from the moment they are read.
_SECRET_KEYS = ("aws_secret_access_key", "aws_session_token")


@dataclass(frozen=True)
class Credentials:
    """An access key id (not a secret: AWS shows it in errors) and its Secret parts."""

    access_key: str
    secret_key: Secret
    session_token: Secret | None = None

    def __post_init__(self) -> None:  # whoever built it: never held in the clear
        object.__setattr__(self, "secret_key", Secret(self.secret_key))
        object.__setattr__(self, "session_token", _secret(self.session_token))


@dataclass(frozen=True)
class S3Config:
    credentials: Credentials | None  # None: anonymous, or nothing found
    region: str
    endpoint_url: str | None  # None: AWS (virtual-hosted)
    source: str  # where the credentials came from, for error messages

    def __repr__(self) -> str:  # the endpoint may hold a password: never shown
        return (
            f"S3Config(credentials={self.credentials!r}, region={self.region!r}, "
            f"endpoint_url={redact(self.endpoint_url) if self.endpoint_url else None!r}, "
            f"source={self.source!r})"
        )


def _read_ini(path: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    try:
        cp.read(os.path.expanduser(path))
    except configparser.Error as exc:
        # configparser quotes the offending line, which may hold a secret: name only where
        # it is, and raise outside the handler so the error is not kept as __context__
        lines = [n for n, _ in getattr(exc, "errors", [])] or [getattr(exc, "lineno", "?")]
        problem = f"{type(exc).__name__} at line {', '.join(str(n) for n in lines)}"
    else:
        return cp
    raise ValueError(f"{path}: cannot parse AWS configuration ({problem})")


def _section(cp: configparser.ConfigParser, *names: str) -> dict[str, Any]:
    """The first section of ``names`` that exists, its secrets wrapped in Secret."""
    for name in names:
        if cp.has_section(name):
            return {k: Secret(v) if k in _SECRET_KEYS else v for k, v in cp.items(name)}
    return {}


def resolve(
    *,
    access_key_id: str | None = None,
    secret_access_key: Secret | str | None = None,
    session_token: Secret | str | None = None,
    profile: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    anonymous: bool = False,
) -> S3Config:
    env = os.environ
    prof_name = profile or env.get("AWS_PROFILE") or "default"
    creds_file = _read_ini(env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    conf_file = _read_ini(env.get("AWS_CONFIG_FILE", "~/.aws/config"))
    prof_creds = _section(creds_file, prof_name)
    prof_conf = _section(conf_file, f"profile {prof_name}", prof_name)
    if profile and not prof_creds and not prof_conf:
        raise ValueError(
            f"profile={profile!r}: no such profile in the AWS credentials or config file"
        )

    creds: Credentials | None = None
    source = "anonymous"
    if not anonymous:
        if access_key_id and secret_access_key:
            creds, source = (
                Credentials(access_key_id, Secret(secret_access_key), _secret(session_token)),
                "arguments",
            )
        elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY") and not profile:
            creds = Credentials(
                env["AWS_ACCESS_KEY_ID"],
                Secret(env["AWS_SECRET_ACCESS_KEY"]),
                _secret(session_token or os.environ.get("AWS_SESSION_TOKEN")),
            )
            source = "environment"
        else:
            merged = {**prof_conf, **prof_creds}
            if merged.get("aws_access_key_id") and merged.get("aws_secret_access_key"):
                creds = Credentials(
                    merged["aws_access_key_id"],
                    merged["aws_secret_access_key"],
                    _secret(session_token or merged.get("aws_session_token")),
                )
                source = f"profile {prof_name!r}"
            else:
                source = "none found"
    reg = (
        region
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or prof_conf.get("region")
        or DEFAULT_REGION
    )
    endpoint = (
        endpoint_url
        or env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
        or prof_conf.get("endpoint_url")
        or None
    )
    return S3Config(creds, reg, endpoint.rstrip("/") if endpoint else None, source)


def _secret(value: Secret | str | None) -> Secret | None:
    return Secret(value) if value else None
