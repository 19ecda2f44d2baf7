"""End to end: 224x224x3 uint8 image records in shard files -> float32 NCHW normalised batches.

Measured in the same run, interleaved:
- fastload's DataLoader (shuffled, batch 256, collate kernel, prefetch 2);
- PyTorch's DataLoader, num_workers=2: a map-style dataset reading each record
  with numpy (os.pread), default_collate, then permute + float + normalise in the
  workers' collate_fn (the usual recipe);
- s3dlio's async loader over the same shard files: its loader yields whole
  objects (it has no record/range datasets), so records are sliced out of each
  shard and collated + normalised with numpy, in file order (no shuffling).

Each measurement iterates ``BATCHES`` batches from a fresh iterator. Goal:
fastload >= 3x PyTorch's samples/s. Data (20,000 images, 3 GB) is written once
by ``setup_cache`` under FASTLOAD_BENCH_DIR (default: the temp dir).
"""

from __future__ import annotations

import os
import time

import numpy as np

import fastload
from fastload.plan.datasets import RecordDataset

from .common import MB, data_dir

N_IMAGES = 20_000
SHAPE = (224, 224, 3)
PER_SHARD = 1000
BATCH = 256
BATCHES = int(os.environ.get("FASTLOAD_BENCH_BATCHES", "16"))
MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255
RECORD = int(np.prod(SHAPE))


def write_shards(n_images: int = N_IMAGES, folder: str | None = None) -> str:
    """Shards of uint8 records, written once and reused (a marker file says complete)."""
    folder = folder or os.path.join(data_dir(), f"images-{n_images}")
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    os.makedirs(folder, exist_ok=True)
    block = np.random.default_rng(0).integers(0, 256, (PER_SHARD, *SHAPE), dtype=np.uint8)
    for s in range(-(-n_images // PER_SHARD)):
        count = min(PER_SHARD, n_images - s * PER_SHARD)
        block.reshape(PER_SHARD, -1)[:, 0] = s  # shards differ
        block[:count].tofile(os.path.join(folder, f"shard-{s:04d}.rec"))
    open(done, "w").close()
    return folder


def shard_paths(folder: str) -> list[str]:
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".rec"))


class TorchRecords:
    """A torch map-style dataset: record i read with os.pread, returned as a numpy array."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.fds: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.paths) * PER_SHARD

    def __getitem__(self, i: int) -> np.ndarray:
        s, k = divmod(i, PER_SHARD)
        fd = self.fds.get(s)
        if fd is None:
            fd = self.fds[s] = os.open(self.paths[s], os.O_RDONLY)
        out = np.empty(SHAPE, dtype=np.uint8)
        os.preadv(fd, [out], k * RECORD)
        return out


def torch_collate(samples: list[np.ndarray]):  # runs in the torch workers
    import torch
    from torch.utils.data import default_collate

    x = default_collate(samples).permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def make_fastload(folder: str):
    ds = RecordDataset(folder, SHAPE)
    return fastload.DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        memory_format="channels_first",
        dtype=np.float32,
        mean=MEAN,
        std=STD,
        prefetch=2,
    )


def make_torch(folder: str):
    import torch.utils.data as tud

    return tud.DataLoader(
        TorchRecords(shard_paths(folder)),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        collate_fn=torch_collate,
        persistent_workers=True,
        prefetch_factor=2,
    )


def s3dlio_batches(folder: str):
    """s3dlio's loader yields whole shard objects; slice records and normalise with numpy."""
    import s3dlio

    mean = MEAN.reshape(1, 3, 1, 1).astype(np.float32)
    std = STD.reshape(1, 3, 1, 1).astype(np.float32)
    for obj in s3dlio.create_async_loader(f"file://{folder}/", {"batch_size": 1}):
        view = memoryview(obj)
        if view.nbytes % RECORD:
            continue  # the .complete marker
        recs = np.frombuffer(view, dtype=np.uint8).reshape(-1, *SHAPE)
        for a in range(0, len(recs), BATCH):
            yield (recs[a : a + BATCH].transpose(0, 3, 1, 2).astype(np.float32) - mean) / std


def samples_per_s(batches, n_batches: int = BATCHES) -> float:
    t = time.perf_counter()
    n = 0
    it = iter(batches)
    for _ in range(n_batches):
        x = next(it)
        n += len(x)
    rate = n / (time.perf_counter() - t)
    close = getattr(it, "close", None)
    if close:
        close()
    return rate


def measure_all(folder: str, rounds: int = 3) -> dict[str, float]:
    """Best samples/s of each loader over ``rounds`` interleaved rounds, after a warm-up."""
    fl = make_fastload(folder)
    runs = {"fastload": lambda: samples_per_s(fl)}
    try:
        tl = make_torch(folder)
        runs["torch"] = lambda: samples_per_s(tl)
    except ImportError:
        pass
    try:
        import s3dlio  # noqa: F401

        runs["s3dlio"] = lambda: samples_per_s(s3dlio_batches(folder))
    except ImportError:
        pass
    for fn in runs.values():  # warm: page cache, worker start, first allocations
        fn()
    rates = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, fn in runs.items():
            rates[name] = max(rates[name], fn())
    fl.close()
    return rates


class LoaderImages:
    """samples/s and MB/s (uint8 input) of each loader, and fastload's speed over each (same run)."""

    timeout = 1800
    params = [["fastload", "torch", "s3dlio"]]
    param_names = ["loader"]

    def setup_cache(self):
        # Measured once for every parameter and method: asv runs each in its own process.
        return measure_all(write_shards())

    def track_samples_per_s(self, rates, loader):
        return rates.get(loader, float("nan"))

    track_samples_per_s.unit = "samples/s"

    def track_input_mb_per_s(self, rates, loader):
        return rates.get(loader, float("nan")) * RECORD / MB

    track_input_mb_per_s.unit = "MB/s"

    def track_fastload_ratio(self, rates, loader):
        """fastload's samples/s over this loader's (goal: >= 3 over torch)."""
        return rates["fastload"] / rates[loader] if loader in rates else float("nan")

    track_fastload_ratio.unit = "ratio"


class WorkerEpochStart:
    """Epoch start time with transform workers, persistent or not (spawn, 2 workers)."""

    timeout = 300
    params = [[False, True]]
    param_names = ["persistent_workers"]

    def setup_cache(self):
        return write_shards(2000, os.path.join(data_dir(), "images-2000"))

    def setup(self, folder, persistent):
        ds = RecordDataset(folder, SHAPE, transform=np.ascontiguousarray)
        self.dl = fastload.DataLoader(
            ds,
            batch_size=BATCH,
            num_workers=2,
            enable_transforms=True,
            persistent_workers=persistent,
            multiprocessing_context="spawn",
        )
        for _ in range(3):
            it = iter(self.dl)
            next(it)
            it.close()

    def teardown(self, folder, persistent):
        self.dl.close()

    def track_epoch_start_s(self, folder, persistent):
        return float(np.median(self.dl.report()["epoch_start_s"][1:]))

    track_epoch_start_s.unit = "s"
