"""JPEG folders -> model-ready batches: fastload vs torch's DataLoader vs NVIDIA DALI (CPU).

An ImageNet-like folder (3,000 JPEGs, 400-640 x 300-480 px, quality 90, ~80-110 KB, 10
class folders) is written once under FASTLOAD_BENCH_DIR. Two pipelines, batch 256,
float32 NCHW normalised with ImageNet's mean/std:

- train: decode -> RandomResizedCrop(224) -> horizontal flip (p=0.5) -> normalise;
- eval: decode -> Resize(256) (shorter side) -> CenterCrop(224) -> normalise.

Measured in the same run, interleaved, each over ``BATCHES`` batches of a shuffled epoch:

- fastload: ``DataLoader(ImageFolder(root), transform=ImagePipeline(...))`` (native
  libjpeg-turbo decode with ROI + DCT scaling, one resampling pass, fused normalise);
- torch: ``torch.utils.data.DataLoader`` with 2 workers (started by each run) over a map-style
  dataset doing what torchvision's transforms do with PIL (torchvision cannot be installed
  beside torch 2.13 here): PIL decode, torchvision's RandomResizedCrop parameters, PIL crop +
  bilinear (antialiased) resize, flip, ToTensor + Normalize, default_collate;
- DALI: ``nvidia-dali-cuda120`` on the CPU (``device_id=None``, ``num_threads=2``):
  ``fn.readers.file`` -> ``fn.decoders.image_random_crop`` -> ``fn.resize`` ->
  ``fn.crop_mirror_normalize`` (eval: ``fn.decoders.image`` -> ``fn.resize(resize_shorter)``
  -> ``fn.crop_mirror_normalize(crop)``).

Also: a single-thread full-size PIL decode (images/s on one core), fastload on one native
thread, and fastload's per-stage breakdown (entropy decoding alone measured with
``jpeg_read_coefficients``; decode, resample and convert timed inside the kernel).
Goals: train >= 2x DALI and >= 4x torch; eval ahead of DALI.
Rerun: ``python asv_bench/benchmarks/bench_images.py`` (prints min / median of each), or
``cd asv_bench && asv run -E existing --quick -b bench_images``.
"""

from __future__ import annotations

import io
import math
import os
import random
import resource
import statistics
import time
from typing import Any

import numpy as np

try:
    from .common import data_dir
except ImportError:  # run as a script
    from common import data_dir  # type: ignore[no-redef]

N_IMAGES = int(os.environ.get("FASTLOAD_BENCH_IMAGES", "3000"))
CLASSES = 10
BATCH = 256
# a whole epoch (11 batches of 256 with drop_last): nothing is left in flight at the end
BATCHES = int(os.environ.get("FASTLOAD_BENCH_IMAGE_BATCHES", "11"))
ROUNDS = int(os.environ.get("FASTLOAD_BENCH_ROUNDS", "3"))
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
PIPELINES = ("train", "eval")


def write_folder(n: int = N_IMAGES) -> str:
    """The ImageNet-like folder, written once (a marker file says complete)."""
    from fastload.app.demo import write_jpeg_folder

    root = os.path.join(data_dir(), f"imagenet-like-{n}")
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    write_jpeg_folder(root, n, CLASSES, 0, widths=(400, 640), heights=(300, 480), grain=20)
    open(done, "w").close()
    return root


