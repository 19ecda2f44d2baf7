"""The native JPEG kernel's plan for raw HWC uint8 output: the tests' and fuzzers' default
(every test names only what it changes)."""

from __future__ import annotations

from typing import Any

from fastload._native import collate as _collate
from fastload._native import jpeg


def raw_plan(**changes: Any) -> Any:
    """A ``jpeg.DecodePlan`` writing full-size uint8 HWC, exact (islow, no DCT scaling),
    strict, no pixel limit; ``changes`` override any of these."""
    args: dict[str, Any] = dict(
        apply_orientation=False,
        clip_to_box=True,
        antialias=True,
        dct_scaling="off",
        dct_method="islow",
        fancy_upsampling=True,
        strict=True,
        max_pixels=0,
        convert=False,
        dst_dtype=_collate.DT_RAW,
        dst_channels_last=True,
        dst_itemsize=1,
    )
    args.update(changes)
    return jpeg.DecodePlan(**args)
