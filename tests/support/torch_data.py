"""Records and helpers shared by the torch tests (the fixture is imported by the conftest.py
of tests/batch and tests/adapters). Importing this module does not import torch."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H

SHAPE = (8, 6, 3)  # HWC records
N = 100
MEAN = (10.0, 20.0, 30.0)
STD = (2.0, 4.0, 8.0)


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("torch") / "rec")
    data = H.write_records(folder, N, SHAPE, 3)
    return RecordDataset(folder, SHAPE, labels=np.arange(N)), data


def mapped_segments() -> dict:
    import fastload.adapters.torch_slots as ta

    return dict(ta._mapped)
