"""Shards on object storage: block shuffle, tar shards and the node-local cache, against
``rclone serve s3`` on 127.0.0.1 and the same files on local disk.

Two datasets (written once under the bench data folder):
- ``records``: 12 KiB records (64x64x3 uint8) as the rows of one ``.npy``
  (FASTLOAD_BENCH_SHARD_RECORDS, default 8192: 96 MiB), batch 256, batches as read;
- ``tars``: WebDataset tar shards of ~64 MB, samples of a ~100 KB ``.jpg`` (random bytes:
  raw bytes, no decode) and a ``.cls`` (FASTLOAD_BENCH_SHARD_SAMPLES, default 3000), batch
  256, ragged batches of bytes.

- ``images``: the ImageNet-like JPEG folder of bench_images (FASTLOAD_BENCH_IMAGES,
  default 3,000 photo-like JPEGs, 400-640 x 300-480 px, ~100 KB; the issue's 20,000 scaled
  down so that setup and rounds fit a shared 2-core box) packed in its sample order into
  ~64 MB tar shards (``.jpg`` + ``.cls``), read with the images issue's training pipeline
  (RandomResizedCrop 224 + flip + normalise, float32 NCHW, batch 256), block shuffle.

Loaders, taking turns (each measurement one epoch from a fresh iterator; the best and the
median of ``ROUNDS`` rounds after a warm-up, each round in another seeded order):
- records: fastload ``shuffle="block"`` over S3 and from local disk; the global shuffle over
  S3 (one GET per record: what a shuffled epoch cost before, measured on its first 8
  batches) and from local disk; block shuffle over S3 through ``cache_dir`` (epochs after
  the first: from the node-local cache);
- tars: fastload ``TarShardDataset`` with block shuffle over S3 (index from a sidecar
  written once by ``fastload index``; the header walk is timed separately), from local
  disk, and through the cache (epochs after the first); webdataset + torch DataLoader
  (2 workers, shard shuffle + a 1,000-sample shuffle buffer, batched 256) over presigned
  HTTP URLs of the same objects (its usual S3 set-up: curl streams each shard);
- images: fastload ``TarShardDataset`` + ``transform=ImagePipeline(...)`` (the native
  decode stage, as ImageFolder's) with block shuffle over S3 (first epoch: no cache), from
  local disk, and through the cache (epochs after the first); webdataset + torch DataLoader
  (2 workers, shard shuffle + 1,000-sample buffer, PIL decode and bench_images' PIL
  version of torchvision's transforms, batched 256) over presigned URLs. The CPU seconds
  per image of this process and of the rclone server are recorded with each S3 epoch
  (on 2 shared cores the server's CPU is taken from the decode).

Quick run without asv: ``python asv_bench/benchmarks/bench_shards.py [records] [tars]
[images]`` (all three by default; prints the load average before and after, since the
wall figures depend on what else the cores run).
"""

from __future__ import annotations

import gc
import os
import random
import resource
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable

import numpy as np

try:
    from . import bench_images
    from .common import S3_KEY, S3_SECRET, data_dir, rclone_server
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_images  # type: ignore[no-redef]
    from common import S3_KEY, S3_SECRET, data_dir, rclone_server

REGION = "us-east-1"
N_RECORDS = int(os.environ.get("FASTLOAD_BENCH_SHARD_RECORDS", "8192"))
N_SAMPLES = int(os.environ.get("FASTLOAD_BENCH_SHARD_SAMPLES", "3000"))
SHAPE = (64, 64, 3)  # 12 KiB
JPEG_BYTES = 100_000
SHARD_BYTES = 64 << 20
BATCH = 256
ROUNDS = int(os.environ.get("FASTLOAD_BENCH_SHARD_ROUNDS", "3"))
TODAY = 300.0  # samples/s of a shuffled epoch of 12 KiB records from S3 before (the issue)


