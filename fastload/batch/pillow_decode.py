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
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fastload._native.status import Status

_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}

Decoded = tuple[np.ndarray | None, int, str]


def _forget_pools() -> None:
    # A forked child has none of the parent's pool threads: it starts its own pools.
    global _pool_lock
    _pool_lock = threading.Lock()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _pool_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, "fastload-pillow")
        return pool


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
        with warnings.catch_warnings():
            # our own pixel limit is checked below, before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
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
    """Every blob through :func:`decode_one`, on ``threads`` pool threads (0: one per CPU)."""
    if not blobs:
        return []
    if len(blobs) == 1:
        return [decode_one(blobs[0], max_pixels, apply_orientation)]
    n = threads or len(os.sched_getaffinity(0))
    pool = _pool(max(1, min(n, 64)))
    return list(pool.map(lambda b: decode_one(b, max_pixels, apply_orientation), blobs))
