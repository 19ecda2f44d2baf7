"""close() of an engine whose http(s) reads run on other threads: the connections those
reads use are freed when they end, not under them (that crashed the process, or failed
the reads with 'Invalid multi handle'); an fsspec filesystem's engine closes so at exit."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.servers import payload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLOSE_UNDER_READS = r"""
import sys, threading, time
from fastload.storage.engine import RangeEngine
urls = sys.argv[1:]
errors, stop = [], threading.Event()
for round in range(5):
    # few connections at once: the test server's listen backlog is small
    eng = RangeEngine(part_size=16384, max_inflight_parts=4)
    def spin():
        try:
            while not stop.is_set():
                for u in urls:
                    eng.read(u)
        except BaseException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    threads = [threading.Thread(target=spin) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    eng.close()  # while the threads read
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    eng.close()
    stop.clear()
print("errors:", errors)
"""

EXIT_WHILE_READING = r"""
import sys, tempfile, threading, time
import fastload
from tests.support.servers import _serve, payload
# the server in this process too: at exit its threads stop, so reads are in flight then
server = _serve(tempfile.mkdtemp())
urls = [server.put(f"o{i}.bin", payload(200_000, i)) for i in range(4)]
fs = fastload.filesystem(skip_instance_cache=True)
def spin():
    while True:
        fs.cat_ranges(urls, [0] * len(urls), [3000] * len(urls))
threading.Thread(target=spin, daemon=True).start()
time.sleep(0.3)
print("exit")  # the filesystem's finalizer closes its engine while the thread reads
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


def _urls(http_server) -> list[str]:
    return [http_server.put(f"o{i}.bin", payload(200_000, i)) for i in range(4)]


def test_close_while_other_threads_read_over_http(http_server):
    done = _run(CLOSE_UNDER_READS, *_urls(http_server))
    assert done.returncode == 0, done.stderr  # -11: freed under a read
    assert done.stdout.strip() == "errors: []", done.stdout


def test_exit_while_a_thread_reads_through_the_filesystem():
    for _ in range(8):  # freed under the read: a segfault about every other exit
        done = _run(EXIT_WHILE_READING)
        assert done.returncode == 0 and done.stdout.strip() == "exit", done.stderr
        assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
