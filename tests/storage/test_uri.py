"""URIs in errors: a URL's password and a presigned URL's signature or token are redacted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastload
from fastload.storage.engine import RangeEngine
from fastload.storage.uri import parse_uri, redact
from tests.support.network import FAST_RETRY, table

pytestmark = pytest.mark.http

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))


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


# -- malformed URLs are redacted too; so is a user name alone -------------------------

SECRET = "s3cr3t-VALUE"
PRESIGNED = f"X-Amz-Credential=AKIDX%2F1&X-Amz-Signature={SECRET}&X-Amz-Security-Token={SECRET}&v=1"


@pytest.mark.parametrize(
    "uri,why",
    [
        (f"http://user:{SECRET}@h:99999/x?{PRESIGNED}", "bad port"),
        (f"http://user:{SECRET}@h:12ab/x", "bad port"),
        (f"http://user:{SECRET}/x", "bad port"),  # no '@': the "port" is really the password
        (f"http://user:{SECRET}@exa mple/x?{PRESIGNED}", "cannot hold ' '"),
        (f"http://user:{SECRET}@[::1/x?{PRESIGNED}", "malformed URL"),
        (f"https://{SECRET}@:80/x", "no host"),
        (f"s3://AKIDX:{SECRET}@bucket/key", "not a valid S3 bucket name"),
        (f"gs://user:{SECRET}@b/k", "unsupported scheme"),
    ],
)
def test_malformed_url_errors_never_repeat_credentials(uri, why):
    with pytest.raises(ValueError, match=why) as ei:
        RangeEngine().read_ranges(uri, [(0, 10)])
    text = str(ei.value) + repr(ei.value)
    assert SECRET not in text and "AKIDX%2F1" not in text
    assert ei.value.__context__ is None  # urllib's own error (it may quote the URL) is not kept


def test_a_user_name_alone_is_redacted():
    """``http://TOKEN@host``: a user without a password is usually a token."""
    assert redact("http://ghp_TOKEN123@host/x") == "http://***@host/x"
    assert redact("http://user:pw@host/x?sig=1&a=2#f") == "http://user:***@host/x?sig=***&a=2#f"
    assert redact("https://host/x") == "https://host/x"
    assert "ghp_TOKEN123" not in repr(parse_uri("http://ghp_TOKEN123@host/x"))


@pytest.mark.parametrize("bad", ["port", "missing"])
def test_the_cli_never_prints_url_credentials(http_server, bad):
    port = 99999 if bad == "port" else http_server.port
    uri = f"http://{SECRET}@127.0.0.1:{port}/nope.bin?{PRESIGNED}"
    env = dict(os.environ, PYTHONPATH=ROOT)
    for argv in (["get", uri, "-o", os.devnull], ["bench", uri, "--repeat", "1"]):
        proc = subprocess.run(
            [sys.executable, "-m", "fastload", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert SECRET not in out and "AKIDX%2F1" not in out and "***" in out, out


def test_the_cli_never_prints_url_credentials_on_success(http_server, tmp_path):
    http_server.put("ok.bin", b"y" * 5000)
    uri = f"http://{SECRET}@127.0.0.1:{http_server.port}/ok.bin?{PRESIGNED}"
    proc = subprocess.run(
        [sys.executable, "-m", "fastload", "get", uri],  # the file is named after the path
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ok.bin").read_bytes() == b"y" * 5000
    assert SECRET not in proc.stdout + proc.stderr and "***@127.0.0.1" in proc.stderr
