"""The command line (fastload.app.cli): get and bench."""

import os
import subprocess
import sys

import pytest

import fastload
from fastload.app.cli import main

ROOT = os.path.dirname(os.path.dirname(fastload.__file__))


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
    assert "nope.bin" in err and "No such file" in err
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
