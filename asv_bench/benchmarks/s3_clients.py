"""The S3 clients bench_s3 compares, each run in its own process.

``python s3_clients.py CLIENT SCENARIO CONFIG_JSON`` reads the scenario's
objects from the server named in the config and prints one JSON line:
best wall seconds, client CPU seconds of that run (user + system, children
included for curl), and bytes. A fresh process per client keeps one
client's threads and caches from touching another's figures (s3dlio's SDK
client is a process-wide singleton, for one).

Scenarios: ``big`` (one large object), ``small`` (many small objects),
``list_nested`` and ``list_flat`` (listing 10,000 keys with their sizes, in 10
sub-prefixes or all under one).

Clients: ``fastload`` (its big-object setting, 32 MiB x 8, as the README states it),
``fastload_defaults`` (no part_size / max_inflight_parts: the per-scheme defaults),
``fastload_one_chain`` (a listing with ``list_concurrency=1``: one chain of pages, one
request at a time, no sub-prefixes listed at once),
``s3dlio`` (``get`` / ``get_many``: bytes objects), ``s3dlio_into`` (its fastest API,
``get_into_async`` into a preallocated buffer; many at once for small objects), boto3,
curl.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

REGION = "us-east-1"


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _split(size: int, n: int) -> list[tuple[int, int]]:
    step = -(-size // n)
    return [(o, min(step, size - o)) for o in range(0, size, step)]


def _fastload(
    cfg: dict, scenario: str, defaults: bool = False, list_concurrency: int = 8
) -> Callable[[], int]:
    import numpy as np

    import fastload
    from fastload.storage.uri import parse_uri

    opts = {
        "endpoint_url": cfg["endpoint"],
        "access_key_id": cfg["key"],
        "secret_access_key": cfg["secret"],
        "region": REGION,
    }
    if scenario.startswith("list"):
        eng = fastload.RangeEngine(list_concurrency=list_concurrency, **opts)
        prefix = cfg[f"{scenario}_prefix"]
        return lambda: len(eng.list_sizes(prefix)[0])
    if defaults:
        eng = fastload.RangeEngine(**opts)
        knobs: dict = {}
    elif scenario == "big":
        knobs = {"part_size": 32 << 20, "max_inflight_parts": 8}
    else:
        knobs = {"max_inflight_parts": 16}
    if scenario == "big":
        eng = fastload.RangeEngine(**knobs, **opts)
        size = cfg["big_size"]
        buf = fastload.AlignedBuffer(size)
        table = np.array([[0, 0, size, 0]], dtype=np.int64)
        uris = [cfg["big_uri"]]
    else:
        eng = fastload.RangeEngine(**knobs, **opts)
        listed = eng.list(cfg["small_prefix"])  # sizes come with the listing: no HEADs
        backend = eng.backend("s3")
        sizes = np.array([backend.size(parse_uri(u)) for u in listed], dtype=np.int64)
        table = np.zeros((len(listed), 4), dtype=np.int64)
        table[:, 0] = np.arange(len(listed))
        table[:, 2] = sizes
        table[:, 3] = np.cumsum(sizes) - sizes
        buf = fastload.AlignedBuffer(int(sizes.sum()))
        uris = listed

    def run() -> int:
        eng.read_into(uris, table, buf)
        return len(buf)

    return run


def _s3dlio(cfg: dict, scenario: str) -> Callable[[], int]:
    import s3dlio

    s3dlio.configure_s3(endpoint_url=cfg["endpoint"], region=REGION)
    if scenario.startswith("list"):
        prefix = cfg[f"{scenario}_prefix"]
        return lambda: len(s3dlio.list(prefix, recursive=True))
    if scenario == "big":
        return lambda: len(s3dlio.get(cfg["big_uri"]))
    uris = cfg["small_uris"]
    return lambda: sum(len(v) for _, v in s3dlio.get_many(uris, max_in_flight=64))


def _s3dlio_into(cfg: dict, scenario: str) -> Callable[[], int]:
    """s3dlio's fastest read: ``get_into_async`` straight into a preallocated buffer."""
    import numpy as np
    import s3dlio

    s3dlio.configure_s3(endpoint_url=cfg["endpoint"], region=REGION)
    if scenario == "big":
        size = cfg["big_size"]
        buf = np.empty(size, dtype=np.uint8)
        uri = cfg["big_uri"]

        async def one() -> int:
            return await s3dlio.get_into_async(uri, buf, expected_len=size)

        return lambda: asyncio.run(one())
    uris = cfg["small_uris"]
    n = cfg["small_size"]
    buf = np.empty(len(uris) * n, dtype=np.uint8)
    limit = 64  # in flight at once, as get_many above

    async def many() -> int:
        sem = asyncio.Semaphore(limit)

        async def get(i: int, uri: str) -> int:
            async with sem:
                return await s3dlio.get_into_async(uri, buf[i * n : (i + 1) * n], expected_len=n)

        return sum(await asyncio.gather(*(get(i, u) for i, u in enumerate(uris))))

    return lambda: asyncio.run(many())


