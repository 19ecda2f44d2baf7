"""Images that are not JPEG (PNG, WebP, GIF, BMP, TIFF ...): decoded by Pillow on a pool of
threads, into RGB arrays that then take the same native crop/resize/convert path as JPEGs.

Pillow releases the GIL while its codecs run, so the pool's threads decode in parallel.
Pillow is imported only when such a file shows up (``pip install 'fastload[images]'``).
Each file gives (pixels, status, message): a failure names what Pillow said, and never
raises here, so one bad file fails only its sample.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fastload._native.status import Status

Decoded = tuple[np.ndarray | None, int, str]


def decode_one(data: Any, max_pixels: int, apply_orientation: bool) -> Decoded:
    """One file's bytes -> ((h, w, 3) uint8, Status.OK, "") or (None, status, why)."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        return (
            None,
            Status.FORMAT,
            "not a JPEG, and Pillow (pip install 'fastload[images]') is missing",
        )
    try:
        # Pillow's DecompressionBombWarning (above Image.MAX_IMAGE_PIXELS, below twice that)
        # is left as Pillow issues it: warnings.catch_warnings() is not thread-safe (it saves
        # and restores the process-wide filter list), and this runs on pool threads.
        opened = Image.open(io.BytesIO(data))
        w, h = opened.size
        if max_pixels and w * h > max_pixels:
            return (
                None,
                Status.TOO_LARGE,
                f"{w} x {h} = {w * h} pixels is more than max_pixels={max_pixels} "
                f"({opened.format}; a decompression bomb?)",
            )
        opened.load()
        img: Image.Image = opened
        if apply_orientation:
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img), Status.OK, ""
    except UnidentifiedImageError:
        return None, Status.FORMAT, "not an image format Pillow reads"
    except Image.DecompressionBombError as exc:
        return None, Status.TOO_LARGE, str(exc)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        return None, Status.CORRUPT, f"{type(exc).__name__}: {exc}"


def decode_many(
    blobs: Sequence[Any], max_pixels: int, apply_orientation: bool, threads: int = 0
) -> list[Decoded]:
    """Every blob through :func:`decode_one`, on ``threads`` threads (0: one per CPU)."""
    if not blobs:
        return []
    if len(blobs) == 1:
        return [decode_one(blobs[0], max_pixels, apply_orientation)]
    n = max(1, min(threads or len(os.sched_getaffinity(0)), len(blobs), 64))
    # A pool per call: no thread outlives the batch (a forked child or a leak check sees
    # none), and starting a few threads costs far less than one Pillow decode.
    with ThreadPoolExecutor(n, "fastload-pillow") as pool:
        return list(pool.map(lambda b: decode_one(b, max_pixels, apply_orientation), blobs))
