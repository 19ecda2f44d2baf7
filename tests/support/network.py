"""Helpers and fixtures shared by the http(s):// and s3:// tests (a pytest plugin)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.support.servers import S3_OBJECTS, SECRET_KEY, payload

FAST_RETRY = {"backoff_base": 0.01, "backoff_cap": 0.05}


AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def table(rows):
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def http_stats(eng, scheme="http"):
    return eng.backend(scheme).stats()


def expected(key):
    """The bytes the ``rclone_s3`` server holds under ``key``."""
    return payload(*S3_OBJECTS[key])


def no_secret(text):
    assert SECRET_KEY not in text and "Signature=" not in text and "TOKEN-xyz" not in text


@pytest.fixture
def clean_aws_env(monkeypatch, tmp_path):
    """No AWS settings from the environment or profile files (the S3 tests use it in pytestmark)."""
    for var in AWS_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture
def proxied(http_server, fault_proxy_http):
    """(proxy, url, data): a 600 kB object behind the fault-injecting proxy."""
    data = payload(600_000, 6)
    http_server.put("f.bin", data)
    return fault_proxy_http, f"{fault_proxy_http.endpoint}/f.bin", data


def traceback_locals(exc):
    """repr() of every local of every fastload frame of ``exc`` and of the exceptions chained
    to it: what ``pytest --showlocals`` or an error reporter that captures locals would print
    (the caller's own frames hold what the caller wrote, so they are left out)."""
    import fastload

    package = os.path.dirname(os.path.abspath(fastload.__file__))
    seen, texts = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts.append(repr(exc) + str(exc))
        tb, frames = exc.__traceback__, 0
        while tb is not None:
            if os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package):
                frames += 1
                for name, value in tb.tb_frame.f_locals.items():
                    texts.append(f"{name}={value!r}")
            tb = tb.tb_next
        assert frames or exc.__traceback__ is None, "no fastload frame in the traceback"
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)
