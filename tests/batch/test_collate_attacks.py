"""Collate sizes that do not fit an int64, and special values through the conversions:
refused by name before any native work (never wrapped around to a small size that
passes the bridge's checks), or converted exactly as numpy converts them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastload
from fastload._native import collate as native_collate
from fastload.batch.collate import ISAS, collate_slab, plan_collate
from tests.support.collate_reference import bf16_bits

I64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((2**31, 2**31, 4), np.float32),  # 2**64 bytes: wrapped to a plan of 0-byte samples
        ((2**62,), np.float32),
        ((2**61, 8), np.uint8),  # uint8 in, float32 out: the output is what overflows
        ((2**40, 2**40, 4), np.float32),  # was a bare OverflowError from the bridge
    ],
)
def test_a_sample_larger_than_int64_bytes_is_refused_by_name(shape, dtype):
    out_dtype = np.float32 if np.dtype(dtype) == np.uint8 else None
    match = r"sample_shape=\(.*\) of .* elements per sample: too large"
    with pytest.raises(ValueError, match=match):
        plan_collate(shape, np.dtype(dtype), dtype=out_dtype)
    with pytest.raises(ValueError, match=match):
        collate_slab(b"x" * 64, [0], shape, dtype, dtype=out_dtype)


def test_the_bridge_refuses_a_sample_size_that_wraps():
    """pixels x channels x itemsize wrapped to 0 in the bridge: a plan of 0-byte samples."""
    with pytest.raises(ValueError, match=r"a sample of 4611686018427387904 pixels x 4 channels"):
        native_collate.CollatePlan(
            pixels=2**62,
            channels=4,
            src_channels_last=True,
            dst_channels_last=True,
            src_dtype=native_collate.DT_RAW,
            dst_dtype=native_collate.DT_RAW,
            src_itemsize=4,
            dst_itemsize=4,
        )


def test_the_bridge_refuses_a_batch_whose_size_wraps():
    """n x sample_out wrapped around to the size of a small `out`, which then passed the
    bridge's check: C moved 2**24 samples of 1 TiB each into a 16 MiB buffer (writing
    past it until it hit unmapped memory). Run in a subprocess: it may crash or hang."""
    code = textwrap.dedent(
        """
        import mmap, sys
        import numpy as np
        from fastload._native import collate as nc
        sample = (1 << 40) + 1
        try:  # a sparse mapping: only the pages touched take memory
            slab = mmap.mmap(-1, sample + 4096,
                             flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
        except (OSError, OverflowError) as exc:
            print("SKIP", exc)
            sys.exit(0)
        plan = nc.CollatePlan(pixels=sample, channels=1, src_channels_last=True,
                              dst_channels_last=True, src_dtype=nc.DT_RAW,
                              dst_dtype=nc.DT_RAW, src_itemsize=1, dst_itemsize=1, nthreads=1)
        # 2**24 * (2**40 + 1) = 2**64 + 2**24: wraps to 2**24, the size of this out
        offsets = np.zeros(1 << 24, np.int64)
        out = np.zeros(1 << 24, np.uint8)
        try:
            plan.run(None, slab, offsets, out)
        except ValueError as exc:
            print("REFUSED", exc)
        else:
            print("RAN")
        """
    )
    try:
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the collate of a wrapped-around batch size ran on (wild writes)")
    if res.stdout.startswith("SKIP"):
        pytest.skip(f"no 1 TiB sparse mapping here: {res.stdout}")
    assert res.returncode == 0, res
    assert "REFUSED a batch of 16777216 samples of 1099511627777 bytes" in res.stdout, res


SPECIALS = np.array([np.inf, -np.inf, np.nan, 3e38, -3e38, 7e4, 0.0, -0.0], np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("out", [np.float32, np.float16, "bfloat16"])
def test_nan_and_inf_through_normalisation_match_numpy(isa, out):
    """(x - mean) / std of inf, NaN and values that overflow the output dtype: inf keeps
    its sign, NaN stays NaN, an overflow is inf (as numpy casts and torch rounds)."""
    x = np.repeat(SPECIALS, 3).reshape(1, 8, 3)  # HWC: each value in 3 channels
    got = fastload.collate([x], mean=1.0, std=0.5, dtype=out, memory_format=None, isa=isa)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = (x - np.float32(1.0)) * np.float32(2.0)  # std 0.5: exact in float32
        want = bf16_bits(ref) if out == "bfloat16" else ref.astype(out)
    np.testing.assert_array_equal(got[0], want)
    if out == "bfloat16":
        px = got[0, 0]  # the 8 pixels of the one row
        assert px[0].tolist() == [0x7F80] * 3 and px[1, 0] == 0xFF80
        assert px[2, 0] == 0x7FC0 and px[3, 0] == 0x7F80  # NaN; 6e38 is inf


@pytest.mark.parametrize("dtype", [np.float32, np.float16, "bfloat16", None])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 3), (4, 0, 3), (2, 2, 0)])
def test_zero_size_samples_give_empty_batches(shape, dtype):
    norm = {} if dtype is None else {"mean": 1.0, "std": 2.0}
    samples = [np.zeros(shape, np.uint8)] * 3
    got = fastload.collate(samples, dtype=dtype, memory_format=None, **norm)
    assert got.shape == (3, *shape) and got.size == 0
    got = collate_slab(b"", [0, 0, 0], shape, np.uint8, dtype=dtype, memory_format=None, **norm)
    assert got.shape == (3, *shape)
