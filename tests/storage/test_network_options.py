"""The network knobs (fastload.storage.network_options): bad values are ValueErrors naming
the knob before any request; where the CA bundle comes from."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastload import errors
from fastload.storage.engine import RangeEngine
from fastload.storage.network_options import SYSTEM_CA_BUNDLES, NetworkOptions

pytestmark = pytest.mark.http


def test_bad_options_are_value_errors_at_construction():
    for kw, match in [
        ({"max_retries": -1}, "max_retries"),
        ({"verify": 1}, "verify"),
        ({"ca_bundle": "/no/such.pem"}, "ca_bundle"),
        ({"bogus": 1}, "unknown network option"),
        ({"buffer_size": 10}, "buffer_size"),
        ({"connect_timeout": 0}, "connect_timeout"),
    ]:
        with pytest.raises(ValueError, match=match):  # before any read
            RangeEngine(**kw)
    with pytest.raises(ValueError, match="unsupported scheme"):
        RangeEngine().size("ftp://host/x")


def test_ca_bundle_precedence(tmp_path, monkeypatch):
    """explicit ca_bundle, then AWS_CA_BUNDLE, SSL_CERT_FILE, CURL_CA_BUNDLE, then the system's."""
    files = {}
    for name in ("arg", "AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        files[name] = str(tmp_path / f"{name}.pem")
        open(files[name], "w").close()
        if name != "arg":
            monkeypatch.setenv(name, files[name])
    assert NetworkOptions(ca_bundle=files["arg"]).resolved_ca_bundle() == files["arg"]
    for name in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        assert NetworkOptions().resolved_ca_bundle() == files[name]
        monkeypatch.delenv(name)
    assert NetworkOptions().resolved_ca_bundle() == next(
        (p for p in SYSTEM_CA_BUNDLES if os.path.isfile(p)), None
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="SSL_CERT_FILE=.*missing.pem.*no such CA bundle"):
        NetworkOptions().resolved_ca_bundle()


# -- no control character reaches a request line or header ----------------------------


@pytest.mark.parametrize(
    "knob,value",
    [
        ("session_token", "SECRETTOK\r\nX-Injected: 1"),
        ("region", "us-east-1\r\nX-Injected: 1"),
        ("user_agent", "fastload/1\nX-Injected: 1"),
        ("access_key_id", "AK\rX"),
        ("endpoint_url", "http://h:9000/\r\nX-Injected: 1"),
        ("session_token", "SECRETTOK\x00"),
        ("user_agent", "ua\x7f"),
    ],
)
def test_control_characters_in_header_values_are_refused(knob, value):
    kw = {knob: value}
    if knob == "access_key_id":
        kw["secret_access_key"] = "s"
    with pytest.raises(
        ValueError, match=f"{knob}=.* is invalid: holds the control character"
    ) as ei:
        RangeEngine(**kw)
    if knob == "session_token":  # a secret is never shown, even a broken one
        assert "SECRETTOK" not in str(ei.value) and "X-Injected" not in str(ei.value)


@pytest.mark.s3
def test_control_characters_from_the_environment_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_REGION", "eu-west-1\r\nX-Injected: 1")
    with pytest.raises(ValueError, match="region=.* holds the control character"):
        RangeEngine(anonymous=True).backend("s3")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SK")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "T\nX-Injected: 1")
    with pytest.raises(ValueError, match=r"session_token='<hidden>' is invalid") as ei:
        RangeEngine().backend("s3")
    assert "X-Injected" not in str(ei.value)


def test_a_header_line_with_a_control_character_is_never_sent(http_server):
    """Both planes check what they send, whoever built the headers."""
    url = http_server.put("h.bin", b"x" * 100)
    with RangeEngine() as eng:
        transport = eng.backend("http").transport
        with pytest.raises(errors.InvalidRequestError, match="control character"):
            transport.read(
                [url.encode()],
                [b"X-Amz-Security-Token: a\rX-Injected: 1"],
                [url],
                np.array([[0, 0, 10, 0]], dtype=np.int64),
                bytearray(10),
                1 << 20,
                1,
                None,
                None,
            )
        with pytest.raises(ValueError, match=r"request header #1 holds a control character"):
            transport.request("HEAD", url, ["X-Ok: 1", "X-Bad: a\r\nX-Injected: 1"], url)
    assert http_server.server.seen_headers == []  # nothing reached the server
