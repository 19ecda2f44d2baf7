"""The command line attacked: bad numbers are usage errors (exit status 2, argparse's one
line) before anything is read; an output it cannot write is one line before the read; any
failure is one line without a traceback unless --debug; every verb has --help."""

import os
import subprocess
import sys

import pytest

import fastload
import fastload.app.cli as cli_module
from fastload.app.cli import main

ROOT = os.path.dirname(os.path.dirname(fastload.__file__))
VERBS = ["demo", "get", "ls", "stat", "bench", "index", "profile"]


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(50_000))
    return str(path)


def usage_error(capsys, *argv):
    """main(argv) must stop as argparse does, status 2; its message."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["get", "{blob}", "--part-size", "inf"], "argument --part-size: 'inf' is invalid"),
        (["get", "{blob}", "--part-size", "1e400"], "argument --part-size: '1e400' is invalid"),
        (["get", "{blob}", "--part-size=-5"], "argument --part-size: '-5' is invalid: must be >="),
        (["get", "{blob}", "--part-size", "1"], "'1' is invalid: must be >= 4096 bytes"),
        (["get", "{blob}", "--inflight", "0"], "argument --inflight: 0 is invalid: must be >= 1"),
        (["get", "{blob}", "--inflight", "5000"], "argument --inflight: 5000 is invalid: too lar"),
        (["get", "{blob}", "--inflight", "x"], "argument --inflight: not an integer: 'x'"),
        (["bench", "{blob}", "--repeat", "0"], "argument --repeat: 0 is invalid: must be >= 1"),
        (["bench", "{blob}", "--repeat", "-1"], "argument --repeat: -1 is invalid"),
        (["demo", "--epochs", "0"], "argument --epochs: 0 is invalid"),
        (["demo", "--images", "-3"], "argument --images: -3 is invalid"),
        (["demo", "--batch-size", "1.5"], "argument --batch-size: not an integer: '1.5'"),
        (["profile", "{blob}", "--batches", "0"], "argument --batches: 0 is invalid"),
        (["profile", "{blob}", "--prefetch", "0"], "argument --prefetch: 0 is invalid"),
        (["profile", "{blob}", "--step-ms", "nan"], "argument --step-ms: 'nan' must be finite"),
        (["profile", "{blob}", "--step-ms", "-1"], "argument --step-ms: '-1' must be"),
        (["profile", "{blob}", "--record-shape", "a,b"], "argument --record-shape: not a shape"),
        (["profile", "{blob}", "--record-shape", "4,0"], "argument --record-shape: not a shape"),
        (["profile", "{blob}", "--dtype", "float33"], "argument --dtype: not a numpy dtype"),
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "the following arguments are required: command"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_bad_argument_is_a_usage_error(capsys, blob, argv, said):
    err = usage_error(capsys, *[a.replace("{blob}", blob) for a in argv])
    assert said.replace("must be finite", "must be a finite") in err
    assert "Traceback" not in err


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(capsys, verb):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fastload {verb}")


def test_get_into_a_missing_folder_fails_before_reading(capsys, blob, tmp_path):
    target = tmp_path / "missing" / "dir" / "out.bin"
    assert main(["get", blob, "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert err == f"fastload get: cannot write {target}: no such folder {target.parent}\n"


def test_get_onto_a_folder_says_so(capsys, blob, tmp_path):
    assert main(["get", blob, "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"fastload get: cannot write {tmp_path}: it is a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_get_into_a_read_only_folder_says_so(capsys, blob, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["get", blob, "-o", str(folder / "out.bin")]) == 1
    finally:
        folder.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


def test_get_where_the_output_cannot_be_opened_is_one_line(capsys, blob):
    # /proc takes no new files, whoever asks (root too): the open fails, said in one line
    assert main(["get", blob, "-o", "/proc/fastload-out.bin"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastload get: cannot write /proc/fastload-out.bin: ")
    assert err.count("\n") == 1


def test_index_into_a_missing_folder_fails_before_indexing(capsys, tmp_path):
    target = tmp_path / "missing" / "x.idx"
    # the shard does not exist either: the output is refused first, nothing is read
    assert main(["index", str(tmp_path / "nope.tar"), "-o", str(target)]) == 1
    assert capsys.readouterr().err == (
        f"fastload index: cannot write {target}: no such folder {target.parent}\n"
    )


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(capsys, blob, monkeypatch):
    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli_module, "cmd_stat", broken)
    assert main(["stat", blob]) == 1
    err = capsys.readouterr().err
    assert err == "fastload stat: RuntimeError: boom second line (--debug shows the traceback)\n"
    assert main(["--debug", "stat", blob]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.endswith("fastload stat: RuntimeError: boom second line\n")
    monkeypatch.setenv("FASTLOAD_DEBUG", "1")
    assert main(["stat", blob]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_the_failures_of_a_subprocess_carry_no_traceback_and_no_secret(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("FASTLOAD_DEBUG", None)
    runs = [
        ["get", str(tmp_path / "nope.bin"), "-o", str(tmp_path / "o")],
        ["get", "s3://AKID:SECRETPW@bucket/key", "-o", str(tmp_path / "o")],
        ["stat", "s3://b/k", "--endpoint-url", "http://AKID:SECRETPW@127.0.0.1:notaport"],
        ["profile", str(tmp_path / "nope.bin"), "--record-shape", "4"],
    ]
    for argv in runs:
        r = subprocess.run(
            [sys.executable, "-m", "fastload", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert r.returncode in (1, 2), (argv, r.stderr)
        assert "Traceback" not in r.stderr, (argv, r.stderr)
        assert "SECRETPW" not in r.stderr, (argv, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("fastload")]
        assert lines, (argv, r.stderr)
