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


def _f32_plan(channels=3, pixels=64 * 64):
    return native_collate.CollatePlan(
        pixels=pixels,
        channels=channels,
        src_channels_last=True,
        dst_channels_last=False,
        src_dtype=native_collate.DT_U8,
        dst_dtype=native_collate.DT_F32,
        src_itemsize=1,
        dst_itemsize=4,
        scale=np.full(channels, 0.5, np.float32),
        shift=np.full(channels, -1.0, np.float32),
        unit_bytes=16 << 10,
    )


def test_a_thread_budget_caps_the_collate_threads_of_the_calling_thread_only():
    import threading

    n, plan = 8, _f32_plan(pixels=128 * 128)
    slab = np.random.default_rng(1).integers(0, 256, n * plan.sample_in, dtype=np.uint8)
    offsets = np.arange(n, dtype=np.int64) * plan.sample_in
    cpus = native_collate.cpu_count()
    got = {}

    def run(budget):
        native_collate.set_thread_budget(budget)
        out = np.zeros((n, 3, 128, 128), np.float32)
        got[budget] = (plan.run(None, slab, offsets, out)["threads"], out)

    for budget in (0, 1, 2):
        t = threading.Thread(target=run, args=(budget,))
        t.start()
        t.join(60)
    # 1.5 MiB of output in 16 KiB units: the kernel's own choice is one thread per CPU
    assert got[0][0] == cpus
    assert got[1][0] == 1
    assert got[2][0] == min(2, cpus)
    assert np.array_equal(got[0][1], got[1][1]) and np.array_equal(got[0][1], got[2][1])
    assert native_collate.thread_budget() == 0


def test_stores_choose_plain_or_streaming_stores_with_the_same_batch():
    n, plan = 4, _f32_plan()
    slab = np.random.default_rng(2).integers(0, 256, n * plan.sample_in, dtype=np.uint8)
    offsets = np.arange(n, dtype=np.int64) * plan.sample_in
    outs = {}
    for stores, streamed in (("auto", False), ("plain", False), ("stream", True)):
        out = np.zeros((n, 3, 64, 64), np.float32)
        assert plan.run(None, slab, offsets, out, stores)["streamed"] is streamed
        outs[stores] = out
    want = slab.reshape(n, 64, 64, 3).transpose(0, 3, 1, 2).astype(np.float32) * 0.5 - 1.0
    for out in outs.values():
        np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="stores='fast' is not one of"):
        plan.run(None, slab, offsets, np.zeros((n, 3, 64, 64), np.float32), "fast")
