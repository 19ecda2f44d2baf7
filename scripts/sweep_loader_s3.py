#!/usr/bin/env python3
"""The knob sweep behind the network in-flight default (not an asv benchmark).

fastload's DataLoader alone over ``rclone serve s3`` on 127.0.0.1 (the data and the
loaders of asv_bench/benchmarks/bench_loader_s3.py), across reader_mode x part_size x
max_inflight_parts; optionally behind a delay proxy that stands in for a far object
store (FASTLOAD_BENCH_S3_DELAY_MS, milliseconds added to every request):

    python scripts/sweep_loader_s3.py
    FASTLOAD_BENCH_S3_DELAY_MS=10 python scripts/sweep_loader_s3.py

Prints one line per setting: samples/s and client CPU ms per batch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "asv_bench")]  # this checkout's fastload and benchmarks

from benchmarks.bench_loader_s3 import SCENARIOS, fastload_loader, samples_per_s, write_data  # noqa: E402
from benchmarks.common import die_with_parent, rclone_server  # noqa: E402


async def _pipe(reader, writer, delay: float) -> None:
    """Copy reader -> writer, each chunk ``delay`` seconds late (order kept)."""
    import asyncio

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def send() -> None:
        while (item := await queue.get()) is not None:
            wait = item[0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(item[1])
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait(None)
        await sender
    except OSError:
        sender.cancel()
    finally:
        writer.close()


def serve_delay_proxy(listen_port: int, upstream_port: int, delay_ms: float) -> None:
    """A TCP proxy on 127.0.0.1 that delays every request by ``delay_ms`` (responses flow
    at once): a far object store's first-byte latency, without touching the host's network."""
    import asyncio

    async def handle(client_r, client_w) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(_pipe(client_r, up_w, delay_ms / 1000), _pipe(up_r, client_w, 0.0))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=512)
        await server.serve_forever()

    asyncio.run(main())


@contextlib.contextmanager
def delayed(endpoint: str, delay_ms: float) -> Iterator[str]:
    """``endpoint`` behind a delay proxy (its own process); yields the proxy's endpoint."""
    import socket
    import subprocess

    if not delay_ms:
        yield endpoint
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    upstream = int(endpoint.rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--delay-proxy",
            str(port),
            str(upstream),
            str(delay_ms),
        ],
        preexec_fn=die_with_parent,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def sweep(
    rounds: int = 3,
    delay_ms: float = 0.0,
    depths: tuple[int, ...] = (4, 8, 16, 32, 64),
    configs: tuple[tuple[str, int], ...] = (
        ("sequential", 8 << 20),
        ("range", 64 << 10),
        ("range", 8 << 20),
    ),
) -> list[tuple[str, str, int, int, float, float]]:
    """fastload alone over reader_mode x part_size x max_inflight_parts: rows (scenario,
    mode, part, depth, samples/s, client CPU ms per batch), best of ``rounds`` after a
    warm-up, the depths of one (scenario, mode, part) taking turns so load drifts hit all
    alike; ``delay_ms`` puts a delay proxy in front of the server."""
    import resource

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    rows = []
    with rclone_server(write_data()) as direct, delayed(direct, delay_ms) as endpoint:
        for scenario in SCENARIOS:
            for mode, part in configs:
                loaders = {
                    d: fastload_loader(
                        endpoint, scenario, reader_mode=mode, part_size=part, max_inflight_parts=d
                    )
                    for d in depths
                }
                best = dict.fromkeys(depths, (0.0, 0.0))
                try:
                    for dl in loaders.values():
                        samples_per_s(dl, 2)
                    for _ in range(rounds):
                        for d, dl in loaders.items():
                            c0 = cpu_s()
                            rate = samples_per_s(dl)
                            cpu_ms = (cpu_s() - c0) * 1000 / len(dl)
                            best[d] = max(best[d], (rate, cpu_ms))
                finally:
                    for dl in loaders.values():
                        dl.close()
                for d, (rate, cpu_ms) in best.items():
                    rows.append((scenario, mode, part, d, rate, cpu_ms))
                    print(
                        f"{scenario:8s} {mode:10s} part={part >> 10:5d}KiB inflight={d:3d} "
                        f"{rate:9.0f} samples/s {cpu_ms:6.1f} CPU ms/batch",
                        flush=True,
                    )
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--delay-proxy"]:
        serve_delay_proxy(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        sweep(delay_ms=float(os.environ.get("FASTLOAD_BENCH_S3_DELAY_MS", "0")))
