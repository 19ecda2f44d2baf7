"""fastload against a server that ignores Range: ``python -m http.server`` (127.0.0.1).

Such a server answers every ranged GET with the whole object. fastload finds it on the
first answer and reads each object with one streamed GET (before: one whole-object GET
per part, 74 for a 600 MB file). Baseline: one plain GET with pycurl into memory, what
``curl`` does. Both run in this process, interleaved, on the same file.

Quick run without asv: ``python asv_bench/benchmarks/bench_range_ignored.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

try:
    from . import common
except ImportError:  # run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common  # type: ignore[no-redef]

SIZE_MIB = int(os.environ.get("FASTLOAD_BENCH_NORANGE_MIB", "256"))
ROUNDS = int(os.environ.get("FASTLOAD_BENCH_NORANGE_ROUNDS", "3"))


def _serve(folder: str) -> tuple[subprocess.Popen, int]:
    port = common.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=common.die_with_parent,
    )
    common.wait_for_port(proc, port, "python -m http.server")
    return proc, port


def _curl_get(url: str, out: memoryview) -> int:
    import pycurl

    got = 0

    def write(chunk: bytes) -> None:
        nonlocal got
        out[got : got + len(chunk)] = chunk
        got += len(chunk)

    c = pycurl.Curl()
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.WRITEFUNCTION, write)
    c.perform()
    c.close()
    return got


def run_all(rounds: int = ROUNDS) -> dict[str, dict[str, float]]:
    """{client: {min_s, median_s, mb_s}} for one whole-object read each round; the
    fastload figures are warm (the server is known to ignore Range: one GET per read)."""
    import warnings

    from fastload._native.buffer import AlignedBuffer
    from fastload.storage.engine import RangeEngine

    folder = os.path.join(common.data_dir(), "norange")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, "big.bin")
    src = common.random_file(f"norange-{SIZE_MIB}.bin", SIZE_MIB << 20)
    if not (os.path.exists(target) and os.path.samefile(src, target)):
        if os.path.exists(target):
            os.remove(target)
        os.link(src, target)
    size = os.path.getsize(target)
    proc, port = _serve(folder)
    url = f"http://127.0.0.1:{port}/big.bin"
    buf = AlignedBuffer(size)
    times: dict[str, list[float]] = {"fastload_first": [], "fastload": [], "curl": []}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the RangeIgnoredWarning of the first read
            for _ in range(rounds):
                with RangeEngine() as eng:  # default part size and depth, a fresh engine
                    t = time.perf_counter()
                    eng.read(url, buf)  # finds out on its first answer
                    times["fastload_first"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    eng.read(url, buf)
                    times["fastload"].append(time.perf_counter() - t)
                    requests = eng.backend("http").stats()["requests"]
                t = time.perf_counter()
                assert _curl_get(url, memoryview(buf)) == size
                times["curl"].append(time.perf_counter() - t)
    finally:
        common.stop_server(proc)
    out = {
        k: {"min_s": min(v), "median_s": statistics.median(v), "mb_s": size / min(v) / common.MB}
        for k, v in times.items()
    }
    out["fastload"]["requests_two_reads"] = requests
    return out


class RangeIgnoringServer:
    """MB/s ratios against one curl GET of the same file (higher is better, 1.0 = curl)."""

    timeout = 600
    unit = "ratio"

    def setup_cache(self) -> dict:
        return run_all()

    def track_fastload_vs_curl(self, results: dict) -> float:
        return results["curl"]["min_s"] / results["fastload"]["min_s"]

    def track_first_read_vs_curl(self, results: dict) -> float:
        return results["curl"]["min_s"] / results["fastload_first"]["min_s"]

    def track_requests_for_two_reads(self, results: dict) -> float:
        return float(results["fastload"]["requests_two_reads"])


if __name__ == "__main__":
    for name, r in run_all().items():
        print(name, {k: round(v, 3) for k, v in r.items()})
