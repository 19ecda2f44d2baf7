"""End to end: 224x224x3 uint8 image records in shard files -> float32 NCHW normalised batches.

Measured in the same run, interleaved:
- fastload's DataLoader (shuffled, batch 256, collate kernel, prefetch 2);
- PyTorch's DataLoader, num_workers=2: a map-style dataset reading each record
  with numpy (os.pread), default_collate, then permute + float + normalise in the
  workers' collate_fn (the usual recipe);
- s3dlio's async loader over the same shard files: its loader yields whole
  objects (it has no record/range datasets), so records are sliced out of each
  shard and collated + normalised with the strongest numpy (into one preallocated
  batch, sample by sample, cast in the copy, two in-place operations), in file order
  (no shuffling).

Each measurement iterates ``BATCHES`` batches from a fresh iterator. Goal:
fastload >= 3x PyTorch's samples/s. Data (20,000 images, 3 GB) is written once
by ``setup_cache`` under FASTLOAD_BENCH_DIR (default: the temp dir).

``LoaderSmallRecords``: the fixed cost of a batch: 512,000 records of 16 bytes, batch
256 in order, no conversion; baseline PyTorch's DataLoader over a map-style dataset
whose ``__getitems__`` gathers a whole batch from a ``numpy.memmap`` (one fancy index,
no per-sample Python, no workers: the fastest torch recipe for tiny records).
Goal: <= 2x its time per batch (and <= 250 us). ``LoaderBatchSize``: time per sample
at batch 32 against batch 256 on the images (goal: within 1.2x).
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


def page_in(paths: list[str]) -> None:
    """Read ``paths`` once, into the page cache."""
    buf = bytearray(8 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


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


SCALE = (1.0 / STD).astype(np.float32).reshape(3, 1, 1)
SHIFT = (-MEAN / STD).astype(np.float32).reshape(3, 1, 1)


def s3dlio_batches(folder: str):
    """s3dlio's loader yields whole shard objects; slice records and normalise them with
    the strongest numpy into a preallocated batch (sample by sample: cast in the copy,
    then two in-place operations while the sample is in cache)."""
    import s3dlio

    out = np.empty((BATCH, 3, *SHAPE[:2]), np.float32)
    for obj in s3dlio.create_async_loader(f"file://{folder}/", {"batch_size": 1}):
        view = memoryview(obj)
        if view.nbytes % RECORD:
            continue  # the .complete marker
        recs = np.frombuffer(view, dtype=np.uint8).reshape(-1, *SHAPE)
        for a in range(0, len(recs), BATCH):
            part = recs[a : a + BATCH]
            x = out[: len(part)]
            for i, r in enumerate(part):
                o = x[i]
                o[...] = r.transpose(2, 0, 1)
                o *= SCALE
                o += SHIFT
            yield x


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


# -- the fixed cost of a batch --------------------------------------------------------

SMALL_REC = 16
SMALL_N = 512_000
SMALL_BATCH = 256


def small_records() -> str:
    """One file of SMALL_N records of SMALL_REC bytes, written once."""
    path = os.path.join(data_dir(), f"small-{SMALL_REC}x{SMALL_N}.rec")
    if not (os.path.exists(path) and os.path.getsize(path) == SMALL_REC * SMALL_N):
        rng = np.random.default_rng(0)
        rng.integers(0, 256, SMALL_REC * SMALL_N, dtype=np.uint8).tofile(path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


class MemmapBatches:
    """A torch map-style dataset that fetches a whole batch at once from a memmap."""

    def __init__(self, path: str) -> None:
        self.mm = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, SMALL_REC)

    def __len__(self) -> int:
        return len(self.mm)

    def __getitem__(self, i: int):
        import torch

        return torch.from_numpy(np.array(self.mm[i]))

    def __getitems__(self, indices: list[int]):
        import torch

        return torch.from_numpy(self.mm[indices])


def _as_is(batch):
    return batch


def epoch_seconds_per_batch(loader) -> float:
    t = time.perf_counter()
    n = 0
    for _ in loader:
        n += 1
    return (time.perf_counter() - t) / n


class LoaderSmallRecords:
    """Microseconds per batch of 256 x 16-byte records, in order, and fastload's time
    over torch's memmap batch-fetch dataset's (goal <= 2x; best and median of 5
    interleaved epochs)."""

    timeout = 900
    params = [["fastload", "torch_memmap_batch"], ["min", "median"]]
    param_names = ["loader", "stat"]

    def setup_cache(self):
        path = small_records()
        with open(path, "rb") as f:  # page-cached, as for both loaders
            f.read()
        ds = RecordDataset(path, (SMALL_REC,), np.uint8)
        fl = fastload.DataLoader(ds, batch_size=SMALL_BATCH)
        runs = {"fastload": lambda: epoch_seconds_per_batch(fl)}
        try:
            import torch.utils.data as tud

            tl = tud.DataLoader(
                MemmapBatches(path), batch_size=SMALL_BATCH, collate_fn=_as_is, num_workers=0
            )
            runs["torch_memmap_batch"] = lambda: epoch_seconds_per_batch(tl)
        except ImportError:
            pass
        times: dict[str, list[float]] = {k: [] for k in runs}
        for fn in runs.values():
            fn()
        for _ in range(5):
            for k, fn in runs.items():
                times[k].append(fn())
        fl.close()
        return times

    def _pick(self, times, loader, stat):
        if loader not in times:
            raise NotImplementedError(f"{loader} is not installed")
        return min(times[loader]) if stat == "min" else float(np.median(times[loader]))

    def track_us_per_batch(self, times, loader, stat):
        return self._pick(times, loader, stat) * 1e6

    track_us_per_batch.unit = "us"

    def track_fastload_time_ratio(self, times, loader, stat):
        """fastload's time per batch over this loader's (< 1: fastload faster)."""
        return self._pick(times, "fastload", stat) / self._pick(times, loader, stat)

    track_fastload_time_ratio.unit = "ratio"


class LoaderBatchSize:
    """Microseconds per sample at batch 32 and 256 (images, shuffled, float32 NCHW
    normalised, prefetch 2), and their ratio (goal: batch 32 within 1.2x)."""

    timeout = 1800
    params = [["32", "256", "32/256"], ["min", "median"]]
    param_names = ["batch", "stat"]

    def setup_cache(self):
        folder = write_shards()
        samples = 4096
        # Every round reads other samples (each iterator is a new epoch's order): read all
        # the records once, so no round reads from disk what the page cache lost meanwhile
        # (a first run after other jobs otherwise measured cold reads, 32/256 up to 1.4x)
        page_in(shard_paths(folder))
        loaders = {}
        for bs in (32, 256):
            ds = RecordDataset(folder, SHAPE)
            loaders[bs] = fastload.DataLoader(
                ds,
                batch_size=bs,
                shuffle=True,
                memory_format="channels_first",
                dtype=np.float32,
                mean=MEAN,
                std=STD,
                prefetch=2,
            )

        def per_sample(dl) -> float:
            it = iter(dl)
            n = 0
            t = time.perf_counter()
            while n < samples:
                n += len(next(it))
            dt = time.perf_counter() - t
            it.close()
            return dt / n

        times: dict[int, list[float]] = {32: [], 256: []}
        for dl in loaders.values():
            per_sample(dl)  # page cache, first allocations
        for _ in range(9):  # 9 rounds: the ratio of two minimums is noisy over 5
            for bs, dl in loaders.items():
                times[bs].append(per_sample(dl))
        for dl in loaders.values():
            dl.close()
        return times

    def track_us_per_sample(self, times, batch, stat):
        pick = min if stat == "min" else (lambda v: float(np.median(v)))
        if batch == "32/256":
            return pick(times[32]) / pick(times[256])
        return pick(times[int(batch)]) * 1e6

    track_us_per_sample.unit = "us (ratio for 32/256)"
