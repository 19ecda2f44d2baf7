"""The network knobs (fastload.storage.network_options): bad values are ValueErrors naming
the knob before any request; where the CA bundle comes from."""

from __future__ import annotations

import os

import pytest

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
