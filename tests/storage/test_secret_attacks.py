"""Secrets held by the storage layer stay out of everything that can be shown: the S3
backend's cache of signed GET headers, and what a backend names a source by."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.storage.engine import RangeEngine
from fastload.storage.network_backend import NetworkBackend
from fastload.storage.secret import RedactedOptions, reveal
from fastload.storage.uri import parse_uri
from tests.support.network import no_secret

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("clean_aws_env")]


def test_the_signed_header_cache_shows_no_token_or_signature(rclone_s3):
    # the cached GET headers hold X-Amz-Security-Token and the Authorization signature
    with RangeEngine(**rclone_s3.options, session_token="TOKEN-xyz") as eng:
        out = bytearray(100)
        try:
            eng.read_into(["s3://data/big.bin"], np.array([(0, 0, 100, 0)], dtype=np.int64), out)
        except OSError:
            pass  # rclone refuses the made-up token: the cache was filled all the same
        backend = eng.backend("s3")
        assert backend._signed  # the cache is what is under test
        no_secret(repr(vars(backend)))
        assert "X-Amz-Security-Token" not in repr(vars(backend))
        # and the headers still go out as signed
        _, blob = backend._signed_get(parse_uri("s3://data/big.bin"), 0.0)
        assert b"TOKEN-xyz" in blob and b"Signature=" in blob


def test_a_backend_names_a_source_without_its_credentials():
    src = parse_uri("http://user:pw-SECRET@host/x?X-Amz-Signature=SIG")
    name = NetworkBackend.name(NetworkBackend.__new__(NetworkBackend), src)
    assert "pw-SECRET" not in name and "SIG" not in name


def test_redacted_options_show_no_secret_and_keep_the_values():
    opts = RedactedOptions(
        {"secret_access_key": "SECRET-1", "session_token": "TOKEN-xyz", "region": "r"}
    )
    for text in (repr(opts), str(opts), f"{opts}", repr({"o": opts})):
        assert "SECRET-1" not in text and "TOKEN-xyz" not in text and "'r'" in text
    assert dict(opts)["secret_access_key"] == "SECRET-1"
    assert reveal(opts["session_token"]) == "TOKEN-xyz"


def test_an_endpoint_password_is_never_shown_and_a_bad_port_is_named():
    eng = RangeEngine(
        endpoint_url="http://user:EP-SECRET@127.0.0.1:9", access_key_id="a", secret_access_key="b"
    )
    backend = eng.backend("s3")
    for text in (repr(eng.network_options), repr(backend.opts), repr(backend.config)):
        assert "EP-SECRET" not in text and "user:***@127.0.0.1:9" in text, text
    assert eng.network_options["endpoint_url"].endswith("EP-SECRET@127.0.0.1:9")  # usable
    # a "port" that is a password whose "@" was forgotten: urllib's message quoted it
    with pytest.raises(ValueError, match="endpoint_url=.*bad port") as info:
        RangeEngine(
            endpoint_url="http://127.0.0.1:EP-SECRET", access_key_id="a", secret_access_key="b"
        )
    assert "EP-SECRET" not in str(info.value) and info.value.__context__ is None
