"""AWS credentials, region and endpoint (fastload.storage.credentials): arguments, environment
and profile files, as the AWS tools resolve them; secrets never shown."""

from __future__ import annotations

import pytest

from fastload.storage import credentials
from fastload.storage.engine import RangeEngine
from fastload.storage.secret import reveal
from tests.support.network import expected, no_secret, table, traceback_locals
from tests.support.servers import ACCESS_KEY, S3_OBJECTS, SECRET_KEY

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("clean_aws_env")]


def test_no_credentials_and_anonymous(rclone_s3):
    ep = {"endpoint_url": rclone_s3.endpoint}
    with RangeEngine(**ep) as eng, pytest.raises(PermissionError, match="no AWS credentials"):
        eng.size("s3://data/big.bin")
    with RangeEngine(anonymous=True, **ep) as eng:
        # sent unsigned, the server refuses them (rclone: 400 UnsupportedAlgorithm)
        with pytest.raises(PermissionError, match="UnsupportedAlgorithm"):
            eng.list("s3://data/")
        with pytest.raises(PermissionError, match="UnsupportedAlgorithm"):
            eng.read_into(["s3://data/big.bin"], table([(0, 0, 10, 0)]), bytearray(10))


def test_credentials_from_environment(rclone_s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", rclone_s3.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # the S3-specific one wins
    with RangeEngine() as eng:
        assert bytes(eng.read("s3://data/small/obj-001.bin")) == expected("data/small/obj-001.bin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with RangeEngine(
        secret_access_key=SECRET_KEY, access_key_id=ACCESS_KEY
    ) as eng:  # arguments win
        assert eng.size("s3://data/small/obj-001.bin") == S3_OBJECTS["data/small/obj-001.bin"][0]


def test_credentials_from_profile(rclone_s3, monkeypatch, tmp_path):
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = bad\naws_secret_access_key = bad\n"
        f"[train]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    (tmp_path / "config").write_text(
        f"[profile train]\nregion = eu-west-3\nendpoint_url = {rclone_s3.endpoint}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    cfg = credentials.resolve(profile="train")
    assert cfg.region == "eu-west-3" and cfg.endpoint_url == rclone_s3.endpoint
    monkeypatch.setenv("AWS_PROFILE", "train")
    with RangeEngine() as eng:
        assert eng.size("s3://data/big.bin") == S3_OBJECTS["data/big.bin"][0]
    with pytest.raises(ValueError, match="no such profile"):
        credentials.resolve(profile="missing")


def test_credentials_region_and_endpoint_precedence(monkeypatch, tmp_path):
    """explicit > environment > profile (credentials file over config file), as the AWS tools do."""
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = file-ak\naws_secret_access_key = file-sk\n"
        "aws_session_token = file-tok\n"
        "[p2]\naws_access_key_id = p2-ak\naws_secret_access_key = p2-sk\n"
    )
    (tmp_path / "config").write_text(
        "[default]\naws_access_key_id = conf-ak\naws_secret_access_key = conf-sk\n"
        "region = ap-south-1\nendpoint_url = http://conf:1\n"
        "[profile p2]\nregion = eu-north-1\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))

    def creds(**kw):
        c = credentials.resolve(**kw).credentials
        return c.access_key, reveal(c.secret_key), reveal(c.session_token)

    assert creds() == ("file-ak", "file-sk", "file-tok")
    cfg = credentials.resolve()
    assert (cfg.region, cfg.endpoint_url) == ("ap-south-1", "http://conf:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-sk")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-tok")
    assert creds() == ("env-ak", "env-sk", "env-tok")
    monkeypatch.setenv("AWS_PROFILE", "p2")  # AWS_PROFILE does not hide the environment's keys ...
    assert creds() == ("env-ak", "env-sk", "env-tok")
    assert creds(profile="p2") == ("p2-ak", "p2-sk", None)  # ... an explicit profile does
    assert creds(access_key_id="a", secret_access_key="s", session_token="t") == ("a", "s", "t")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert creds() == ("p2-ak", "p2-sk", None)
    assert credentials.resolve().region == "eu-north-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-1")
    assert credentials.resolve().region == "us-west-1"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert credentials.resolve().region == "us-west-2"
    assert credentials.resolve(region="sa-east-1").region == "sa-east-1"
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:2/")
    assert credentials.resolve().endpoint_url == "http://env:2"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://env-s3:3")
    assert credentials.resolve().endpoint_url == "http://env-s3:3"
    assert credentials.resolve(endpoint_url="http://arg:4").endpoint_url == "http://arg:4"
    assert credentials.resolve(anonymous=True).credentials is None


def test_a_broken_credentials_file_is_named_without_its_secrets(monkeypatch, tmp_path):
    for text, line in [
        (f"aws_secret_access_key = {SECRET_KEY}\n[default]\n", "line 1"),
        (f"[default]\naws_access_key_id = a\n{SECRET_KEY}\n", "line 3"),
    ]:
        (tmp_path / "credentials").write_text(text)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
        with pytest.raises(
            ValueError, match=f"credentials: cannot parse AWS configuration .*{line}"
        ) as ei:
            RangeEngine(anonymous=False).backend("s3")
        no_secret(str(ei.value) + repr(ei.value))
        # not even kept out of sight: configparser's error quotes the secret line
        assert ei.value.__cause__ is None and ei.value.__context__ is None


# -- secrets are held as Secret: no repr, str or captured local shows them -----------------


def _raised(call):
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 -- the test looks at it
        return exc
    raise AssertionError("no exception")


def test_network_options_hold_the_secret_in_a_redacting_type(rclone_s3):
    opts = {**rclone_s3.options, "session_token": "TOKEN-xyz"}
    with RangeEngine(**opts) as eng:
        for text in (repr(eng.network_options), str(eng.network_options), repr(vars(eng))):
            no_secret(text)
        assert not isinstance(eng.network_options, dict)
        with pytest.raises(TypeError):  # read-only
            eng.network_options["secret_access_key"] = "x"  # type: ignore[index]
        for thing in (
            eng.backend("s3").opts,
            eng.backend("s3").config,
            eng.backend("s3").config.credentials,
        ):
            no_secret(repr(thing) + str(thing))
        assert reveal(eng.network_options["secret_access_key"]) == SECRET_KEY  # still usable
        with RangeEngine(**eng.network_options) as again:  # and passed on
            assert again.size("s3://data/big.bin") == S3_OBJECTS["data/big.bin"][0]


def test_captured_locals_of_failures_show_no_secret(rclone_s3, monkeypatch, tmp_path):
    """What --showlocals prints for each frame of a failure, down to the native call."""
    bad = {**rclone_s3.options, "secret_access_key": SECRET_KEY + "x", "session_token": "TOKEN-xyz"}
    eng = RangeEngine(**bad)
    failures = [
        lambda: RangeEngine(**{**bad, "max_retries": -1}),  # a bad knob after the secrets
        lambda: eng.size("s3://data/big.bin"),
        lambda: eng.read_into(["s3://data/big.bin"], table([(0, 0, 10, 0)]), bytearray(10)),
        lambda: eng.read("s3://data/big.bin"),
        lambda: eng.list("s3://data/"),
    ]
    for call in failures:
        no_secret(traceback_locals(_raised(call)))
    (tmp_path / "credentials").write_text(f"[default]\naws_access_key_id = a\n{SECRET_KEY}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    no_secret(traceback_locals(_raised(lambda: RangeEngine().backend("s3"))))
    eng.close()
