"""Batches as torch tensors without a copy: the layout's view, bfloat16 bits reinterpreted."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastload.batch.layout import LayoutPlan

BF16 = "bfloat16"


def as_torch(array: np.ndarray, plan: LayoutPlan | None = None, *, dtype: str | None = None) -> Any:
    """A torch tensor sharing ``array``'s memory, viewed as ``plan`` says.

    For a channels_last plan the NHWC batch becomes an NCHW-shaped tensor with
    channels_last strides (``permute(0, 3, 1, 2)``, zero-copy). ``dtype=
    "bfloat16"`` reinterprets the uint16 bits that ``collate(dtype="bfloat16")``
    returns as ``torch.bfloat16``.
    """
    import torch  # lazily: torch is an optional extra

    if dtype is not None and dtype != BF16:
        raise ValueError(f"as_torch: dtype={dtype!r}: only 'bfloat16' reinterprets the array")
    if dtype == BF16 and array.dtype != np.uint16:
        raise TypeError(f"as_torch: bfloat16 bits come as uint16, not {array.dtype}")
    tensor = torch.from_numpy(array)
    if dtype == BF16:
        tensor = tensor.view(torch.bfloat16)
    if plan is not None and plan.view_permutation is not None and tensor.dim() == 4:
        tensor = tensor.permute(*plan.view_permutation)
    return tensor
