"""URIs in errors: a URL's password and a presigned URL's signature or token are redacted."""

from __future__ import annotations

import pytest

from fastload.storage.engine import RangeEngine
from tests.support.network import FAST_RETRY, table

pytestmark = pytest.mark.http


def test_secrets_in_urls_stay_out_of_errors(http_server):
    """A URL's password and a presigned URL's signature or token are not repeated in errors."""
    secret = "s3cr3t-VALUE"
    base = http_server.url("nope.bin").replace("http://", f"http://user:{secret}@")
    url = (
        f"{base}?X-Amz-Credential=AK%2F1&X-Amz-Signature={secret}&X-Amz-Security-Token={secret}&v=1"
    )
    with RangeEngine(**FAST_RETRY) as eng:
        for call in (lambda: eng.size(url), lambda: eng.read_ranges(url, [(0, 10)])):
            with pytest.raises(FileNotFoundError) as ei:
                call()
            text = str(ei.value) + repr(ei.value) + str(ei.value.uri)
            assert secret not in text and "AK%2F1" not in text
            assert "http://user:***@127.0.0.1" in text and "nope.bin?" in text and "v=1" in text


def test_engine_errors_do_not_quote_url_credentials(http_server):
    url = http_server.put("cred.bin", b"x" * 100)
    secret = url.replace("http://", "http://user:hunter2@") + "?X-Amz-Signature=deadbeef&part=1"
    with pytest.raises(ValueError) as ei:
        RangeEngine().read_into([secret], table([(0, 0, 10, 0)]), bytearray(5))
    text = str(ei.value)
    assert "hunter2" not in text and "deadbeef" not in text
    assert "user:***@" in text and "X-Amz-Signature=***" in text and "part=1" in text
