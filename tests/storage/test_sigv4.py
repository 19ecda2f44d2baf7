"""SigV4 signing (fastload.storage.sigv4): the same signatures as botocore, session tokens signed."""

from __future__ import annotations

import pytest

from fastload.storage import sigv4
from fastload.storage.engine import RangeEngine
from fastload.storage.uri import parse_uri as eng_parse
from tests.support.servers import ACCESS_KEY, S3_OBJECTS, SECRET_KEY

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("clean_aws_env")]


def test_sigv4_matches_botocore():
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(
        method="GET",
        url="http://127.0.0.1:9000/bkt/a%20b/c.bin?list-type=2&prefix=a%2Fb",
        headers={"x-amz-content-sha256": sigv4.EMPTY_SHA256},
    )
    S3SigV4Auth(Credentials("AK", "SK", "TOKEN"), "s3", "us-east-1").add_auth(req)
    ours = sigv4.sign(
        "GET",
        "127.0.0.1:9000",
        "/bkt/a%20b/c.bin",
        sigv4.canonical_query({"list-type": "2", "prefix": "a/b"}),
        access_key="AK",
        secret_key="SK",
        session_token="TOKEN",
        region="us-east-1",
        timestamp=req.headers["X-Amz-Date"],
    )
    assert ours["Authorization"] == req.headers["Authorization"]


def test_session_token_is_sent_signed(rclone_s3, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "TOKEN-xyz")
    with RangeEngine(endpoint_url=rclone_s3.endpoint, region="us-east-1") as eng:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        backend = eng.backend("s3")
        _, blob = backend._signed_get(eng_parse("s3://data/big.bin"), 0.0)
        assert b"x-amz-security-token: TOKEN-xyz" in blob
        assert b"x-amz-date;x-amz-security-token," in blob  # and it is one of the signed headers
        assert eng.size("s3://data/big.bin") == S3_OBJECTS["data/big.bin"][0]