def write_data() -> str:
    """The server's folder: shards/recs.npy and shards/tars/shard-NNNNNN.tar (written once)."""
    root = os.path.join(data_dir(), f"s3-shards-{N_RECORDS}-{N_SAMPLES}")
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    rng = np.random.default_rng(0)
    bucket = os.path.join(root, "shards")
    os.makedirs(os.path.join(bucket, "tars"), exist_ok=True)
    np.save(os.path.join(bucket, "recs.npy"), rng.integers(0, 256, (N_RECORDS, *SHAPE), np.uint8))
    block = rng.integers(0, 256, JPEG_BYTES + 4096, dtype=np.uint8).tobytes()
    per_shard = max(1, SHARD_BYTES // (JPEG_BYTES + 2048))
    for s in range(-(-N_SAMPLES // per_shard)):
        path = os.path.join(bucket, "tars", f"shard-{s:06d}.tar")
        with tarfile.open(path + ".tmp", "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * per_shard, min((s + 1) * per_shard, N_SAMPLES)):
                for ext, data in (
                    ("cls", str(i % 1000).encode()),
                    ("jpg", block[i % 4096 : i % 4096 + JPEG_BYTES - (i * 37) % 20_000]),
                ):
                    info = tarfile.TarInfo(f"{i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, _Reader(data))
        os.replace(path + ".tmp", path)
    open(done, "w").close()  # outside the bucket: not an object
    return root


def write_image_shards(root: str) -> str:
    """bench_images' JPEG folder as ~64 MB tar shards in ``root``'s bucket (``imgtars-N/``),
    in ImageFolder's sample order (class, then file); written once."""
    folder = bench_images.write_folder()
    out = os.path.join(root, "shards", f"imgtars-{bench_images.N_IMAGES}")
    done = os.path.join(root, f".imgtars-{bench_images.N_IMAGES}.complete")  # not an object
    if os.path.exists(done):
        return out
    os.makedirs(out, exist_ok=True)
    classes = sorted(c for c in os.listdir(folder) if os.path.isdir(os.path.join(folder, c)))
    files = [
        (label, os.path.join(folder, c, f))
        for label, c in enumerate(classes)
        for f in sorted(os.listdir(os.path.join(folder, c)))
    ]
    shard: list[tuple[int, int, str]] = []
    nbytes, s = 0, 0
    for i, (label, path) in enumerate(files):
        shard.append((i, label, path))
        nbytes += os.path.getsize(path) + 2048
        if nbytes >= SHARD_BYTES or i == len(files) - 1:
            _write_image_tar(os.path.join(out, f"shard-{s:06d}.tar"), shard)
            shard, nbytes, s = [], 0, s + 1
    open(done, "w").close()
    return out


def _write_image_tar(path: str, samples: list[tuple[int, int, str]]) -> None:
    with tarfile.open(path + ".tmp", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, label, src in samples:
            with open(src, "rb") as f:
                data = f.read()
            for ext, blob in (("jpg", data), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{i:08d}.{ext}")
                info.size = len(blob)
                tar.addfile(info, _Reader(blob))
    os.replace(path + ".tmp", path)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        n = len(self.data) - self.pos if n < 0 else n
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def _engine(endpoint: str):
    import fastload

    return fastload.RangeEngine(
        endpoint_url=endpoint, access_key_id=S3_KEY, secret_access_key=S3_SECRET, region=REGION
    )


def count(batch: object) -> int:
    return batch.count if hasattr(batch, "count") and not isinstance(batch, list) else len(batch)


def samples_per_s(batches: object, n_batches: int | None = None) -> float:
    """samples/s of one epoch from a fresh iterator (or of its first ``n_batches``)."""
    t = time.perf_counter()
    n = 0
    it = iter(batches)  # type: ignore[call-overload]
    for k, x in enumerate(it):
        n += count(x[0] if isinstance(x, tuple) else x)
        if n_batches and k + 1 >= n_batches:
            break
    rate = n / (time.perf_counter() - t)
    close = getattr(it, "close", None)
    if close:
        close()
    return rate


# -- webdataset + torch DataLoader ----------------------------------------------------------


def _first(batch):  # runs in the workers: keep the bytes as they are
    return batch


def webdataset_loader(urls: list[str]):
    import torch.utils.data as tud
    import webdataset as wds

    ds = (
        wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False)
        .shuffle(1000)
        .to_tuple("jpg", "cls")
        .batched(BATCH, collation_fn=None, partial=True)
    )
    return tud.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)


def presigned(endpoint: str, keys: list[str]) -> list[str]:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    return [
        client.generate_presigned_url(
            "get_object", Params={"Bucket": "shards", "Key": k}, ExpiresIn=3600
        )
        for k in keys
    ]


# -- measuring -------------------------------------------------------------------------------


def _records_runs(
    endpoint: str, root: str, cache: str
) -> tuple[dict[str, Callable[[], float]], list]:
    import fastload

    eng = _engine(endpoint)
    s3 = fastload.NpyDataset("s3://shards/recs.npy", engine=eng)
    local = fastload.NpyDataset(os.path.join(root, "shards", "recs.npy"))
    kw = {"batch_size": BATCH}
    loaders = {
        "block_s3": fastload.DataLoader(s3, engine=eng, shuffle="block", **kw),
        "global_s3": fastload.DataLoader(s3, engine=eng, shuffle=True, **kw),
        "block_local": fastload.DataLoader(local, shuffle="block", **kw),
        "global_local": fastload.DataLoader(local, shuffle=True, **kw),
        "cache_s3": fastload.DataLoader(s3, engine=eng, shuffle="block", cache_dir=cache, **kw),
    }
    runs: dict[str, Callable[[], float]] = {
        name: (lambda dl=dl, name=name: samples_per_s(dl, 8 if name == "global_s3" else None))
        for name, dl in loaders.items()
    }
    return runs, [*loaders.values(), eng]


def _tar_runs(
    endpoint: str, root: str, cache: str
) -> tuple[dict[str, Callable[[], float]], list, dict]:
    import fastload
    from fastload.plan.tar_index import write_index

    eng = _engine(endpoint)
    extra: dict[str, float] = {}
    t = time.perf_counter()
    side = os.path.join(cache, "..", "tars.flidx")
    write_index(eng, ["s3://shards/tars/"], side)  # the header walk over S3
    extra["index_s3_s"] = time.perf_counter() - t
    # random bytes named .jpg: handed on as bytes (decode=False), not to the image decoder
    raw = {"field": "jpg", "label": "cls", "decode": False}
    s3 = fastload.TarShardDataset("s3://shards/tars/", index=side, engine=eng, **raw)
    local = fastload.TarShardDataset(os.path.join(root, "shards", "tars"), **raw)
    kw = {"batch_size": BATCH, "shuffle": "block"}
    loaders = {
        "tar_s3": fastload.DataLoader(s3, engine=eng, **kw),
        "tar_local": fastload.DataLoader(local, **kw),
        "tar_cache_s3": fastload.DataLoader(s3, engine=eng, cache_dir=cache, **kw),
    }
    runs: dict[str, Callable[[], float]] = {
        name: (lambda dl=dl: samples_per_s(dl)) for name, dl in loaders.items()
    }
    owned: list = [*loaders.values(), eng]
    try:
        keys = sorted(f"tars/{n}" for n in os.listdir(os.path.join(root, "shards", "tars")))
        wds_s3 = webdataset_loader(presigned(endpoint, keys))
        runs["webdataset_s3"] = lambda: samples_per_s(wds_s3)
        owned.append(wds_s3)
    except ImportError:
        pass
    return runs, owned, extra


def _pil_train(sample: tuple[bytes, bytes]) -> tuple:  # runs in the workers
    import io

    from PIL import Image

    jpg, cls = sample
    return bench_images.pil_transform(Image.open(io.BytesIO(jpg)), "train"), int(cls)


def _stack(samples: list) -> tuple:
    import torch

    return torch.stack([x for x, _ in samples]), torch.tensor([y for _, y in samples])


def webdataset_image_loader(urls: list[str]):
    import torch.utils.data as tud
    import webdataset as wds

    ds = (
        wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False)
        .shuffle(1000)
        .to_tuple("jpg", "cls")
        .map(_pil_train)
        .batched(BATCH, collation_fn=_stack, partial=True)
    )
    # collate_fn: each batch as the workers made it ((images, labels), not a list of them)
    return tud.DataLoader(
        ds, batch_size=None, num_workers=2, persistent_workers=True, collate_fn=_first
    )


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> tuple[float, float]:
    """CPU seconds of this process's children: (the ``rclone`` S3 server, the others:
    torch DataLoader workers)."""
    server = others = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if comm == "rclone":
                server += cpu
            else:
                others += cpu
    return server, others


def _image_runs(
    endpoint: str, root: str, cache: str
) -> tuple[dict[str, Callable[[], float]], list, dict]:
    import fastload

    folder = write_image_shards(root)
    prefix = os.path.basename(folder)
    eng = _engine(endpoint)
    s3 = fastload.TarShardDataset(f"s3://shards/{prefix}/", field="jpg", label="cls", engine=eng)
    local = fastload.TarShardDataset(folder, field="jpg", label="cls")
    kw = {
        "batch_size": BATCH,
        "shuffle": "block",
        "memory_format": "channels_first",
        "dtype": np.float32,
        "mean": bench_images.MEAN,
        "std": bench_images.STD,
    }
    train = bench_images.fastload_pipeline("train")
    loaders = {
        "img_s3": fastload.DataLoader(s3, engine=eng, transform=train, **kw),
        "img_local": fastload.DataLoader(local, transform=train, **kw),
        "img_cache_s3": fastload.DataLoader(s3, engine=eng, transform=train, cache_dir=cache, **kw),
    }
    cpu: dict[str, list[float]] = {}

    def timed(name: str, batches: object, n: int) -> Callable[[], float]:
        def run() -> float:
            c0, (r0, w0) = _self_cpu(), _children_cpu()
            rate = samples_per_s(batches)
            c1, (r1, w1) = _self_cpu(), _children_cpu()
            # the loader's CPU: this process and its workers (webdataset's decode runs there)
            cpu.setdefault(f"{name}_cpu_ms_per_img", []).append((c1 - c0 + w1 - w0) * 1e3 / n)
            if name != "img_local":
                cpu.setdefault(f"{name}_rclone_ms_per_img", []).append((r1 - r0) * 1e3 / n)
            return rate

        return run

    runs = {name: timed(name, dl, len(s3)) for name, dl in loaders.items()}
    owned: list = [*loaders.values(), eng]
    try:
        keys = sorted(f"{prefix}/{n}" for n in os.listdir(folder))
        wds_s3 = webdataset_image_loader(presigned(endpoint, keys))
        runs["webdataset_img_s3"] = timed("webdataset_img_s3", wds_s3, len(s3))
        owned.append(wds_s3)
    except ImportError:
        pass
    return runs, owned, cpu


def measure_all(
    scenarios: tuple[str, ...] = ("records", "tars", "images"), rounds: int = ROUNDS
) -> dict:
    """{scenario: {loader: [samples/s per round]}} plus extra timings, over one server."""
    results: dict = {}
    root = write_data()
    if "images" in scenarios:
        write_image_shards(root)  # before the server starts: its listing sees them
    with rclone_server(root) as endpoint:
        for scenario in scenarios:
            cache = tempfile.mkdtemp(prefix=f"fastload-bench-cache-{scenario}-")
            os.makedirs(os.path.join(cache, "c"))
            extra: dict = {}
            if scenario == "records":
                runs, owned = _records_runs(endpoint, root, os.path.join(cache, "c"))
            elif scenario == "tars":
                runs, owned, extra = _tar_runs(endpoint, root, os.path.join(cache, "c"))
            else:
                runs, owned, extra = _image_runs(endpoint, root, os.path.join(cache, "c"))
            try:
                for fn in runs.values():  # warm-up: connections, workers; the cache's epoch 1
                    fn()
                for v in extra.values():  # what the warm-up recorded is not a round's
                    if isinstance(v, list):
                        v.clear()
                rates: dict[str, list[float]] = {name: [] for name in runs}
                order = random.Random(0)
                for _ in range(rounds):
                    # each round in another (seeded) order: none always runs after the same
                    # one (webdataset's workers, a busy server, freed memory hit all alike)
                    names = list(runs)
                    order.shuffle(names)
                    for name in names:
                        rates[name].append(runs[name]())
            finally:
                for o in owned:
                    close = getattr(o, "close", None)
                    if close:
                        close()
                runs.clear()
                owned.clear()
                gc.collect()
                shutil.rmtree(cache, ignore_errors=True)
            results[scenario] = {**rates, **extra}
    return results


RATIOS = {
    "records": {
        "block_s3_over_global_s3": ("block_s3", "global_s3"),
        "block_s3_over_local": ("block_s3", "block_local"),
        "cache_epoch2_over_local": ("cache_s3", "block_local"),
    },
    "tars": {
        "tar_s3_over_local": ("tar_s3", "tar_local"),
        "tar_s3_over_webdataset_s3": ("tar_s3", "webdataset_s3"),
        "cache_epoch2_over_local": ("tar_cache_s3", "tar_local"),
    },
    "images": {
        "img_s3_over_local": ("img_s3", "img_local"),
        "img_s3_over_webdataset_s3": ("img_s3", "webdataset_img_s3"),
        "cache_epoch2_over_local": ("img_cache_s3", "img_local"),
    },
}
# CPU per image (lower is better): the baseline's over fastload's, as the rate ratios read
CPU_RATIOS = {
    "images": {
        "webdataset_cpu_over_fastload_cpu": (
            "webdataset_img_s3_cpu_ms_per_img",
            "img_s3_cpu_ms_per_img",
        ),
    },
}


def ratio(res: dict, a: str, b: str, pick: Callable[[list[float]], float] = max) -> float:
    if not res.get(a) or not res.get(b):
        return float("nan")
    return pick(res[a]) / pick(res[b])


class _Shards:
    timeout = 1800
    repeat = 1
    number = 1
    rounds = 1
    scenario = ""

    def setup_cache(self):
        return measure_all((self.scenario,))[self.scenario]

    def track_ratio(self, res, name):
        a, b = RATIOS[self.scenario][name]
        return ratio(res, a, b)

    track_ratio.unit = "ratio"

    def track_samples_per_s(self, res, name):
        a, _ = RATIOS[self.scenario][name]
        return max(res.get(a) or [float("nan")])

    track_samples_per_s.unit = "samples/s"


class ShardsRecords(_Shards):
    """12 KiB records shuffled from S3: block shuffle against the global shuffle and local disk."""

    scenario = "records"
    params = [list(RATIOS["records"])]
    param_names = ["ratio"]

    def setup_cache(self):  # one per class (asv keys the cache by function)
        return measure_all(("records",))["records"]

    def track_over_today(self, res, name):
        """Block shuffle over S3 against the issue's 300 samples/s (goal: >= 20x)."""
        return max(res["block_s3"]) / TODAY

    track_over_today.unit = "ratio"


class ShardsTars(_Shards):
    """Tar shards over S3 against local disk and webdataset + torch DataLoader."""

    scenario = "tars"
    params = [list(RATIOS["tars"])]
    param_names = ["ratio"]

    def setup_cache(self):
        return measure_all(("tars",))["tars"]

    def track_index_s3_seconds(self, res, name):
        return res.get("index_s3_s", float("nan"))

    track_index_s3_seconds.unit = "seconds"


class ShardsImages(_Shards):
    """JPEGs in tar shards over S3, decoded by the native image stage (training pipeline),
    against local disk, the node-local cache and webdataset + torch DataLoader."""

    scenario = "images"
    params = [list(RATIOS["images"])]
    param_names = ["ratio"]

    def setup_cache(self):
        return measure_all(("images",))["images"]

    def track_cpu_ratio(self, res, name):
        """webdataset's CPU per image (its workers') over fastload's (medians)."""
        a, b = CPU_RATIOS["images"]["webdataset_cpu_over_fastload_cpu"]
        return ratio(res, a, b, statistics.median)

    track_cpu_ratio.unit = "ratio"


if __name__ == "__main__":
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    out = measure_all(tuple(sys.argv[1:]) or ("records", "tars", "images"))
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for sc, res in out.items():
        for name, rates in res.items():
            if isinstance(rates, list) and name.endswith("_ms_per_img"):
                print(
                    f"{sc:8s} {name:34s} min {min(rates):7.2f}  median "
                    f"{statistics.median(rates):7.2f} CPU ms per image"
                )
            elif isinstance(rates, list):
                print(
                    f"{sc:8s} {name:16s} best {max(rates):9.0f}  median "
                    f"{statistics.median(rates):9.0f}  min {min(rates):9.0f} samples/s"
                )
            else:
                print(f"{sc:8s} {name:16s} {rates:.2f}")
        for label, (a, b) in {**RATIOS[sc], **CPU_RATIOS.get(sc, {})}.items():
            print(
                f"{sc:8s} {label:28s} best/best {ratio(res, a, b):6.2f}x  median/median "
                f"{ratio(res, a, b, statistics.median):6.2f}x  min/min "
                f"{ratio(res, a, b, min):6.2f}x"
            )
    recs = out.get("records", {})
    if recs.get("block_s3"):
        print(f"records  block_s3 over today's {TODAY:.0f}/s: {max(recs['block_s3']) / TODAY:.1f}x")
