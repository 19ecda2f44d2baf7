"""fastload against S3 clients on ``rclone serve s3`` (127.0.0.1).

(a) one large object (1 GiB; FASTLOAD_BENCH_S3_BIG_MIB), baselines: 8
parallel ``curl -r`` processes (the transport limit), s3dlio ``get`` (bytes) and
its fastest API ``get_into_async`` into a preallocated buffer (``s3dlio_into``), and
boto3 with 8 parallel ranged GETs. (b) 2,000 objects of 128 KiB
(FASTLOAD_BENCH_S3_SMALL_COUNT), baselines: s3dlio ``get_many``, 64
``get_into_async`` at once into one buffer, and a 16-thread boto3 pool. (c) listing
10,000 keys with their sizes, in 10 sub-prefixes (``list_nested``) or under one
(``list_flat``), against ``s3dlio.list(recursive=True)``; fastload with its default
``list_concurrency`` (8: sub-prefixes listed at once, the next page asked for while one
is parsed) and with 1 (``fastload_one_chain``: one request at a time). fastload runs with the
settings the README names (32 MiB x 8 for the big object, 16 in flight for small
ones) and with its defaults (``fastload_defaults``). Every client runs in its own
process, all in one ``setup_cache``, taking turns for FASTLOAD_BENCH_S3_ROUNDS rounds
(best and median reported), so the ratios come from the same run. The server shares
the machine's cores: client CPU seconds per GiB are reported beside the speeds.

Quick run without asv: ``python asv_bench/benchmarks/bench_s3.py``.
"""

from __future__ import annotations

import json
import os
import statistics
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
RUNS = {
    "big": ("fastload", "fastload_defaults", "curl", "s3dlio", "s3dlio_into", "boto3"),
    "small": ("fastload", "fastload_defaults", "s3dlio", "s3dlio_into", "boto3"),
    "list_nested": ("fastload", "fastload_one_chain", "s3dlio"),
    "list_flat": ("fastload", "fastload_one_chain", "s3dlio"),
}
LIST_KEYS = 10_000
STATS = ["min", "median"]


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
    for layout, folder_of in (("nested", lambda i: f"d{i // 1000}/"), ("flat", lambda i: "")):
        done = os.path.join(root, f".list-{layout}-{LIST_KEYS}")  # outside the bucket
        if os.path.exists(done):
            continue
        for i in range(LIST_KEYS):
            path = os.path.join(bucket, "list", layout, folder_of(i) + f"k{i:05d}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"x" * (i % 7 + 1))
        open(done, "w").close()
    return root


def _fastload_root(fastload) -> str:
    """The tree the client processes import: the checkout holding this file when it
    has a built fastload, else wherever this process found fastload."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(here, "fastload", "__init__.py")):
        return here
    return os.path.dirname(os.path.dirname(fastload.__file__))


ROUNDS = int(os.environ.get("FASTLOAD_BENCH_S3_ROUNDS", "2"))


def run_all(
    scenarios: tuple[str, ...] = ("big", "small", "list_nested", "list_flat"), rounds: int = ROUNDS
) -> dict:
    """{scenario: {client: {seconds, cpu_seconds, bytes, runs}}}: each client's best of
    ``rounds`` (``runs``: every run's (seconds, cpu_seconds)), the clients taking turns so
    that load from elsewhere hits all alike."""
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
            "small_size": SMALL_SIZE,
            "list_nested_prefix": "s3://bench/list/nested/",
            "list_flat_prefix": "s3://bench/list/flat/",
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
                    runs = (best["runs"] if best else []) + got.pop("all")
                    if best is None or got["seconds"] < best["seconds"]:
                        best = results[scenario][client] = got
                    best["runs"] = runs
    return results


def seconds(result: dict, stat: str) -> float:
    """The best or the median wall seconds of a client's runs."""
    if stat == "min":
        return float(result["seconds"])
    return float(statistics.median(t for t, _ in result["runs"]))


class _S3Bench:
    timeout = 1800
    repeat = 1
    number = 1
    rounds = 1
    scenario = ""

    def _fig(self, results, client):
        return results[self.scenario][client]


class S3BigObject(_S3Bench):
    """(a) one large object: MB/s and ratios (goals: >= 0.9x curl, >= 1.5x s3dlio)."""

    scenario = "big"
    params = [list(RUNS["big"]), STATS]
    param_names = ["client", "stat"]

    def setup_cache(self):  # one per class: asv shares a cache between classes by function
        return run_all(("big",))

    def track_mb_per_s(self, results, client, stat):
        r = self._fig(results, client)
        return r["bytes"] / seconds(r, stat) / MB

    track_mb_per_s.unit = "MB/s"

    def track_cpu_s_per_gib(self, results, client, stat):
        r = self._fig(results, client)
        cpu = [c for _, c in r["runs"]]
        pick = min(cpu) if stat == "min" else statistics.median(cpu)
        return pick / (r["bytes"] / GIB)

    track_cpu_s_per_gib.unit = "CPU s/GiB"

    def track_fastload_speed_ratio(self, results, client, stat):
        """fastload MB/s divided by this client's, same run."""
        return seconds(self._fig(results, client), stat) / seconds(
            self._fig(results, "fastload"), stat
        )

    track_fastload_speed_ratio.unit = "ratio"


class S3SmallObjects(_S3Bench):
    """(b) many 128 KiB objects: objects/s and ratios (goal: >= 1.5x s3dlio get_many)."""

    scenario = "small"
    params = [list(RUNS["small"]), STATS]
    param_names = ["client", "stat"]

    def setup_cache(self):
        return run_all(("small",))

    def track_objects_per_s(self, results, client, stat):
        return SMALL_COUNT / seconds(self._fig(results, client), stat)

    track_objects_per_s.unit = "objects/s"

    track_cpu_s_per_gib = S3BigObject.track_cpu_s_per_gib
    track_fastload_speed_ratio = S3BigObject.track_fastload_speed_ratio


class S3Listing(_S3Bench):
    """(c) 10,000 keys with sizes: keys/s and fastload's speed over s3dlio.list (goal >= 1)."""

    params = [["list_nested", "list_flat"], ["fastload", "fastload_one_chain", "s3dlio"], STATS]
    param_names = ["layout", "client", "stat"]

    def setup_cache(self):
        return run_all(("list_nested", "list_flat"))

    def track_keys_per_s(self, results, layout, client, stat):
        r = results[layout][client]
        return r["bytes"] / seconds(r, stat)

    track_keys_per_s.unit = "keys/s"

    def track_fastload_speed_ratio(self, results, layout, client, stat):
        return seconds(results[layout][client], stat) / seconds(results[layout]["fastload"], stat)

    track_fastload_speed_ratio.unit = "ratio"


if __name__ == "__main__":
    picked = tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else tuple(RUNS)
    res = run_all(picked)
    for scenario, by_client in res.items():
        fl = by_client["fastload"]
        for client, r in by_client.items():
            unit = "keys/s" if scenario.startswith("list") else "MB/s"
            scale = 1 if scenario.startswith("list") else MB
            cpu = [c for _, c in r["runs"]]
            print(
                f"{scenario:11s} {client:17s} "
                f"{r['bytes'] / seconds(r, 'min') / scale:10.1f} / "
                f"{r['bytes'] / seconds(r, 'median') / scale:10.1f} {unit} (best/median)  "
                f"CPU {min(cpu):.2f}/{statistics.median(cpu):.2f} s  "
                f"speed fastload/{client} = {seconds(r, 'min') / seconds(fl, 'min'):.2f}x / "
                f"{seconds(r, 'median') / seconds(fl, 'median'):.2f}x"
            )
