"""PyTorch's own DataLoader fed by fastload, against the usual recipe (same run, same workers).

Three loaders, all ``torch.utils.data.DataLoader`` with 2 persistent worker
processes over the same shuffled 32x32x3 uint8 image records, all yielding the
same bytes (a uint8 image batch + int64 labels), CIFAR-sized records:

- ``adapter``: fastload's ``TorchIterableDataset`` (``batch_size=None``): each
  worker reads whole batches of records through the range engine into pooled
  buffers (channels_last: no kernel pass needed) and hands them to the main
  process through reusable shared-memory slots;
- ``collate_fn``: a numpy map-style dataset (one ``os.preadv`` per record) with
  fastload's ``TorchCollate`` (collate kernel writing straight into a slot);
- ``default``: the same numpy map-style dataset with torch's ``default_collate``.

``ratio`` is adapter / default samples/s (goal >= 2), ``collate_fn_ratio``
collate_fn / default. Data (16384 records, 50 MB; FASTLOAD_BENCH_N) is written
once under FASTLOAD_BENCH_DIR (default: the temp dir).
Quick run: ``python -c "from benchmarks.bench_torch import measure; print(measure())"``
from ``asv_bench/``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .common import MB, data_dir

N = int(os.environ.get("FASTLOAD_BENCH_N", "16384"))
SHAPE = (32, 32, 3)
RECORD = int(np.prod(SHAPE))
BATCH = 256
WORKERS = 2
EPOCHS = int(os.environ.get("FASTLOAD_BENCH_EPOCHS", "3"))


def write_records(folder: str | None = None) -> str:
    """One shard file of N uint8 records, written once (a marker file says complete)."""
    folder = folder or os.path.join(data_dir(), f"torch-records-{N}")
    path = os.path.join(folder, "shard-0000.rec")
    # The marker says the write finished; the size that it was this N's (the folder may be reused).
    if not os.path.exists(path + ".complete") or os.path.getsize(path) != N * RECORD:
        os.makedirs(folder, exist_ok=True)
        np.random.default_rng(0).integers(0, 256, (N, *SHAPE), dtype=np.uint8).tofile(path)
        open(path + ".complete", "w").close()
    return path


class NumpyRecords:
    """The usual map-style dataset: record i read with os.preadv into a fresh numpy array."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if self.fd is None:  # opened in the worker that reads
            self.fd = os.open(self.path, os.O_RDONLY)
        out = np.empty(SHAPE, dtype=np.uint8)
        os.preadv(self.fd, [out], i * RECORD)
        return out, i


def make_loaders(path: str) -> dict:
    import torch.utils.data as tud

    from fastload.adapters.torch_collate import TorchCollate
    from fastload.adapters.torch_dataset import TorchIterableDataset
    from fastload.plan.datasets import RecordDataset

    common = {"num_workers": WORKERS, "persistent_workers": True, "prefetch_factor": 2}
    adapter = TorchIterableDataset(
        RecordDataset([path], SHAPE, labels=np.arange(N)),
        batch_size=BATCH,
        shuffle=True,
        memory_format="channels_last",
    )
    return {
        "adapter": tud.DataLoader(adapter, batch_size=None, **common),
        "collate_fn": tud.DataLoader(
            NumpyRecords(path),
            batch_size=BATCH,
            shuffle=True,
            collate_fn=TorchCollate(memory_format="channels_last"),
            **common,
        ),
        "default": tud.DataLoader(NumpyRecords(path), batch_size=BATCH, shuffle=True, **common),
    }


def epoch_rate(loader) -> float:
    """Samples/s of one epoch (checks every batch's shape)."""
    t = time.perf_counter()
    n = 0
    for x, y in loader:
        assert x.shape[0] == len(y) and x.numel() == len(y) * RECORD
        n += len(y)
    return n / (time.perf_counter() - t)


def measure(epochs: int = EPOCHS) -> dict[str, float]:
    """Best samples/s of each loader over ``epochs`` interleaved epochs after a warm-up
    epoch (worker start, page cache), and the adapter/default ratio."""
    loaders = make_loaders(write_records())
    for dl in loaders.values():
        epoch_rate(dl)
    best = dict.fromkeys(loaders, 0.0)
    for epoch in range(1, epochs + 1):
        loaders["adapter"].dataset.set_epoch(
            epoch
        )  # a new order per epoch, as shuffle=True gives the others
        for name, dl in loaders.items():
            best[name] = max(best[name], epoch_rate(dl))
    best["ratio"] = best["adapter"] / best["default"]
    best["collate_fn_ratio"] = best["collate_fn"] / best["default"]
    return best


class TorchDataLoaderRecords:
    """samples/s of torch's DataLoader fed three ways, and fastload's ratios (same run)."""

    timeout = 900
    params = [["adapter", "collate_fn", "default", "ratio", "collate_fn_ratio"]]
    param_names = ["loader"]

    def setup_cache(self):
        # Measured once for every parameter: asv runs each in its own process.
        try:
            return measure()
        except ImportError:
            return {}

    def track_samples_per_s(self, rates, loader):
        return rates.get(loader, float("nan"))

    track_samples_per_s.unit = "samples/s (ratio: adapter / default)"

    def track_input_mb_per_s(self, rates, loader):
        return float("nan") if "ratio" in loader else rates.get(loader, float("nan")) * RECORD / MB

    track_input_mb_per_s.unit = "MB/s"
