"""Helpers shared by the benchmark suites: timing, data files, ratios, the S3 server.

Every suite measures its baselines in the same process and run as fastload,
so ratios are comparable on a shared, noisy machine.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

MB = 1e6
S3_KEY, S3_SECRET = "benchkey", "benchsecret"  # the auth key of the benchmarks' rclone server
S3_REGION = "us-east-1"


def best_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def interleaved_best(fns: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
    """Best time of each function, runs interleaved so drift hits all alike."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    repeat: int = 5,
    shuffle: bool = False,
    collect: bool = False,
) -> dict[str, list[float]]:
    """Every timing of each function (after one warm-up call each), runs interleaved so
    drift hits all alike: report the best and the median. ``shuffle``: each round runs the
    functions in another (seeded) order, so none always runs first or after the same one
    (what one run leaves behind, freed memory or a busy server, then hits all alike).
    ``collect``: a full garbage collection before each timed call, outside the timing, so
    no call pays for freeing what the one before it left in reference cycles (an fsspec
    file that pyarrow never closed, with its buffers and connections)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = random.Random(0)
    for _ in range(repeat):
        names = list(fns)
        if shuffle:
            order.shuffle(names)
        for name in names:
            fn = fns[name]
            if collect:
                gc.collect()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def min_and_median(
    fns: dict[str, Callable[[], object]], repeat: int = 5
) -> dict[str, dict[str, float]]:
    """``{"min": s, "median": s}`` of each function, runs interleaved in shuffled order,
    garbage collected between calls (see :func:`interleaved_times`; each call's result is
    dropped before the next call)."""
    return {
        k: {"min": min(v), "median": statistics.median(v)}
        for k, v in interleaved_times(fns, repeat, shuffle=True, collect=True).items()
    }


def data_dir() -> str:
    """Where benchmark data lives between runs (FASTLOAD_BENCH_DIR or the temp dir)."""
    d = os.environ.get("FASTLOAD_BENCH_DIR") or os.path.join(
        tempfile.gettempdir(), "fastload-bench"
    )
    os.makedirs(d, exist_ok=True)
    return d


def random_file(name: str, size: int, chunk: int = 64 << 20) -> str:
    """A file of ``size`` pseudo-random bytes, written once and reused."""
    path = os.path.join(data_dir(), name)
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    block = np.random.default_rng(0).integers(0, 256, min(chunk, size), dtype=np.uint8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n].tobytes())
            left -= n
    os.replace(tmp, path)
    return path


def warm_page_cache(path: str) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(64 << 20):
            pass


def die_with_parent() -> None:
    """``preexec_fn`` for benchmark servers: the kernel ends the child when the process
    that started it dies (asv kills a benchmark that runs past its timeout)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int, what: str) -> None:
    """Return once ``proc`` listens on 127.0.0.1:``port``; kill it and raise if it never does."""
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def start_rclone(root: str, extra: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """``rclone serve s3`` over ``root`` (buckets are its folders) on a free 127.0.0.1 port,
    with the auth key (S3_KEY, S3_SECRET) and ``extra`` flags; returns the process and its
    endpoint URL."""
    port = free_port()
    exe = shutil.which("rclone") or "rclone"
    proc = subprocess.Popen(
        [
            exe,
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{S3_KEY},{S3_SECRET}",
            "--etag-hash",
            "",
            "--config",
            "/dev/null",
            # e.g. "--buffer-size 0": rclone without its read-ahead (see scripts/probe_s3_ranges.py)
            *shlex.split(os.environ.get("FASTLOAD_BENCH_RCLONE_ARGS", "")),
            *extra,
            root,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    wait_for_port(proc, port, "rclone serve s3")
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate a benchmark server; kill it if it does not exit within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # never leave a server behind
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def rclone_server(root: str) -> Iterator[str]:
    """``rclone serve s3`` over ``root``; yields the endpoint and always stops the server."""
    proc, endpoint = start_rclone(root)
    try:
        yield endpoint
    finally:
        stop_server(proc)


@contextlib.contextmanager
def rclone_s3(root: str) -> Iterator[dict[str, str]]:
    """``rclone serve s3`` over ``root``; yields fastload's engine options for it
    (``endpoint_url``, the auth key, ``region``) and always stops the server."""
    with rclone_server(root) as endpoint:
        yield {
            "endpoint_url": endpoint,
            "access_key_id": S3_KEY,
            "secret_access_key": S3_SECRET,
            "region": S3_REGION,
        }