def files(root: str) -> list[str]:
    return sorted(
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(".jpg")
    )


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (torch's workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


Rate = tuple[float, float]  # (images per wall second, images per CPU second)


def rate(batches: Any, n_batches: int = BATCHES) -> Rate:
    """Images per second and per CPU second over ``n_batches`` batches of a fresh iterator
    (its start included; the iterator is ended, and torch's workers joined, before the CPU
    time is read)."""
    c0 = cpu_seconds()
    t = time.perf_counter()
    it = iter(batches)
    n = 0
    for _ in range(n_batches):
        x = next(it)
        n += len(x[0] if isinstance(x, (tuple, list)) else x)
    wall = time.perf_counter() - t
    del it, x
    return n / wall, n / (cpu_seconds() - c0)


# -- fastload ---------------------------------------------------------------------------


def fastload_pipeline(kind: str, **options: Any) -> Any:
    from fastload.batch.image_pipeline import (
        CenterCrop,
        ImagePipeline,
        RandomHorizontalFlip,
        RandomResizedCrop,
        Resize,
    )

    if kind == "train":
        return ImagePipeline(RandomResizedCrop(224), RandomHorizontalFlip(), **options)
    return ImagePipeline(Resize(256), CenterCrop(224), **options)


def make_fastload(root: str, kind: str, **options: Any) -> Any:
    import fastload
    from fastload.plan.image_datasets import ImageFolder

    prefetch = options.pop("prefetch", 2)
    return fastload.DataLoader(
        ImageFolder(root),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        memory_format="channels_first",
        dtype=np.float32,
        mean=MEAN,
        std=STD,
        transform=fastload_pipeline(kind, **options),
        prefetch=prefetch,
    )


# -- torch DataLoader with a PIL pipeline (torchvision's transforms, written out) -------


class PilImages:
    """Map-style dataset: PIL decode + torchvision-equivalent transforms per sample."""

    def __init__(self, paths: list[str], kind: str) -> None:
        self.paths, self.kind = paths, kind

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        return pil_transform(Image.open(self.paths[i]), self.kind), i % CLASSES


def pil_transform(img: Any, kind: str) -> Any:
    """torchvision's train or eval transforms, written out, on one opened PIL image: a
    normalised float32 CHW tensor (also the webdataset peer's of bench_shards)."""
    import torch
    from PIL import Image

    img = img.convert("RGB")
    if kind == "train":
        x0, y0, w, h = rrc_params(img.size[0], img.size[1])
        img = img.crop((x0, y0, x0 + w, y0 + h)).resize((224, 224), Image.BILINEAR)
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
    else:
        W, H = img.size
        nw, nh = (256, int(256 * H / W)) if W <= H else (int(256 * W / H), 256)
        img = img.resize((nw, nh), Image.BILINEAR)
        top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
        img = img.crop((left, top, left + 224, top + 224))
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)  # ToTensor (a copy)
    mean = torch.tensor(MEAN).view(3, 1, 1) / 255
    std = torch.tensor(STD).view(3, 1, 1) / 255
    return (t - mean) / std  # Normalize


def rrc_params(W: int, H: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, ...]:
    """torchvision's RandomResizedCrop.get_params, with torch's generator."""
    import torch

    area = W * H
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            i = torch.randint(0, H - h + 1, size=(1,)).item()
            j = torch.randint(0, W - w + 1, size=(1,)).item()
            return int(j), int(i), w, h
    return 0, 0, W, H


def make_torch(root: str, kind: str) -> Any:
    import torch

    return torch.utils.data.DataLoader(
        PilImages(files(root), kind),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=2,
        # not persistent: a dropped iterator's workers stop, instead of going on with the
        # batches they prefetched while the next system is being timed
        persistent_workers=False,
    )


# -- NVIDIA DALI on the CPU ----------------------------------------------------------


class DaliBatches:
    """A DALI CPU pipeline as an iterable of (images, labels) numpy batches."""

    def __init__(self, root: str, kind: str) -> None:
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=BATCH, num_threads=2, device_id=None, seed=0)
        def pipe():
            jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="reader")
            if kind == "train":
                images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB)
                images = fn.resize(images, resize_x=224, resize_y=224)
                mirror = fn.random.coin_flip(probability=0.5)
                crop = None
            else:
                images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
                images = fn.resize(images, resize_shorter=256)
                mirror, crop = 0, (224, 224)
            images = fn.crop_mirror_normalize(
                images,
                dtype=types.FLOAT,
                output_layout="CHW",
                crop=crop,
                mean=MEAN,
                std=STD,
                mirror=mirror,
            )
            return images, labels

        self.pipe = pipe()
        self.pipe.build()
        self.depth = 2  # DALI's default prefetch_queue_depth

    def __iter__(self) -> Any:
        while True:
            images, labels = self.pipe.run()
            yield np.asarray(images.as_tensor()), np.asarray(labels.as_tensor())

    def rate(self) -> Rate:
        """Steady-state images/s. DALI runs ``prefetch_queue_depth`` (2) batches ahead on its
        own threads: the batches it made while idle are taken before the clock starts, and
        after the run it is given the time to refill its queue, so that work neither counts
        for it nor slows the system timed next."""
        for _ in range(self.depth):
            self.pipe.run()
        r = rate(self)
        time.sleep(self.depth * BATCH / r[0] + 0.5)
        return r


