"""The command line (fastload.app.cli) as a user meets it: get, ls, stat, bench, --version,
the S3 flags, one-line errors, a moving progress bar, pipes; run in subprocesses against
local files, the rclone S3 server and the HTTP server behind the fault proxy."""

import os
import pty
import re
import subprocess
import sys

import pytest

import fastload
from fastload.app.cli import main
from tests.support.network import AWS_ENV, expected
from tests.support.servers import ACCESS_KEY, S3_OBJECTS, SECRET_KEY, Fault

ROOT = os.path.dirname(os.path.dirname(fastload.__file__))


def cli(*args, env=None, **kw):
    """``python -m fastload ARGS`` in a subprocess (no AWS settings but ``env``'s)."""
    base = {k: v for k, v in os.environ.items() if k not in AWS_ENV}
    return subprocess.run(
        [sys.executable, "-m", "fastload", *args],
        capture_output=True,
        text=kw.pop("text", True),
        env={**base, "PYTHONPATH": ROOT, **(env or {})},
        timeout=kw.pop("timeout", 120),
        **kw,
    )


@pytest.fixture
def profile(tmp_path):
    """An AWS credentials file with profile ``fl`` holding the rclone server's key."""
    creds = tmp_path / "aws-credentials"
    creds.write_text(
        f"[fl]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        "[wrong]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n"
    )
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
    }


@pytest.fixture
def blob(tmp_path):
    p = tmp_path / "blob.bin"
    p.write_bytes(os.urandom(3_000_123))
    return p


def test_get_copies_exactly(blob, tmp_path):
    target = tmp_path / "copy.bin"
    assert (
        main(
            ["get", f"file://{blob}", "-o", str(target), "--part-size", "64KiB", "--inflight", "3"]
        )
        == 0
    )
    assert target.read_bytes() == blob.read_bytes()
    assert not (tmp_path / "copy.bin.part").exists()


