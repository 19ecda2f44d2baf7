"""Why do ranged reads of one S3 object slow down with more requests in flight?

Reads ``--reads`` random ``--record``-byte ranges of one object (one engine call, so no
Python per request) against ``rclone serve s3`` on loopback, at several in-flight depths,
and prints per depth: requests/s, new connections, client CPU and server CPU per request.
The same for as many separate small objects read whole, for comparison.

    python scripts/probe_s3_ranges.py                      # rclone with its defaults
    python scripts/probe_s3_ranges.py --rclone-args "--buffer-size 0"

Not an asv benchmark: a diagnosis tool (its findings are in the README, *Loading from S3*).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "asv_bench"))
from benchmarks.common import S3_KEY, S3_SECRET, die_with_parent  # noqa: E402


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_bytes_of(pid: int) -> int:
    """Bytes process ``pid`` read through read() system calls (page cache hits included)."""
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def start(root: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [shutil.which("rclone") or "rclone", "serve", "s3", "--addr", f"127.0.0.1:{port}"]
    cmd += ["--auth-key", f"{S3_KEY},{S3_SECRET}", "--etag-hash", "", "--config", "/dev/null"]
    proc = subprocess.Popen(
        [*cmd, *extra, root],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("rclone did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--object-mb", type=float, default=24.0)
    ap.add_argument("--record", type=int, default=12 << 10)
    ap.add_argument("--reads", type=int, default=1000)
    ap.add_argument("--depths", default="1,4,32")
    ap.add_argument("--rclone-args", default="")
    args = ap.parse_args()

    import fastload

    root = tempfile.mkdtemp(prefix="probe-s3-")
    os.makedirs(os.path.join(root, "b", "small"))
    size = int(args.object_mb * (1 << 20))
    rng = np.random.default_rng(0)
    with open(os.path.join(root, "b", "big.bin"), "wb") as f:
        f.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    for i in range(args.reads):
        with open(os.path.join(root, "b", "small", f"o{i:05d}"), "wb") as f:
            f.write(rng.integers(0, 256, args.record, dtype=np.uint8).tobytes())
    proc, endpoint = start(root, shlex.split(args.rclone_args))
    try:
        eng = fastload.RangeEngine(
            endpoint_url=endpoint,
            access_key_id=S3_KEY,
            secret_access_key=S3_SECRET,
            region="us-east-1",
        )
        smalls = [f"s3://b/small/o{i:05d}" for i in range(args.reads)]
        eng.list("s3://b/small/")  # sizes known: no HEAD per object
        n_rec = size // args.record
        starts = rng.choice(n_rec, args.reads, replace=False) * args.record
        big_table = np.stack(
            [
                np.zeros(args.reads, np.int64),
                starts,
                np.full(args.reads, args.record),
                np.arange(args.reads) * args.record,
            ],
            axis=1,
        ).astype(np.int64)
        small_table = np.stack(
            [
                np.arange(args.reads),
                np.zeros(args.reads, np.int64),
                np.full(args.reads, args.record),
                np.arange(args.reads) * args.record,
            ],
            axis=1,
        ).astype(np.int64)
        out = np.empty(args.reads * args.record, np.uint8)
        backend = eng.backend("s3")
        print(
            f"rclone {args.rclone_args or '(defaults)'}; {args.reads} reads of {args.record} B; "
            f"one object of {size / 2**20:.0f} MiB vs separate objects"
        )
        print(
            f"{'what':>8} {'depth':>5} {'req/s':>8} {'conns':>5} {'cli ms/req':>10} {'srv ms/req':>10} {'srv KiB read/req':>16}"
        )
        for what, sources, table in (
            ("ranges", ["s3://b/big.bin"], big_table),
            ("objects", smalls, small_table),
        ):
            for depth in (int(d) for d in args.depths.split(",")):
                settings = fastload.storage.read_settings.ReadSettings(
                    part_size=1 << 30, max_inflight_parts=depth
                )
                eng.read_into(sources, table[:depth], out, settings=settings)  # connections up
                s0, c0 = backend.stats(), (cpu_of(proc.pid), time.process_time())
                r0 = read_bytes_of(proc.pid)
                t = time.perf_counter()
                eng.read_into(sources, table, out, settings=settings)
                dt = time.perf_counter() - t
                s1, c1 = backend.stats(), (cpu_of(proc.pid), time.process_time())
                reqs = s1["requests"] - s0["requests"]
                print(
                    f"{what:>8} {depth:>5} {reqs / dt:8.0f} {s1['connects'] - s0['connects']:5d} "
                    f"{(c1[1] - c0[1]) / reqs * 1e3:10.3f} {(c1[0] - c0[0]) / reqs * 1e3:10.3f} "
                    f"{(read_bytes_of(proc.pid) - r0) / reqs / 1024:16.0f}"
                )
        eng.close()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
