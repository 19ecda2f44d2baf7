"""Torch views of collated batches (fastload.batch.torch_view): zero-copy, channels_last, bfloat16."""

from __future__ import annotations

import numpy as np
import pytest

import fastload
from fastload.batch.layout import LayoutPlan, choose_layout
from fastload.batch.torch_view import as_torch
from tests.support.collate_reference import make_samples


def test_torch_channels_last_from_hwc_does_no_transposition():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    samples = make_samples(rng, 4, (6, 5, 3), np.uint8)
    plan = choose_layout("channels_last", "HWC", "torch")
    stats = {}
    batch = fastload.collate(
        samples,
        memory_format="channels_last",
        consumer="torch",
        dtype=np.float32,
        mean=[1, 2, 3],
        std=[4, 5, 6],
        stats=stats,
    )
    assert stats["transposed"] is False and stats["kernel_layout"] == "NHWC"
    t = as_torch(batch, plan)
    assert t.shape == (4, 3, 6, 5)
    assert t.is_contiguous(memory_format=torch.channels_last)
    assert t.data_ptr() == batch.ctypes.data  # zero-copy
    batch[0, 0, 0, 0] = 123.0
    assert t[0, 0, 0, 0].item() == 123.0  # same memory
    batch[0, 0, 0, 0] = (samples[0][0, 0, 0] - 1) / 4
    ref = torch.stack([torch.from_numpy(s) for s in samples]).permute(0, 3, 1, 2).float()
    ref = (ref - torch.tensor([1.0, 2, 3]).view(1, 3, 1, 1)) / torch.tensor([4.0, 5, 6]).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(t, ref)


def test_torch_channels_last_from_chw_transposes_once():
    torch = pytest.importorskip("torch")
    samples = make_samples(np.random.default_rng(1), 2, (3, 4, 7), np.uint8)
    stats = {}
    batch = fastload.collate(
        samples, layout="CHW", memory_format="channels_last", consumer="torch", stats=stats
    )
    assert stats["transposed"] is True
    t = as_torch(batch, choose_layout("channels_last", "CHW", "torch"))
    assert t.is_contiguous(memory_format=torch.channels_last) and t.shape == (2, 3, 4, 7)
    assert torch.equal(t, torch.stack([torch.from_numpy(s) for s in samples]))


def test_torch_auto_is_nchw_contiguous_and_bfloat16_view():
    torch = pytest.importorskip("torch")
    samples = make_samples(np.random.default_rng(2), 3, (4, 4, 3), np.uint8)
    plan = choose_layout("auto", "HWC", "torch")
    bits = fastload.collate(samples, consumer="torch", dtype="bfloat16", scale=1 / 255)
    t = as_torch(bits, plan, dtype="bfloat16")
    assert t.dtype == torch.bfloat16 and t.is_contiguous() and t.shape == (3, 3, 4, 4)
    ref = (
        torch.stack([torch.from_numpy(s) for s in samples]).permute(0, 3, 1, 2).float()
        * np.float32(1 / 255)
    ).to(torch.bfloat16)
    assert (t.float() - ref.float()).abs().max().item() <= 2.0**-8
    with pytest.raises(TypeError, match="uint16"):
        as_torch(np.zeros(3, np.float32), plan, dtype="bfloat16")


def test_as_torch_rejects_unknown_dtype():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="only 'bfloat16'"):
        as_torch(
            np.zeros((1, 2, 2, 3), np.uint16),
            LayoutPlan(None, "HWC", "NHWC", "numpy"),
            dtype="float8",
        )
