"""Ctrl-C reaches Python within about a second from every blocking call of the engine:
network reads against a server that never answers (the native loop polls for signals on
the main thread), HEAD and LIST (libcurl's progress callback), and big local reads (cut
into slices on the main thread: fastload.storage.interruptible). Each case runs in a
subprocess that sends itself SIGINT; without the fix it would hang until the timeout."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastload.storage.interruptible import interruptible_slices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import os, signal, sys, threading, time
import numpy as np
from fastload.storage.engine import RangeEngine

kind, target = sys.argv[1], sys.argv[2]
sent = []

def interrupt_soon():
    time.sleep(0.5)
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)

eng = RangeEngine(low_speed_time=0, request_timeout=600)
calls = {
    "read_ranges": lambda: eng.read_ranges(target, [(0, 100)]),
    "read_into": lambda: eng.read_into(
        [target], np.array([[0, 0, 100, 0]]), bytearray(100)
    ),
    "read": lambda: eng.read(target),
    "size": lambda: eng.size(target),
    "list": lambda: RangeEngine(
        endpoint_url=target, anonymous=True, request_timeout=600
    ).list("s3://bucket/prefix/"),
}
threading.Thread(target=interrupt_soon, daemon=True).start()
try:
    calls[kind]()
except KeyboardInterrupt:
    print(f"interrupted {time.monotonic() - sent[0]:.2f} s after SIGINT", flush=True)
    sys.exit(0)
print("returned", flush=True)
sys.exit(1)
"""

LOCAL = r"""
import os, signal, sys
import numpy as np
from fastload._native import file_reader
from fastload.storage import interruptible
from fastload.storage.engine import RangeEngine

path = sys.argv[1]
interruptible.SLICE_BYTES = 1 << 20
real = file_reader.read_file_ranges
calls = []

def read_then_interrupt(*args):
    calls.append(1)
    n = real(*args)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while the first slice is read
    return n

file_reader.read_file_ranges = read_then_interrupt
out = bytearray(b"\xee" * os.path.getsize(path))
try:
    RangeEngine(part_size=1 << 20).read_into([path], np.array([[0, 0, len(out), 0]]), out)
except KeyboardInterrupt:
    untouched = out[-(1 << 20):] == b"\xee" * (1 << 20)
    print(f"interrupted after {len(calls)} slice(s), rest untouched: {untouched}", flush=True)
    sys.exit(0 if untouched and len(calls) == 1 else 1)
print("returned", flush=True)
sys.exit(1)
"""


def _run(script, *args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"Ctrl-C was not delivered: {args} still blocked after 60 s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.http
@pytest.mark.parametrize("kind", ["read_ranges", "read_into", "read", "size"])
def test_ctrl_c_stops_a_call_against_a_stalled_http_server(kind, silent_server):
    out = _run(SCRIPT, kind, f"http://127.0.0.1:{silent_server}/x")
    assert out.startswith("interrupted"), out


@pytest.mark.s3
def test_ctrl_c_stops_an_s3_listing_against_a_stalled_server(silent_server):
    out = _run(SCRIPT, "list", f"http://127.0.0.1:{silent_server}")
    assert out.startswith("interrupted"), out


def test_ctrl_c_stops_a_big_local_read_between_slices(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(8 << 20))
    out = _run(LOCAL, str(path))
    assert "rest untouched: True" in out, out


def test_slices_cover_the_table_exactly():
    table = np.array([[0, 0, 250, 0], [1, 10, 30, 250], [0, 1000, 5, 280]], dtype=np.int64)
    slices = list(interruptible_slices(table, 100))
    assert [int(s[:, 2].sum()) for s in slices] == [100, 100, 85]
    rows = np.concatenate(slices)
    # every byte of every row, once, at its place
    want = {(int(s), int(o) + i, int(d) + i) for s, o, n, d in table for i in range(int(n))}
    got = {(int(s), int(o) + i, int(d) + i) for s, o, n, d in rows for i in range(int(n))}
    assert got == want and int(rows[:, 2].sum()) == 285
    assert len(list(interruptible_slices(table, 1000))) == 1  # small: one call
