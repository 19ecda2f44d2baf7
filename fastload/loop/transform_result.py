"""What a transform's return value becomes: one rule, in this process and in worker processes.

A transform may return any array-like: a numpy array of any rank (0-d included), a numpy or
Python scalar, a nested list. It becomes ``np.asarray(value)``, made C-contiguous without
changing its rank (``np.ascontiguousarray`` would turn a 0-d value into shape ``(1,)``), so
a batch has the same shape whatever ``num_workers`` is: ``(n,)`` for 0-d values, ``(n, *s)``
for values of shape ``s``, a RaggedBatch when the shapes differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def sample_array(value: Any) -> np.ndarray:
    """``value`` as a C-contiguous array of its own rank; TypeError for object data."""
    arr = np.asarray(value)
    if arr.dtype.hasobject:
        raise TypeError(
            f"the transform returned {type(value).__name__} of {arr.dtype} data "
            "(Python objects); it must return numbers: a numpy array or a scalar"
        )
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    return arr
