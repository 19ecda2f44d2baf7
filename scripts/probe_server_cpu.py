"""What does the S3 server's CPU cost per MB of block GETs, against the client's?

Reads bench_shards' JPEG tar shards whole in blocks of 1, 4 and 16 MiB (one
``RangeEngine.read_into`` of all the blocks) from ``rclone serve s3`` on loopback, with
rclone's defaults and with ``--buffer-size 0`` (no read-ahead per GET), taking turns, and
prints the server's and this process's CPU milliseconds per MB read (min and median).
On the 2-core benchmark box the server's CPU is taken from the decode, which bounds how
close an S3 epoch can come to a local one.

    python scripts/probe_server_cpu.py [--rounds 4]

Not an asv benchmark: a diagnosis tool (its findings are in the README, *Shards on object
storage*).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "asv_bench", "benchmarks"))

import bench_shards  # noqa: E402
import common  # noqa: E402
import numpy as np  # noqa: E402


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def block_table(sizes: list[int], block: int) -> np.ndarray:
    """Rows (source, offset, length, destination) reading every shard whole in ``block``s."""
    rows = [
        (i, off, min(block, n - off)) for i, n in enumerate(sizes) for off in range(0, n, block)
    ]
    lengths = np.array([r[2] for r in rows], dtype=np.int64)
    dst = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.column_stack([np.array([r[:2] for r in rows], dtype=np.int64), lengths, dst])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    root = bench_shards.write_data()
    folder = bench_shards.write_image_shards(root)
    prefix = os.path.basename(folder)
    names = sorted(os.listdir(folder))
    sizes = [os.path.getsize(os.path.join(folder, n)) for n in names]
    uris = [f"s3://shards/{prefix}/{n}" for n in names]
    out = np.empty(sum(sizes), np.uint8)
    servers = {}
    try:
        for flags in ("", "--buffer-size 0"):
            proc, endpoint = common.start_rclone(root, flags.split())
            servers[flags or "defaults"] = (proc, bench_shards._engine(endpoint))
        got: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for r in range(args.rounds + 1):  # round 0 warms connections and the page cache
            for name, (proc, eng) in servers.items():
                for block in (1 << 20, 4 << 20, 16 << 20):
                    table = block_table(sizes, block)
                    s0, c0, t0 = process_cpu(proc.pid), own_cpu(), time.perf_counter()
                    eng.read_into(uris, table, out)
                    t = time.perf_counter() - t0
                    mb = out.nbytes / 1e6
                    if r:
                        got.setdefault((name, block), []).append(
                            (
                                (process_cpu(proc.pid) - s0) * 1e3 / mb,
                                (own_cpu() - c0) * 1e3 / mb,
                                mb / t,
                            )
                        )
    finally:
        for proc, eng in servers.values():
            eng.close()
            common.stop_server(proc)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for (name, block), v in got.items():
        server = [a for a, _, _ in v]
        client = [b for _, b, _ in v]
        print(
            f"rclone {name:16s} blocks of {block >> 20:2d} MiB: server {min(server):.2f} / "
            f"{statistics.median(server):.2f} ms per MB, client {min(client):.2f} / "
            f"{statistics.median(client):.2f} (min / median), best {max(c for *_, c in v):.0f} MB/s"
        )


if __name__ == "__main__":
    main()
