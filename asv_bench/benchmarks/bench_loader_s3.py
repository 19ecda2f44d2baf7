"""End to end over S3: fastload's DataLoader against ``rclone serve s3`` on 127.0.0.1.

Two datasets in bucket ``loader`` (small: the server shares the machine's cores):
- ``records``: 4,000 images of 64x64x3 uint8 in 8 shard objects, read shuffled as
  a RecordDataset, batch 256, to float32 NCHW normalised (FASTLOAD_BENCH_S3_RECORDS);
- ``objects``: 2,000 objects of 16-128 KiB, read shuffled as an ObjectDataset,
  batch 256, ragged batches of bytes (FASTLOAD_BENCH_S3_OBJECTS).

fastload runs shuffled (``fastload``) and in order (``fastload_in_order``: a records
batch is then one or two coalesced ranges). Baselines in the same run, taking turns:
- ``torch_boto3``: PyTorch's DataLoader, num_workers=2 (spawn, persistent), a
  map-style dataset doing one boto3 GET per sample (a ranged GET per record),
  default_collate (+ permute and normalise for records): the usual recipe;
- ``s3dlio``: s3dlio's async loader over the same prefix. It yields whole objects
  (no record datasets, no shuffling), so records are sliced out of each shard
  and normalised with numpy. Its ratio is taken against ``fastload_in_order``.

Each measurement is one whole epoch from a fresh iterator, the best of 3 rounds
taking turns. The server is started in ``setup_cache`` and always stopped there.

Quick run without asv: ``python asv_bench/benchmarks/bench_loader_s3.py``; the
knob sweep behind the network in-flight default (not an asv benchmark):
``python scripts/sweep_loader_s3.py``.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

try:
    from .common import MB, S3_KEY, S3_SECRET, data_dir, rclone_server
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import MB, S3_KEY, S3_SECRET, data_dir, rclone_server

REGION = "us-east-1"
N_RECORDS = int(os.environ.get("FASTLOAD_BENCH_S3_RECORDS", "4000"))
N_OBJECTS = int(os.environ.get("FASTLOAD_BENCH_S3_OBJECTS", "2000"))
SHAPE = (64, 64, 3)
RECORD = int(np.prod(SHAPE))
SHARDS = 8
BATCH = 256
MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255
SCENARIOS = ("records", "objects")
LOADERS = ("fastload", "fastload_in_order", "torch_boto3", "s3dlio")
# The fastload run each baseline is compared with: s3dlio cannot shuffle (it streams
# whole objects in listing order), so it faces fastload reading in order too.
COMPARED_WITH = {"s3dlio": "fastload_in_order", "fastload_in_order": "fastload_in_order"}


def write_data() -> str:
    """The server's folder (written once): loader/recs/shard-N.rec and loader/objs/obj-N.bin."""
    root = os.path.join(data_dir(), f"s3-loader-{N_RECORDS}-{N_OBJECTS}")
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    rng = np.random.default_rng(0)
    recs = os.path.join(root, "loader", "recs")
    objs = os.path.join(root, "loader", "objs")
    os.makedirs(recs, exist_ok=True)
    os.makedirs(objs, exist_ok=True)
    images = rng.integers(0, 256, (N_RECORDS, *SHAPE), dtype=np.uint8)
    per = -(-N_RECORDS // SHARDS)
    for s in range(SHARDS):
        images[s * per : (s + 1) * per].tofile(os.path.join(recs, f"shard-{s:03d}.rec"))
    block = rng.integers(0, 256, 128 << 10, dtype=np.uint8).tobytes()
    for i, n in enumerate(rng.integers(16 << 10, (128 << 10) + 1, N_OBJECTS)):
        with open(os.path.join(objs, f"obj-{i:05d}.bin"), "wb") as f:
            f.write((block[i % 97 :] + block[: i % 97])[: int(n)])  # objects differ
    open(done, "w").close()  # outside the bucket: not an object
    return root


# -- fastload ------------------------------------------------------------------------


def fastload_loader(endpoint: str, scenario: str, **knobs):
    import fastload

    engine = fastload.RangeEngine(
        endpoint_url=endpoint, access_key_id=S3_KEY, secret_access_key=S3_SECRET, region=REGION
    )
    if scenario == "records":
        ds = fastload.RecordDataset("s3://loader/recs/", SHAPE, engine=engine)
        out = {"memory_format": "channels_first", "dtype": np.float32, "mean": MEAN, "std": STD}
    else:
        ds = fastload.ObjectDataset("s3://loader/objs/", engine=engine)
        out = {}
    return fastload.DataLoader(
        ds, batch_size=BATCH, engine=engine, **{"shuffle": True, **out, **knobs}
    )


# -- torch + boto3 -------------------------------------------------------------------


class Boto3Samples:
    """A torch map-style dataset: one boto3 GET per sample (a client per worker process)."""

    def __init__(self, endpoint: str, scenario: str) -> None:
        self.endpoint, self.scenario = endpoint, scenario
        self.client = None
        if scenario == "records":
            self.keys = [f"recs/shard-{s:03d}.rec" for s in range(SHARDS)]
            self.count = N_RECORDS
        else:
            self.keys = [f"objs/obj-{i:05d}.bin" for i in range(N_OBJECTS)]
            self.count = N_OBJECTS

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        if self.client is None:
            import boto3
            from botocore.config import Config

            self.client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=S3_KEY,
                aws_secret_access_key=S3_SECRET,
                region_name=REGION,
                config=Config(s3={"addressing_style": "path"}),
            )
        if self.scenario == "records":
            per = -(-N_RECORDS // SHARDS)
            s, k = divmod(i, per)
            body = self.client.get_object(
                Bucket="loader",
                Key=self.keys[s],
                Range=f"bytes={k * RECORD}-{(k + 1) * RECORD - 1}",
            )["Body"].read()
        else:
            body = self.client.get_object(Bucket="loader", Key=self.keys[i])["Body"].read()
        sample = np.frombuffer(bytearray(body), dtype=np.uint8)  # writable, as torch wants
        return sample.reshape(SHAPE) if self.scenario == "records" else sample


def collate_records(samples: list[np.ndarray]):  # runs in the torch workers
    import torch
    from torch.utils.data import default_collate

    x = default_collate(samples).permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def collate_objects(samples: list[np.ndarray]) -> list[np.ndarray]:
    return samples


def torch_loader(endpoint: str, scenario: str):
    import torch.utils.data as tud

    # Spawned workers unpickle Boto3Samples by module name: under asv that is
    # benchmarks.bench_loader_s3, so its package's folder must be on their sys.path.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if __package__ and package_parent not in sys.path:
        sys.path.append(package_parent)

    return tud.DataLoader(
        Boto3Samples(endpoint, scenario),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        collate_fn=collate_records if scenario == "records" else collate_objects,
        multiprocessing_context="spawn",
        persistent_workers=True,
        prefetch_factor=2,
    )


# -- s3dlio --------------------------------------------------------------------------


def s3dlio_batches(endpoint: str, scenario: str) -> Iterator[object]:
    """s3dlio's loader yields whole objects: slice records out of shards and normalise
    with numpy; group objects into batches of ``BATCH``."""
    import s3dlio

    prefix = "s3://loader/recs/" if scenario == "records" else "s3://loader/objs/"
    mean = MEAN.reshape(1, 3, 1, 1).astype(np.float32)
    std = STD.reshape(1, 3, 1, 1).astype(np.float32)
    batch: list[object] = []
    for obj in s3dlio.create_async_loader(prefix, {"batch_size": 1}):
        if scenario == "objects":
            batch.append(obj)
            if len(batch) == BATCH:
                yield batch
                batch = []
            continue
        recs = np.frombuffer(memoryview(obj), dtype=np.uint8).reshape(-1, *SHAPE)
        for a in range(0, len(recs), BATCH):
            yield (recs[a : a + BATCH].transpose(0, 3, 1, 2).astype(np.float32) - mean) / std
    if batch:
        yield batch


def _s3dlio_env(endpoint: str) -> None:
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
        }
    )
    import s3dlio

    s3dlio.configure_s3(endpoint_url=endpoint, region=REGION)