def test_get_direct_to_stdout(blob):
    res = subprocess.run(
        [sys.executable, "-m", "fastload", "get", f"direct://{blob}", "-o", "-"],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == blob.read_bytes()


def test_get_missing_is_a_clear_error(tmp_path, capsys):
    assert main(["get", str(tmp_path / "nope.bin"), "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err == f"fastload get: not found: {tmp_path / 'nope.bin'}\n"
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_bench_prints_rate(blob, capsys):
    assert main(["bench", str(blob), "--repeat", "2", "--inflight", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("MB/s") == 3 and "max_inflight_parts=2" in out
    assert main(["bench", str(blob), "--repeat", "1"]) == 0
    assert "max_inflight_parts=4" in capsys.readouterr().out  # the local-file default


def test_bad_size_argument(blob):
    with pytest.raises(SystemExit):
        main(["bench", str(blob), "--part-size", "lots"])


def test_version():
    res = cli("--version")
    assert res.returncode == 0 and res.stdout == f"fastload {fastload.__version__}\n"


def test_ls_and_stat_of_local_files(blob, tmp_path):
    res = cli("ls", str(tmp_path))
    assert res.returncode == 0 and res.stdout.split() == [str(blob)], res.stderr
    res = cli("stat", str(blob))
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{blob}\n  size: 3000123 bytes (2.9 MiB)\n"


@pytest.mark.s3
def test_every_s3_verb_takes_the_endpoint_profile_and_region(rclone_s3, profile, tmp_path):
    flags = ["--endpoint-url", rclone_s3.endpoint, "--profile", "fl", "--region", "us-east-1"]
    res = cli("ls", "s3://data/small/", *flags, env=profile)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == sorted(f"s3://data/{k[5:]}" for k in S3_OBJECTS if "small/" in k)
    res = cli("stat", "s3://data/big.bin", *flags, env=profile)
    size = S3_OBJECTS["data/big.bin"][0]
    assert res.returncode == 0 and f"size: {size} bytes" in res.stdout, res.stderr
    target = tmp_path / "big.bin"
    res = cli(
        "get", "s3://data/big.bin", "-o", str(target), "--part-size", "1MiB", *flags, env=profile
    )
    assert res.returncode == 0, res.stderr
    assert target.read_bytes() == expected("data/big.bin")
    res = cli("bench", "s3://data/big.bin", "--repeat", "1", *flags, env=profile)
    assert res.returncode == 0 and "best:" in res.stdout, res.stderr


@pytest.mark.s3
@pytest.mark.parametrize("verb", ["stat", "get", "bench"])
def test_missing_or_refused_objects_are_one_line_naming_the_uri(rclone_s3, profile, verb, tmp_path):
    flags = ["--endpoint-url", rclone_s3.endpoint, "--profile", "fl"]
    (tmp_path / "out").mkdir()
    out = ["-o", str(tmp_path / "out" / "x")] if verb == "get" else []
    res = cli(verb, "s3://data/nope.bin", *out, *flags, env=profile)
    assert res.returncode == 1
    assert res.stderr == f"fastload {verb}: not found: s3://data/nope.bin (HTTP 404)\n"
    flags[-1] = "wrong"  # keys the server does not know
    res = cli(verb, "s3://data/big.bin", *out, *flags, env=profile)
    assert res.returncode == 1
    assert res.stderr == f"fastload {verb}: access denied: s3://data/big.bin (HTTP 403)\n"
    assert not list((tmp_path / "out").iterdir())  # no partial file left


@pytest.mark.s3
def test_no_sign_request_sends_unsigned_requests(rclone_s3, profile):
    # the server wants signatures: unsigned, the same listing is refused
    flags = ["--endpoint-url", rclone_s3.endpoint, "--profile", "fl"]
    assert cli("ls", "s3://data/small/", *flags, env=profile).returncode == 0
    res = cli("ls", "s3://data/small/", *flags, "--no-sign-request", env=profile)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("fastload ls: access denied: s3://data/small/")


def test_region_and_profile_reach_the_signature(http_server, profile):
    # a plain HTTP server standing in for S3 (path-style GET/HEAD) records what was sent
    http_server.put("bkt/k.bin", b"x" * 1234)
    flags = ["--endpoint-url", f"http://127.0.0.1:{http_server.port}", "--profile", "fl"]
    res = cli("stat", "s3://bkt/k.bin", *flags, "--region", "eu-west-3", env=profile)
    assert res.returncode == 0 and "size: 1234 bytes" in res.stdout, res.stderr
    auth = [h.get("Authorization", "") for h in http_server.server.seen_headers]
    assert auth and all(
        re.search(rf"Credential={ACCESS_KEY}/\d{{8}}/eu-west-3/s3/", a) for a in auth
    )
    http_server.server.seen_headers.clear()
    res = cli("stat", "s3://bkt/k.bin", *flags, "--no-sign-request", env=profile)
    assert res.returncode == 0, res.stderr
    assert not any("Authorization" in h for h in http_server.server.seen_headers)


def test_get_to_a_pipe_whose_reader_leaves_is_quiet(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 << 20))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastload", "get", str(big), "-o", "-", "--part-size", "1MiB"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert proc.stdout.read(100) == big.read_bytes()[:100]  # what `head -c 100` takes
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 141 and err == b""  # 128 + SIGPIPE, as `cat` ends; no traceback


def test_bench_holds_chunks_not_the_whole_object(tmp_path):
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as f:
        f.truncate(512 << 20)
    # VmHWM, not ru_maxrss: ru_maxrss keeps the peak of the (large) pytest process the child
    # was forked from, across exec; VmHWM belongs to the child's own memory
    code = (
        "import sys; from fastload.app.cli import main; "
        f"rc = main(['bench', {str(sparse)!r}, '--repeat', '1', '--part-size', '1MiB']); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "print('maxrss', hwm); sys.exit(rc)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=120,
    )
    assert res.returncode == 0 and "best:" in res.stdout, res.stderr
    peak_kib = int(res.stdout.split("maxrss")[1])
    assert peak_kib < 256 << 10, f"bench peaked at {peak_kib >> 10} MiB for a 512 MiB object"


@pytest.mark.http
def test_the_progress_bar_moves_while_a_slow_transfer_runs(proxied, tmp_path):
    proxy, url, data = proxied  # 600 kB, every response trickled at 160 kB/s
    proxy.queue(*[Fault("trickle", after=16384) for _ in range(60)])
    master, slave = pty.openpty()  # stderr a terminal: the bar is drawn
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastload", "get", url, "-o", str(tmp_path / "f.bin")]
        + ["--part-size", "64KiB", "--inflight", "1"],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the other end closed (EIO)
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(60) == 0
    assert (tmp_path / "f.bin").read_bytes() == data
    frames = [f for f in out.decode().split("\r") if "%" in f]
    shown = [float(m.group(1)) for f in frames if (m := re.search(r"(\d+\.\d)%", f))]
    assert len(frames) >= 5, frames  # redrawn every 0.1 s, not once per chunk
    assert len(set(shown)) >= 3 and shown == sorted(shown) and shown[-1] == 100.0
    assert all("MB/s" in f and "ETA" in f or " in 0:" in f for f in frames)
    assert "KiB / 585.9 KiB" in frames[-1]
