"""Records shared by the loop tests (the fixture is imported by tests/loop/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H

SHAPE = (8, 6, 3)
N = 100


@pytest.fixture
def recs(tmp_path):
    data = H.write_records(str(tmp_path / "rec"), N, SHAPE, 4)
    return RecordDataset(str(tmp_path / "rec"), SHAPE, labels=np.arange(N)), data


def collect(loader):
    xs, ys = [], []
    for x, y in loader:
        xs.append(np.array(x))
        ys.append(np.array(y))
    return xs, ys