# -- measuring -----------------------------------------------------------------------


def samples_per_s(batches: object, n_batches: int | None = None) -> float:
    """samples/s of a fresh iterator over a whole epoch (or its first ``n_batches``).

    Whole epochs: a loader left mid-epoch would go on reading ahead (torch's workers)
    and load the machine while the next loader is measured."""
    t = time.perf_counter()
    n = 0
    it = iter(batches)  # type: ignore[call-overload]
    for _ in range(n_batches) if n_batches else iter(int, 1):
        x = next(it, None)
        if x is None:
            break
        n += x.count if hasattr(x, "count") and not isinstance(x, list | np.ndarray) else len(x)
    rate = n / (time.perf_counter() - t)
    close = getattr(it, "close", None)
    if close:
        close()
    return rate


def _runs(
    endpoint: str, scenario: str, loaders: tuple[str, ...]
) -> tuple[dict[str, Callable[[], float]], list]:
    runs: dict[str, Callable[[], float]] = {}
    owned: list = []
    for name, shuffle in (("fastload", True), ("fastload_in_order", False)):
        if name in loaders:
            fl = fastload_loader(endpoint, scenario, shuffle=shuffle)
            owned.append(fl)
            runs[name] = lambda fl=fl: samples_per_s(fl)
    if "torch_boto3" in loaders:
        try:
            tl = torch_loader(endpoint, scenario)
            runs["torch_boto3"] = lambda: samples_per_s(tl)
        except ImportError:
            pass
    if "s3dlio" in loaders:
        try:
            _s3dlio_env(endpoint)
            runs["s3dlio"] = lambda: samples_per_s(s3dlio_batches(endpoint, scenario))
        except ImportError:
            pass
    return runs, owned


