"""fastload against S3 clients on ``rclone serve s3`` (127.0.0.1).

(a) one large object (1 GiB; FASTLOAD_BENCH_S3_BIG_MIB), baselines: 8
parallel ``curl -r`` processes (the transport limit), s3dlio ``get`` and
boto3 with 8 parallel ranged GETs. (b) 2,000 objects of 128 KiB
(FASTLOAD_BENCH_S3_SMALL_COUNT), baselines: s3dlio ``get_many`` and a
16-thread boto3 pool. Every client runs in its own process, all in one
``setup_cache``, so the ratios come from the same run. The server shares the
machine's cores: client CPU seconds per GiB are reported beside the speeds.

Quick run without asv: ``python asv_bench/benchmarks/bench_s3.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

try:
    from .common import MB, S3_KEY, S3_SECRET, data_dir, random_file, rclone_server
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import MB, S3_KEY, S3_SECRET, data_dir, random_file, rclone_server

GIB = 1 << 30
BIG_MIB = int(os.environ.get("FASTLOAD_BENCH_S3_BIG_MIB", "1024"))
SMALL_COUNT = int(os.environ.get("FASTLOAD_BENCH_S3_SMALL_COUNT", "2000"))
SMALL_SIZE = 128 << 10
CLIENTS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "s3_clients.py")
RUNS = {"big": ("fastload", "curl", "s3dlio", "boto3"), "small": ("fastload", "s3dlio", "boto3")}


def _dataset() -> str:
    """The server's folder: bucket ``bench`` with big.bin and small/obj-NNNNN.bin."""
    root = os.path.join(data_dir(), "s3")
    bucket = os.path.join(root, "bench")
    os.makedirs(os.path.join(bucket, "small"), exist_ok=True)
    big = os.path.join(bucket, "big.bin")
    src = random_file(f"s3-big-{BIG_MIB}.bin", BIG_MIB << 20)
    if not (os.path.exists(big) and os.path.samefile(src, big)):
        if os.path.exists(big):
            os.remove(big)
        os.link(src, big)
    with open(src, "rb") as f:
        block = f.read(SMALL_SIZE)
    for i in range(SMALL_COUNT):
        path = os.path.join(bucket, "small", f"obj-{i:05d}.bin")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(block[i % 251 :] + block[: i % 251])
    for name in os.listdir(os.path.join(bucket, "small")):  # a smaller count than last time
        if int(name[4:9]) >= SMALL_COUNT:
            os.remove(os.path.join(bucket, "small", name))
    return root


def _fastload_root(fastload) -> str:
    """The tree the client processes import: the checkout holding this file when it
    has a built fastload, else wherever this process found fastload."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(here, "fastload", "__init__.py")):
        return here
    return os.path.dirname(os.path.dirname(fastload.__file__))


ROUNDS = int(os.environ.get("FASTLOAD_BENCH_S3_ROUNDS", "2"))


def run_all(scenarios: tuple[str, ...] = ("big", "small"), rounds: int = ROUNDS) -> dict:
    """{scenario: {client: {seconds, cpu_seconds, bytes}}}: each client's best of
    ``rounds``, the clients taking turns so that load from elsewhere hits all alike."""
    import fastload

    root = _dataset()
    results: dict = {}
    with rclone_server(root) as endpoint:
        cfg = {
            "endpoint": endpoint,
            "key": S3_KEY,
            "secret": S3_SECRET,
            "repeat": 1,
            "big_uri": "s3://bench/big.bin",
            "big_size": BIG_MIB << 20,
            "small_prefix": "s3://bench/small/",
            "small_uris": [f"s3://bench/small/obj-{i:05d}.bin" for i in range(SMALL_COUNT)],
        }
        env = {**os.environ, "PYTHONPATH": _fastload_root(fastload)}
        for scenario in scenarios:
            for _ in range(rounds):
                for client in RUNS[scenario]:
                    out = subprocess.run(
                        [sys.executable, CLIENTS_SCRIPT, client, scenario, json.dumps(cfg)],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )
                    if out.returncode != 0:
                        raise RuntimeError(f"{client}/{scenario} failed: {out.stderr[-2000:]}")
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    best = results.setdefault(scenario, {}).get(client)
                    if best is None or got["seconds"] < best["seconds"]:
                        results[scenario][client] = got
    return results


class _S3Bench:
    timeout = 1200
    repeat = 1
    number = 1
    rounds = 1
    scenario = ""

    def _fig(self, results, client):
        return results[self.scenario][client]


class S3BigObject(_S3Bench):
    """(a) one large object: MB/s and ratios (goals: >= 0.9x curl, >= 1.5x s3dlio)."""

    scenario = "big"
    params = [["fastload", "curl", "s3dlio", "boto3"]]
    param_names = ["client"]

    def setup_cache(self):  # one per class: asv shares a cache between classes by function
        return run_all(("big",))

    def track_mb_per_s(self, results, client):
        r = self._fig(results, client)
        return r["bytes"] / r["seconds"] / MB

    track_mb_per_s.unit = "MB/s"

    def track_cpu_s_per_gib(self, results, client):
        r = self._fig(results, client)
        return r["cpu_seconds"] / (r["bytes"] / GIB)

    track_cpu_s_per_gib.unit = "CPU s/GiB"

    def track_fastload_speed_ratio(self, results, client):
        """fastload MB/s divided by this client's, same run."""
        return self._fig(results, client)["seconds"] / self._fig(results, "fastload")["seconds"]

    track_fastload_speed_ratio.unit = "ratio"


class S3SmallObjects(_S3Bench):
    """(b) many 128 KiB objects: objects/s and ratios (goal: >= 1.5x s3dlio get_many)."""

    scenario = "small"
    params = [["fastload", "s3dlio", "boto3"]]
    param_names = ["client"]

    def setup_cache(self):
        return run_all(("small",))

    def track_objects_per_s(self, results, client):
        return SMALL_COUNT / self._fig(results, client)["seconds"]

    track_objects_per_s.unit = "objects/s"

    track_cpu_s_per_gib = S3BigObject.track_cpu_s_per_gib
    track_fastload_speed_ratio = S3BigObject.track_fastload_speed_ratio


if __name__ == "__main__":
    res = run_all()
    for scenario, by_client in res.items():
        fl = by_client["fastload"]
        for client, r in by_client.items():
            print(
                f"{scenario:5s} {client:9s} {r['bytes'] / r['seconds'] / MB:9.1f} MB/s "
                f"{r['cpu_seconds'] / (r['bytes'] / GIB):6.2f} CPU s/GiB  "
                f"fastload/{client} = {r['seconds'] / fl['seconds']:.2f}x"
            )
