"""The tree stays linted and formatted: ``ruff check`` and ``ruff format --check`` are clean."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import fastload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))
RUFF = shutil.which("ruff")

pytestmark = pytest.mark.skipif(RUFF is None, reason="ruff is not installed")


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(args):
    proc = subprocess.run([RUFF, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
