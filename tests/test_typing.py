"""The package type-checks: mypy over fastload (with the bridges' .pyi stubs) is clean."""

import importlib.util
import os
import subprocess
import sys

import pytest

import fastload

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed"
)


def test_mypy_is_clean(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))
    # A fresh cache each run: a stale one can miss the compiled bridges' stubs.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "fastload",
            "--ignore-missing-imports",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
