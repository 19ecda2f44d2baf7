"""The public face of the collate kernel: ``fastload.collate(samples, ...)``.

The module is callable (``fastload.collate(...)`` is :func:`collate`) and keeps the
names users import from it; the code lives in :mod:`fastload.batch`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np

from fastload.batch.collate import CollatePlan, collate, collate_ragged, collate_slab, plan_collate
from fastload.batch.layout import CONSUMERS, LAYOUTS, MEMORY_FORMATS, LayoutPlan, choose_layout
from fastload.batch.torch_view import as_torch

__all__ = [
    "CONSUMERS",
    "LAYOUTS",
    "MEMORY_FORMATS",
    "CollatePlan",
    "LayoutPlan",
    "as_torch",
    "choose_layout",
    "collate",
    "collate_ragged",
    "collate_slab",
    "plan_collate",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return collate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