def _boto3_client(cfg: dict, pool: int):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=cfg["endpoint"],
        aws_access_key_id=cfg["key"],
        aws_secret_access_key=cfg["secret"],
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool),
    )


def _boto3(cfg: dict, scenario: str) -> Callable[[], int]:
    if scenario == "big":
        s3 = _boto3_client(cfg, 8)
        bucket, key = cfg["big_uri"][5:].split("/", 1)
        size = cfg["big_size"]
        buf = bytearray(size)
        view = memoryview(buf)
        ex = ThreadPoolExecutor(8)

        def part(r: tuple[int, int]) -> None:
            o, n = r
            body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={o}-{o + n - 1}")["Body"]
            view[o : o + n] = body.read()

        def run() -> int:
            list(ex.map(part, _split(size, 8)))
            return size

        return run
    s3 = _boto3_client(cfg, 16)
    ex = ThreadPoolExecutor(16)
    keys = [u[5:].split("/", 1) for u in cfg["small_uris"]]

    def get(bk: list[str]) -> int:
        return len(s3.get_object(Bucket=bk[0], Key=bk[1])["Body"].read())

    return lambda: sum(ex.map(get, keys))


def _curl(cfg: dict, scenario: str) -> Callable[[], int]:
    """8 ``curl -r`` processes into /dev/null: the transport's own limit."""
    if scenario != "big":
        raise ValueError("curl runs the big scenario only")
    bucket_key = cfg["big_uri"][5:]
    url = f"{cfg['endpoint']}/{bucket_key}"
    size = cfg["big_size"]

    def run() -> int:
        procs = [
            subprocess.Popen(
                [
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-r",
                    f"{o}-{o + n - 1}",
                    "--aws-sigv4",
                    f"aws:amz:{REGION}:s3",
                    "--user",
                    f"{cfg['key']}:{cfg['secret']}",
                    url,
                ]
            )
            for o, n in _split(size, 8)
        ]
        if any(
            [p.wait() != 0 for p in procs]
        ):  # a list: wait for every process, not the first failure
            raise RuntimeError("a curl process failed")
        return size

    return run


CLIENTS = {
    "fastload": _fastload,
    "fastload_defaults": lambda cfg, scenario: _fastload(cfg, scenario, defaults=True),
    "fastload_one_chain": lambda cfg, scenario: _fastload(cfg, scenario, list_concurrency=1),
    "s3dlio": _s3dlio,
    "s3dlio_into": _s3dlio_into,
    "boto3": _boto3,
    "curl": _curl,
}


def measure(client: str, scenario: str, cfg: dict, repeat: int) -> dict:
    """The fastest run's seconds, CPU seconds and bytes (keys for a listing), and every
    run's seconds and CPU seconds (``all``)."""
    run = CLIENTS[client](cfg, scenario)
    run()  # warm-up: connections, caches, first-touch of buffers
    best = None
    runs = []
    for _ in range(repeat):
        c0, t0 = _cpu(), time.perf_counter()
        nbytes = run()
        t, c = time.perf_counter() - t0, _cpu() - c0
        runs.append((t, c))
        if best is None or t < best["seconds"]:
            best = {"seconds": t, "cpu_seconds": c, "bytes": nbytes}
    assert best is not None
    best["all"] = runs
    return best


if __name__ == "__main__":
    client, scenario, cfg_json = sys.argv[1:4]
    cfg = json.loads(cfg_json)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": cfg["key"],
            "AWS_SECRET_ACCESS_KEY": cfg["secret"],
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": cfg["endpoint"],
        }
    )
    print(json.dumps(measure(client, scenario, cfg, int(cfg.get("repeat", 2)))))
