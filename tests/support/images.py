"""Generated image files for the image tests: JPEGs and PNGs of many sizes and kinds
(Pillow writes them; tests skip without Pillow), broken files, and folders of them."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def picture(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Photo-like content: smooth colour fields with edges and grain (so JPEG has work to do
    and every pixel differs)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (max(h // 16, 1) + 1, max(w // 16, 1) + 1, channels))
    small = Image.fromarray(cells.astype(np.uint8).squeeze())
    base = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.int16).reshape(h, w, -1)
    grain = rng.integers(-12, 13, base.shape)
    return np.clip(base + grain, 0, 255).astype(np.uint8).reshape(h, w, channels).squeeze()


def encode(array: np.ndarray, fmt: str = "JPEG", mode: str | None = None, **options) -> bytes:
    img = Image.fromarray(array)
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def jpeg(h: int, w: int, seed: int = 0, quality: int = 90, **options) -> bytes:
    return encode(picture(h, w, seed), "JPEG", quality=quality, **options)


def with_orientation(data: bytes, orientation: int) -> bytes:
    """The image of ``data`` re-saved with an EXIF orientation tag (tests compare with
    Pillow's decode of the same new file)."""
    img = Image.open(io.BytesIO(data))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def ycck(cmyk_jpeg: bytes) -> bytes:
    """A CMYK JPEG whose Adobe marker says YCCK (transform 2): libjpeg then converts its data
    from YCCK, exercising that path (Pillow decodes the same file the same way)."""
    pos = cmyk_jpeg.find(b"Adobe")
    assert pos > 4 and cmyk_jpeg[pos - 4 : pos - 2] == b"\xff\xee", "no Adobe marker"
    seg = bytearray(cmyk_jpeg)
    seg[pos + 11] = 2  # the transform byte, after "Adobe", version, flags0 and flags1
    return bytes(seg)


def pil_rgb(data: bytes, orient: bool = False) -> np.ndarray:
    from PIL import ImageOps

    img = Image.open(io.BytesIO(data))
    if orient:
        img = ImageOps.exif_transpose(img)
    return np.asarray(img.convert("RGB"))


def kinds() -> dict[str, bytes]:
    """One file of each kind the decoder must read like Pillow."""
    rgb = picture(61, 83, 1)
    return {
        "rgb_420": encode(rgb, quality=90),
        "rgb_444": encode(rgb, quality=90, subsampling=0),
        "rgb_422": encode(rgb, quality=90, subsampling=1),
        "q50": encode(rgb, quality=50),
        "grayscale": encode(picture(47, 59, 2, channels=1), quality=90),
        "cmyk": encode(rgb, mode="CMYK", quality=90),
        "ycck": ycck(encode(rgb, mode="CMYK", quality=90)),
        "progressive": encode(rgb, quality=90, progressive=True),
        "restart_markers": encode(rgb, quality=90, restart_marker_rows=1),
        "rgb_no_ycc": encode(rgb, quality=90, keep_rgb=True),
        "one_pixel": encode(picture(1, 1, 3), quality=90),
        "strip_10000x10": encode(picture(10, 10000, 4), quality=90),
        "strip_10x10000": encode(picture(10000, 10, 5), quality=90),
        "odd_17x33": encode(picture(17, 33, 6), quality=90),
    }


def write_folder(root: str, classes: dict[str, int], h: int = 48, w: int = 64, seed: int = 0):
    """``classes``: name -> number of JPEGs; returns {path: (class, pixels)} of what was written."""
    written = {}
    k = seed
    for name, count in classes.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(count):
            data = jpeg(h + (k % 5) * 3, w + (k % 7) * 5, k)
            path = os.path.join(root, name, f"img{i:03d}.jpg")
            with open(path, "wb") as f:
                f.write(data)
            written[path] = (name, data)
            k += 1
    return written
