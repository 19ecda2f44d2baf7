"""``fastload profile``: the stage breakdown, the verdict and the plot, from a real run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastload
from tests.support.loader_helpers import write_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))


def _profile(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastload", "profile", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, **(env or {})},
    )


@pytest.fixture
def shards(tmp_path):
    write_records(str(tmp_path / "rec"), 400, (32, 32, 3), 4)
    return str(tmp_path / "rec")


def test_profile_prints_stages_and_a_verdict_for_a_slow_step(shards):
    res = _profile(
        shards,
        "--record-shape",
        "32,32,3",
        "--batches",
        "30",
        "--batch-size",
        "16",
        "--step-ms",
        "20",
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "stage" in out and "read" in out and "wait" in out and "step" in out
    assert "not input-bound" in out  # a 20 ms step outlasts reading 16 small records


def test_profile_plot_is_a_real_picture(shards, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "profile.png"
    res = _profile(
        shards,
        "--record-shape",
        "32,32,3",
        "--batches",
        "60",
        "--batch-size",
        "8",
        "--plot",
        str(png),
    )
    assert res.returncode == 0, res.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    assert img.shape[0] >= 300 and img.shape[1] >= 800  # two panels side by side
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20  # drawn, not blank


def test_profile_plot_without_matplotlib_says_how_to_get_it(shards, tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from fastload.app.cli import main\n"
        f"sys.exit(main(['profile', {shards!r}, '--record-shape', '32,32,3', "
        f"'--plot', {str(tmp_path / 'x.png')!r}]))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert res.returncode != 0
    assert "pip install 'fastload[plot]'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.png").exists()
