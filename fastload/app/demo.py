"""A self-contained demo: synthetic images -> DataLoader -> samples/s and MB/s per epoch.

Two modes: ``records`` (raw uint8 image records in shard files; needs nothing but fastload)
and ``jpeg`` (a class-per-folder tree of JPEG files, decoded, randomly cropped, flipped and
normalised natively: the path a training job on an image folder takes; Pillow writes the
files, ``pip install 'fastload[images]'``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

IMAGE_SHAPE = (64, 64, 3)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def write_image_records(
    folder: str,
    n_images: int,
    shape: tuple[int, ...] = IMAGE_SHAPE,
    per_shard: int = 500,
    seed: int = 0,
) -> list[str]:
    """Shards of random uint8 HWC images, ``per_shard`` per file; returns their paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for s, start in enumerate(range(0, n_images, per_shard)):
        count = min(per_shard, n_images - start)
        path = os.path.join(folder, f"images-{s:04d}.rec")
        rng.integers(0, 256, (count, *shape), dtype=np.uint8).tofile(path)
        paths.append(path)
    return paths


def _check_sizes(epochs: int, n_images: int, batch_size: int) -> None:
    if epochs < 1 or n_images < 1 or batch_size < 1:
        raise ValueError(
            f"epochs, n_images and batch_size must be >= 1, got {epochs}, {n_images}, {batch_size}"
        )


def _demo_folder(root: str | None, name: str) -> str:
    """A fresh temp folder when ``root`` is None (the caller removes it), else root/name."""
    return tempfile.mkdtemp(prefix=f"{name}-") if root is None else os.path.join(root, name)


def run_demo(
    root: str | None = None, epochs: int = 3, n_images: int = 2000, batch_size: int = 64
) -> dict:
    """Write ``n_images`` synthetic 64x64x3 images as records under ``root`` (a temp folder
    when None, removed afterwards), load them ``epochs`` times shuffled into float32 NCHW
    normalised batches, print samples/s and MB/s per epoch and return the figures."""
    from fastload.loop.loader import DataLoader
    from fastload.plan.datasets import RecordDataset

    _check_sizes(epochs, n_images, batch_size)
    owned = root is None
    folder = _demo_folder(root, "fastload-demo")
    try:
        write_image_records(folder, n_images)
        labels = np.arange(n_images) % 10
        ds = RecordDataset(folder, IMAGE_SHAPE, labels=labels)
        record = ds.sample_nbytes or 0
        with DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=True,
            memory_format="channels_first",
            dtype=np.float32,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        ) as loader:
            print(
                f"fastload demo: {n_images} images {IMAGE_SHAPE} uint8 in {len(ds.uris)} shards "
                f"under {folder}, batch {batch_size}, {len(loader)} batches per epoch"
            )
            figures = _run_epochs(loader, epochs, record / 1e6, "samples", "read")
        return {"folder": folder, "n_images": n_images, "batch_size": batch_size, **figures}
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def write_jpeg_folder(
    folder: str,
    n_images: int,
    classes: int = 10,
    seed: int = 0,
    *,
    widths: tuple[int, int] = (240, 320),
    heights: tuple[int, int] = (180, 240),
    grain: int = 16,
) -> list[str]:
    """``n_images`` photo-like JPEGs (``widths`` x ``heights`` px, inclusive ranges; quality
    90; +-``grain`` noise) in ``classes`` class folders."""
    from PIL import Image  # the encoder; fastload itself only decodes

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_images):
        w = int(rng.integers(widths[0], widths[1] + 1))
        h = int(rng.integers(heights[0], heights[1] + 1))
        cells = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
        base = np.asarray(
            Image.fromarray(cells).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16
        )
        noise = rng.integers(-grain, grain + 1, (h, w, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        sub = os.path.join(folder, f"class{i % classes:02d}")
        os.makedirs(sub, exist_ok=True)
        paths.append(os.path.join(sub, f"img{i:05d}.jpg"))
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def run_jpeg_demo(
    root: str | None = None, epochs: int = 3, n_images: int = 1000, batch_size: int = 64
) -> dict:
    """Write ``n_images`` JPEGs in class folders under ``root`` (a temp folder when None,
    removed afterwards), train-load them ``epochs`` times (shuffled, RandomResizedCrop 224,
    flip, float32 NCHW normalised), print images/s per epoch and return the figures."""
    from fastload.batch.image_pipeline import ImagePipeline, RandomHorizontalFlip, RandomResizedCrop
    from fastload.loop.loader import DataLoader
    from fastload.plan.image_datasets import ImageFolder

    _check_sizes(epochs, n_images, batch_size)
    owned = root is None
    folder = _demo_folder(root, "fastload-jpeg-demo")
    try:
        write_jpeg_folder(folder, n_images)
        ds = ImageFolder(folder)
        pipeline = ImagePipeline(RandomResizedCrop(224), RandomHorizontalFlip())
        with DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=True,
            memory_format="channels_first",
            dtype=np.float32,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            transform=pipeline,
        ) as loader:
            mb = float(ds.sizes.sum()) / 1e6
            print(
                f"fastload demo (jpeg): {len(ds)} JPEGs ({mb:.1f} MB) in {len(ds.classes)} class "
                f"folders under {folder}; {pipeline}, float32 NCHW normalised, batch "
                f"{batch_size}, {len(loader)} batches per epoch"
            )
            figures = _run_epochs(loader, epochs, mb / len(ds), "images", "of JPEG")
        return {
            "folder": folder,
            "n_images": n_images,
            "batch_size": batch_size,
            "classes": ds.classes,
            **figures,
        }
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def _run_epochs(
    loader: Any, epochs: int, mb_per_sample: float, unit: str, read: str
) -> dict[str, Any]:
    """Run ``epochs`` epochs of float32 batches, printing one line each (``unit``/s and MB/s
    ``read``): the per-epoch figures, the best, the first batch's shape and the report."""
    results: list[dict[str, Any]] = []
    batch_shape: tuple[int, ...] = ()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        t = time.perf_counter()
        samples = 0
        for x, y in loader:
            samples += len(y)
            batch_shape = batch_shape or tuple(x.shape)
        seconds = time.perf_counter() - t
        row = {
            "epoch": epoch,
            "samples": samples,
            "seconds": seconds,
            "samples_per_s": samples / seconds,
            "mb_per_s": samples * mb_per_sample / seconds,
        }
        results.append(row)
        print(
            f"  epoch {epoch}: {samples} {unit} in {seconds:.3f} s: "
            f"{row['samples_per_s']:,.0f} {unit}/s, {row['mb_per_s']:,.1f} MB/s {read}"
        )
    return {
        "batch_shape": batch_shape,
        "batch_dtype": "float32",
        "epochs": results,
        "best_samples_per_s": max(r["samples_per_s"] for r in results),
        "report": loader.report(),
    }
