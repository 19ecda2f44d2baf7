"""What ships and what ``import fastload`` costs."""

from __future__ import annotations

import os
import subprocess
import sys

import fastload

ROOT = os.path.dirname(os.path.dirname(fastload.__file__))


def test_import_does_not_import_torch():
    """torch and Pillow are optional extras: ``import fastload`` must not pay for them (nor
    bind libjpeg)."""
    script = (
        "import sys, fastload; from fastload._native import jpeg; "
        "print('torch' in sys.modules or 'PIL' in sys.modules or jpeg.libjpeg_loaded())"
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_py_typed_marker_ships():
    pkg = os.path.dirname(fastload.__file__)
    assert os.path.isfile(os.path.join(pkg, "py.typed"))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert '"py.typed"' in f.read()


def test_public_names_stay_importable_from_where_they_were():
    """The layered tree keeps fastload.X, fastload.torch_adapter.X, fastload.collate(...) and
    the old module paths (the same objects, not copies)."""
    import importlib

    import numpy as np

    from fastload.plan import samplers

    assert importlib.import_module("fastload.samplers") is samplers
    for old, new in fastload._MOVED.items():
        assert importlib.import_module(f"fastload.{old}") is importlib.import_module(new)
    from fastload.loader import DataLoader, RaggedBatch

    from fastload.collate import choose_layout, collate_slab  # noqa: F401

    assert DataLoader is fastload.DataLoader and RaggedBatch is fastload.RaggedBatch
    assert fastload.collate(
        [np.zeros((2, 2, 3), np.uint8)], memory_format="channels_first"
    ).shape == (1, 3, 2, 2)
    for name in fastload.__all__:
        assert getattr(fastload, name) is not None


def test_torch_adapter_facade_keeps_its_names():
    import pytest

    pytest.importorskip("torch")
    import fastload.torch_adapter as ta
    from fastload.adapters.torch_dataset import TorchIterableDataset

    assert ta.TorchIterableDataset is TorchIterableDataset
    for name in ta.__all__:
        assert getattr(ta, name) is not None
