"""Local files the storage and native tests read (fixtures, imported by those layers' conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

SIZE = 3 * 1024 * 1024 + 12345  # not a multiple of 4096: O_DIRECT tail handling


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "blob.bin"
    data = np.random.default_rng(1).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return str(path), data


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    path = tmp_path_factory.mktemp("hardening") / "blob.bin"
    data = np.random.default_rng(7).integers(0, 256, 3 * 4096 + 123, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return str(path), data