# -- references and the breakdown --------------------------------------------------------


def pil_decode_rate(paths: list[str], n: int = 200) -> Rate:
    """One thread, full-size PIL decode to RGB (no crop, no resize)."""
    from PIL import Image

    blobs = [open(p, "rb").read() for p in paths[:n]]
    c0 = cpu_seconds()
    t = time.perf_counter()
    for b in blobs:
        Image.open(io.BytesIO(b)).convert("RGB").load()
    return n / (time.perf_counter() - t), n / (cpu_seconds() - c0)


def breakdown(root: str, kind: str, n: int = 512) -> dict[str, float]:
    """Per-image microseconds of each stage on one native thread: the kernel's decode,
    resample and convert timers (output into a buffer already faulted in, as the loader's
    pooled ones), and entropy decoding alone (full image, no IDCT)."""
    from fastload._native import jpeg
    from fastload.batch.image_pipeline import ImageBatcher

    blobs = [open(p, "rb").read() for p in files(root)[:n]]
    lens = np.array([len(b) for b in blobs], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    slab = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    out = np.ones(n * 640 * 480 * 3, dtype=np.uint8)  # the largest full-size decode

    def timed(batcher: Any) -> tuple[float, dict[str, Any]]:
        batcher.decode(slab, offs, lens, np.arange(n), 0, lambda _: out)  # warm
        for k in ("decode_s", "resample_s", "convert_s"):
            batcher.stats[k] = 0.0
        t = time.perf_counter()
        batcher.decode(slab, offs, lens, np.arange(n), 0, lambda _: out)
        return time.perf_counter() - t, batcher.stats

    opts = {"memory_format": "channels_first", "dtype": np.float32, "mean": MEAN, "std": STD}
    total, s = timed(ImageBatcher(fastload_pipeline(kind, num_threads=1, timing=True), **opts))
    full, _ = timed(ImageBatcher(fastload_pipeline_full(), memory_format="channels_last"))
    t = time.perf_counter()
    for b in blobs:
        jpeg.entropy_only(b)
    entropy = time.perf_counter() - t
    us = 1e6 / n
    return {
        "total_us": total * us,
        "decode_us (entropy + IDCT + upsampling + colour, crop window)": s["decode_s"] * us,
        "resample_us": s["resample_s"] * us,
        "convert_us (normalise, NCHW, float32)": s["convert_s"] * us,
        "full_image_decode_us (no crop, uint8)": full * us,
        "full_image_entropy_only_us": entropy * us,
        "dct_scaled_share": s["dct_scaled"] / (2 * n),
    }


def fastload_pipeline_full() -> Any:
    from fastload.batch.image_pipeline import ImagePipeline

    return ImagePipeline(num_threads=1)


def measure_all(root: str, rounds: int = ROUNDS) -> dict[str, dict[str, list[float]]]:
    """{"wall": images/s, "cpu": images per CPU second} of every system and pipeline, in
    interleaved rounds (lists, one entry per round)."""
    runs: dict[str, Any] = {}
    loaders: list[Any] = []
    for kind in PIPELINES:
        fl = make_fastload(root, kind)
        loaders.append(fl)
        runs[f"fastload/{kind}"] = lambda fl=fl: rate(fl)
        one = make_fastload(root, kind, num_threads=1, prefetch=1)
        loaders.append(one)
        runs[f"fastload-1-thread/{kind}"] = lambda one=one: rate(one)
        try:
            tl = make_torch(root, kind)
            runs[f"torch/{kind}"] = lambda tl=tl: rate(tl)
        except ImportError:
            pass
        try:
            dali = DaliBatches(root, kind)
            runs[f"dali/{kind}"] = dali.rate
        except ImportError:
            pass
    paths = files(root)
    runs["pil-decode-1-thread"] = lambda: pil_decode_rate(paths)
    for fn in runs.values():  # warm: page cache, worker start, first allocations
        fn()
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        order = list(runs)
        random.Random(r).shuffle(order)
        for name in order:
            w, c = runs[name]()
            wall[name].append(w)
            cpu[name].append(c)
    for dl in loaders:
        dl.close()
    return {"wall": wall, "cpu": cpu}


SYSTEMS = ["fastload", "fastload-1-thread", "torch", "dali"]


def round_ratios(rates: dict[str, list[float]], pipeline: str, other: str) -> list[float]:
    """fastload's images/s over ``other``'s, round by round."""
    mine, theirs = rates[f"fastload/{pipeline}"], rates.get(f"{other}/{pipeline}")
    return [a / b for a, b in zip(mine, theirs, strict=True)] if theirs else []


class ImagePipelines:
    """Images/s and images per CPU second of each system per pipeline (medians of
    interleaved rounds), and fastload's ratio over each within a round (same run).
    Goals: train >= 2x dali, >= 4x torch; eval > dali."""

    timeout = 3600
    params = [SYSTEMS, list(PIPELINES)]
    param_names = ["system", "pipeline"]

    def setup_cache(self):
        root = write_folder()
        return {"rates": measure_all(root), "breakdown": {k: breakdown(root, k) for k in PIPELINES}}

    def track_images_per_s(self, cache, system, pipeline):
        r = cache["rates"]["wall"].get(f"{system}/{pipeline}")
        return statistics.median(r) if r else float("nan")

    track_images_per_s.unit = "images/s"

    def track_images_per_cpu_s(self, cache, system, pipeline):
        r = cache["rates"]["cpu"].get(f"{system}/{pipeline}")
        return statistics.median(r) if r else float("nan")

    track_images_per_cpu_s.unit = "images/CPU-s"

    def track_fastload_ratio(self, cache, system, pipeline):
        """fastload's images/s over this system's: the median over rounds of the ratio within
        each round (both measured seconds apart, so a busy machine slows both)."""
        ratios = round_ratios(cache["rates"]["wall"], pipeline, system)
        return statistics.median(ratios) if ratios else float("nan")

    track_fastload_ratio.unit = "ratio"

    def track_fastload_cpu_ratio(self, cache, system, pipeline):
        """The same for images per CPU second (what a core buys, less sensitive to load)."""
        ratios = round_ratios(cache["rates"]["cpu"], pipeline, system)
        return statistics.median(ratios) if ratios else float("nan")

    track_fastload_cpu_ratio.unit = "ratio"


def main() -> None:
    root = write_folder()
    rates = measure_all(root)
    print(
        f"{N_IMAGES} JPEGs under {root}; batch {BATCH}, {BATCHES} batches a run, {ROUNDS} "
        f"interleaved rounds, {len(os.sched_getaffinity(0))} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    for unit, table in (("images/s", rates["wall"]), ("images per CPU second", rates["cpu"])):
        print(f"{'system':34s} {'min':>8s} {'median':>8s} {'max':>8s}  {unit}")
        for name, r in table.items():
            print(f"{name:34s} {min(r):8.0f} {statistics.median(r):8.0f} {max(r):8.0f}")
    for unit, table in (("images/s", rates["wall"]), ("per CPU second", rates["cpu"])):
        for kind in PIPELINES:
            for other in ("dali", "torch"):
                ratios = round_ratios(table, kind, other)
                if ratios:
                    print(
                        f"{kind}: fastload / {other} ({unit}), within each round: min "
                        f"{min(ratios):.2f}x, median {statistics.median(ratios):.2f}x, "
                        f"max {max(ratios):.2f}x"
                    )
    for kind in PIPELINES:
        print(f"{kind} breakdown (one thread, per image):")
        for k, v in breakdown(root, kind).items():
            print(f"  {k:62s} {v:8.1f}")


if __name__ == "__main__":
    main()