def measure_all(
    scenarios: tuple[str, ...] = SCENARIOS, loaders: tuple[str, ...] = LOADERS, rounds: int = 3
) -> dict[str, dict[str, float]]:
    """{scenario: {loader: best samples/s}} over ``rounds`` interleaved rounds after a
    warm-up, all against one server (s3dlio keeps its first endpoint for the process)."""
    results = {}
    with rclone_server(write_data()) as endpoint:
        for scenario in scenarios:
            runs, owned = _runs(endpoint, scenario, loaders)
            try:
                for fn in runs.values():  # warm: server caches, connections, worker start
                    fn()
                rates = dict.fromkeys(runs, 0.0)
                for _ in range(rounds):
                    for name, fn in runs.items():
                        rates[name] = max(rates[name], fn())
            finally:
                for loader in owned:
                    loader.close()
                runs.clear()  # the last reference to torch's loader: its workers stop now,
                gc.collect()  # while the server still answers
            results[scenario] = rates
    return results


def ratio(rates: dict[str, float], loader: str) -> float:
    ours = rates.get(COMPARED_WITH.get(loader, "fastload"))
    return ours / rates[loader] if ours and rates.get(loader) else float("nan")


class _LoaderS3:
    timeout = 1200
    repeat = 1
    number = 1
    rounds = 1
    scenario = ""
    params = [list(LOADERS)]
    param_names = ["loader"]

    def track_samples_per_s(self, rates, loader):
        return rates.get(loader, float("nan"))

    track_samples_per_s.unit = "samples/s"

    def track_fastload_ratio(self, rates, loader):
        """fastload's samples/s over this loader's, same run (like for like: see COMPARED_WITH)."""
        return ratio(rates, loader)

    track_fastload_ratio.unit = "ratio"


class LoaderS3Records(_LoaderS3):
    """Shuffled 64x64x3 records from shard objects -> float32 NCHW normalised, batch 256."""

    def setup_cache(self):  # one per class: asv shares a cache between classes by function
        return measure_all(("records",))["records"]

    def track_input_mb_per_s(self, rates, loader):
        return rates.get(loader, float("nan")) * RECORD / MB

    track_input_mb_per_s.unit = "MB/s"


class LoaderS3Objects(_LoaderS3):
    """Shuffled 16-128 KiB objects -> ragged batches of 256."""

    def setup_cache(self):
        return measure_all(("objects",))["objects"]


if __name__ == "__main__":
    for sc, res in measure_all().items():
        for name, r in res.items():
            ours = COMPARED_WITH.get(name, "fastload")
            print(f"{sc:8s} {name:17s} {r:9.0f} samples/s  {ours}/{name} = {ratio(res, name):.2f}x")
