"""The collate bridge (fastload._native.collate) checks what it is given itself
(a regression found by tests/fuzz/fuzz_native.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fastload._native import collate as native_collate
from fastload.batch.collate import collate_slab

I64_MAX = np.iinfo(np.int64).max


def test_collate_bridge_checks_huge_offsets_itself():
    """offset + sample size wrapped past the slab check: a read from a wild address."""
    slab = np.zeros(64, np.uint8)
    out = np.zeros((1, 16), np.uint8)
    offsets = np.array([I64_MAX - 3], dtype=np.int64)
    with pytest.raises(ValueError, match="lies outside src"):
        plan = native_collate.CollatePlan(
            pixels=16,
            channels=1,
            src_channels_last=True,
            dst_channels_last=True,
            src_dtype=native_collate.DT_RAW,
            dst_dtype=native_collate.DT_RAW,
            src_itemsize=1,
            dst_itemsize=1,
            nthreads=1,
        )
        plan.run(None, slab, offsets, out)
    with pytest.raises(ValueError, match="lies outside src"):
        collate_slab(slab, offsets, (16,), np.uint8)
