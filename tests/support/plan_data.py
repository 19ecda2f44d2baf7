"""Records and reads shared by the dataset and planner tests (fixtures imported by tests/plan/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.plan.planner import plan_batch
from fastload.storage.engine import RangeEngine
from fastload.storage.read_settings import WHOLE_RANGES
from tests.support.loader_helpers import write_records

SHAPE = (4, 5, 3)


@pytest.fixture
def records(tmp_path):
    data = write_records(str(tmp_path / "rec"), 50, SHAPE, 3)
    return str(tmp_path / "rec"), data


def read_plan(ds, idx, reader_mode="range", part_size=8 << 20):
    """Plan ``ds[idx]`` and read it as the loader would in ``reader_mode``: (plan, bytes,
    how many parts the native reader cut the plan's ranges into)."""
    plan = plan_batch(ds, np.asarray(idx))
    buf = np.zeros(plan.nbytes, dtype=np.uint8)
    eng = RangeEngine(part_size=WHOLE_RANGES if reader_mode == "sequential" else part_size)
    eng.read_into(plan.sources, plan.table, buf)
    return plan, buf, eng.backend("file").stats()["requests"]
